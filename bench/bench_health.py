"""Health, diagnostics and metrics figures (issue 19): prints medians, no pass/fail.

(a) the job board reading behind them (`saas.ops.jobstats.board_stats`: jobs by state, the most recent final jobs'
    timeline ends) on boards of --sizes jobs with ~1 KB of messages each, median of --repeat readings;
(b) a `saas-cli service` node on 127.0.0.1 whose board holds the largest size: latency of GET /db/node/health (the
    reading cached: the figure a busy network sees), GET /db/node/health with a fresh reading, GET
    /db/node/diagnostics and GET /metrics, medians of --requests.

    .venv/bin/python bench/bench_health.py [--sizes 1000,10000,100000] [--repeat 5] [--requests 50]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_node import PASSWORD, NodeRun

from saas.core.keystore import Keystore
from saas.ops.jobstats import CACHE_S, board_stats
from saas.rti import board

STATES = ["successful"] * 8 + ["failed"] * 2
PROCESSORS = [f"{i:064x}" for i in range(4)]


def seed(path: Path, jobs: int) -> None:
    """A job board of `jobs` final jobs, as the RTI writes them (timeline, messages, errors)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(board.SCHEMA)
    start = int(time.time() * 1000) - jobs * 1000
    rows = []
    for i in range(jobs):
        state = random.choice(STATES)
        t = start + i * 1000
        timeline = [
            {"state": s, "time": t + k * 100, "reason": r}
            for k, (s, r) in enumerate(
                [
                    ("pending", "submitted"),
                    ("initialising", "preparing inputs"),
                    ("running", "started"),
                    ("postprocessing", "storing outputs"),
                    (state, "done" if state == "successful" else "exit code 3"),
                ]
            )
        ]
        status = {
            "progress": 100,
            "messages": [{"severity": "info", "message": "x" * 200, "time": t}] * 5,
            "errors": [] if state == "successful" else ["exit code 3"],
            "timeline": timeline,
            "announced": [],
            "outputs": {},
            "stored_elsewhere": {},
            "consumes": {},
            "pid": None,
            "remote": None,
        }
        rows.append((f"job{i:010d}", random.choice(PROCESSORS), "u" * 64, state, "{}", json.dumps(status)))
    conn.executemany("INSERT INTO jobs (id, proc_id, user_iid, state, job, status) VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()


def ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-health-"))
    try:
        print("(a) reading the job board (jobs by state + the 500 most recent final jobs)")
        for size in sizes:
            path = tmp / f"board-{size}.sqlite"
            seed(path, size)
            conn = sqlite3.connect(path)
            conn.row_factory = sqlite3.Row
            times = []
            for _ in range(args.repeat):
                began = time.perf_counter()
                board_stats(conn)
                times.append(time.perf_counter() - began)
            conn.close()
            print(f"    {size:>7} jobs: {ms(times)}")
        size = sizes[-1]
        keystore = Keystore.create(tmp / "keystores", "bench", "bench@example.org", PASSWORD)
        datastore = tmp / "datastore"
        seed(datastore / "rti" / "jobs.sqlite", size)
        node = NodeRun(keystore, datastore, tmp / "node.log")
        try:
            node.wait_ready(60)
            base = f"http://127.0.0.1:{node.port}"
            print(f"(b) a node whose board holds {size} jobs (medians of {args.requests} requests)")
            with httpx.Client(base_url=base, trust_env=False, timeout=30) as client:
                for label, path in (
                    ("GET /db/node/health (cached)", "/api/v1/db/node/health"),
                    ("GET /db/node/diagnostics", "/api/v1/db/node/diagnostics"),
                    ("GET /metrics", "/metrics"),
                ):
                    times = []
                    for _ in range(args.requests):
                        began = time.perf_counter()
                        assert client.get(path).status_code == 200
                        times.append(time.perf_counter() - began)
                    print(f"    {label}: {ms(times)}")
                times = []
                for _ in range(min(args.requests, 5)):
                    time.sleep(CACHE_S + 0.1)
                    began = time.perf_counter()
                    assert client.get("/api/v1/db/node/health").status_code == 200
                    times.append(time.perf_counter() - began)
                print(f"    GET /db/node/health (fresh reading): {ms(times)}")
        finally:
            node.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
