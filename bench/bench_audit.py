"""Audit log figures (issue 19 item 3).

Prints: how long `AuditLog.record` holds the event loop (per call), entries committed per second (chained, signed,
stored), the bytes an entry takes on disk, a query of one owner's entries, and entries verified per second (the
node's log file, offline). Runs the `AuditLog` on its own event loop; no node.

    .venv/bin/python bench/bench_audit.py [--entries N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from saas.audit.chain import verify_file
from saas.audit.log import AuditLog
from saas.core.keystore import Keystore


async def run(entries: int, work: Path) -> None:
    keystore = Keystore.create(work / "keystore", "bench", "bench@example.org", "bench password")
    log = AuditLog(work / "audit.sqlite", keystore, max_entries=10 * entries, max_age_days=None)
    log.max_queued = 10 * entries
    await log.start()
    owners = [f"{i:064d}" for i in range(10)]
    start = time.perf_counter()
    for i in range(entries):
        log.record("object.read", actor=owners[i % 10], owner=owners[(i + 1) % 10], obj_id=f"{i:064x}", size=i)
    recorded = time.perf_counter() - start
    await log.flush()
    committed = time.perf_counter() - start
    print(f"record() on the event loop          {recorded / entries * 1e6:8.1f} us per entry")
    print(f"entries committed (chained, signed)  {entries / committed:8.0f} per second")
    size = sum(p.stat().st_size for p in work.glob("audit.sqlite*"))
    print(f"disk per entry (with indexes)        {size / entries:8.0f} bytes")
    start = time.perf_counter()
    found = await log.query(owners[3], limit=1000)
    print(f"query one owner's first 1000 entries {(time.perf_counter() - start) * 1000:8.1f} ms ({len(found)} found)")
    await log.stop()
    start = time.perf_counter()
    report = verify_file(work / "audit.sqlite", keystore.iid)
    assert report.ok, report.problems
    print(f"entries verified offline             {report.entries / (time.perf_counter() - start):8.0f} per second")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000)
    entries = parser.parse_args().entries
    with tempfile.TemporaryDirectory(prefix="saas-bench-") as work:
        asyncio.run(run(entries, Path(work)))


if __name__ == "__main__":
    main()
