"""Bulk transfers (issue 21): how fast content moves through a node, each figure beside a reference measured in the
same run. Prints figures, no pass/fail.

- reference: the same file served by a bare uvicorn + starlette app (`FileResponse`) and read by `curl` into a file;
- proxy download / upload (`DORProxy` in this process against a node process), with the node's RSS growth;
- CLI download / upload (`saas-cli dor download|add` processes, stderr on a terminal so the progress bar draws);
- CLI vs proxy: the CLI's time over the proxy's for the same transfer in the same round (goal: at most +10 %);
- cross-node fetch: a node in this process fetches a restricted object from the node process with a delegation
  (`DORService.fetch_remote`, as for a job input held by another node).

Every round measures the reference and each transfer once, interleaved, so a busy machine slows all alike; figures
are medians in MB/s (10^6 bytes) and the median of the per-round ratios to the reference. Context: SHA-256 on one
core and writing to this disk (with fsync).

    .venv/bin/python bench/bench_transfer.py [--sizes 200M,1G] [--runs 3] [--no-cli] [--no-fetch]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import pty
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from bench_node import CLI, PASSWORD, NodeRun, PeakRSS, env, free_port, size_label, write_random_file

from saas.config import NodeConfig
from saas.core.delegation import Delegation
from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.node import Node
from saas.nodedb.proxy import NodeDBProxy
from saas_cli.commands.service import parse_size

MB = 1_000_000
MiB = 1024 * 1024

REFERENCE_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route
path = sys.argv[2]
app = Starlette(routes=[Route("/file", lambda request: FileResponse(path))])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", http="httptools")
"""


class Reference:
    """The bare server stack serving one file, read by curl."""

    def __init__(self, path: Path, out: Path):
        self.port = free_port()
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-c", REFERENCE_APP, str(self.port), str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env(),
        )
        deadline = time.monotonic() + 30
        while subprocess.run(self._curl(), capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("the reference server did not start")
            time.sleep(0.05)
        self.out.unlink()

    def _curl(self) -> list[str]:
        return ["curl", "-sf", "--noproxy", "*", "-o", str(self.out), f"http://127.0.0.1:{self.port}/file"]

    def download(self) -> None:
        subprocess.run(self._curl(), check=True)
        self.out.unlink()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def timed(action: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    os.sync()  # earlier steps' dirty pages are written first, so their write-back does not compete
    start = time.perf_counter()
    result = action(*args, **kwargs)
    return time.perf_counter() - start, result


def cli(keystore: Keystore, port: int, *args: str) -> str:
    """Run `saas-cli ... dor --address <node> <args>` with stderr on a terminal (the progress bar draws); stdout."""
    master, slave = pty.openpty()
    drained: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            drained.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    command = [CLI, "--keystore", str(keystore.path.parent), "--keystore-id", keystore.iid, "--password", PASSWORD]
    command += ["--non-interactive", "dor", "--address", f"127.0.0.1:{port}", *args]
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env())
    finally:
        os.close(slave)
        reader.join(5)
        os.close(master)
    if done.returncode != 0:
        raise SystemExit(f"saas-cli {' '.join(args)} failed: {b''.join(drained).decode(errors='replace')[-500:]}")
    return done.stdout.decode()


class Figures:
    def __init__(self) -> None:
        self.rates: dict[str, list[float]] = {}
        self.ratios: dict[str, list[float]] = {}
        self.growth: dict[str, list[float]] = {}
        self.fixed: list[float] = []  # seconds of a CLI command that moves no content
        self.versus: dict[str, list[float]] = {}  # CLI seconds / proxy seconds of the same transfer, per round
        self.added: dict[str, list[float]] = {}  # CLI seconds - proxy seconds of the same transfer, per round

    def add(self, label: str, size: int, seconds: float, reference: float | None) -> None:
        rate = size / seconds / MB
        self.rates.setdefault(label, []).append(rate)
        if reference is not None:
            self.ratios.setdefault(label, []).append(rate / (size / reference / MB))

    def compare(self, label: str, cli_seconds: float, proxy_seconds: float) -> None:
        self.versus.setdefault(label, []).append(cli_seconds / proxy_seconds)
        self.added.setdefault(label, []).append(cli_seconds - proxy_seconds)

    def print(self) -> None:
        for label, values in self.rates.items():
            ratio = self.ratios.get(label)
            ratio_text = f"x{statistics.median(ratio):.2f}" if ratio else ""
            figure = f"{statistics.median(values):5.0f} MB/s ({min(values):.0f}-{max(values):.0f}) {ratio_text:>6}"
            goal = next((g for kind, g in GOALS.items() if label.startswith(kind)), "-")
            print(f"  {label:<34} {figure:>32}   goal {goal}", flush=True)
            if label in self.growth:
                print(f"  {'  node RSS growth':<34} {max(self.growth[label]):25.1f} MB (max)   goal <= 30 MB")
        if self.fixed:
            figure = f"{statistics.median(self.fixed):.2f} s"
            print(f"  {'CLI start-up (saas-cli dor usage)':<34} {figure:>32}   goal -")
        for label, values in self.versus.items():  # the CLI's time over the proxy's, as what it adds
            added = (statistics.median(values) - 1) * 100
            seconds = statistics.median(self.added[label])
            figure = f"{added:+.0f} % time, {seconds:+.2f} s (x{1 / statistics.median(values):.2f} rate)"
            print(f"  {label:<34} {figure:>32}   goal <= +10 %")


GOALS = {
    "reference": "- (x1.00)",
    "download": ">= 600 MB/s",
    "upload": ">= 450 MB/s",
    "CLI": "within 10 % of the proxy",
    "fetch": ">= 450 MB/s",
}


def context(work: Path) -> None:
    data = os.urandom(64 * MiB)
    start = time.perf_counter()
    hashlib.sha256(data).hexdigest()
    sha = len(data) / (time.perf_counter() - start) / MB
    path = work / "disk.bin"
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(8):
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    disk = 8 * len(data) / (time.perf_counter() - start) / MB
    path.unlink()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"bench_transfer: {os.cpu_count()} CPUs, load {load}, Python {sys.version.split()[0]}")
    print(f"  context: SHA-256 {sha:.0f} MB/s on one core, disk write (512 MiB + fsync) {disk:.0f} MB/s")


class Setup:
    """What every round uses: the node process, the uploading user, and the fetching node (None: no fetch)."""

    def __init__(self, work: Path, node: NodeRun, user: Keystore, use_cli: bool):
        self.work = work
        self.node = node
        self.process = psutil.Process(node.proc.pid)
        self.user = user
        self.use_cli = use_cli
        self.loop: asyncio.AbstractEventLoop | None = None
        self.fetcher: Node | None = None
        self.custodian: Any = None


def one_round(setup: Setup, dor: DORProxy, reference: Reference, source: Path, figures: Figures, counted: bool) -> None:
    size = source.stat().st_size
    label = size_label(size)
    target = setup.work / "download.bin"
    user = setup.user
    ref, _ = timed(reference.download)

    def record(name: str, seconds: float) -> None:
        if counted:
            figures.add(name.format(label), size, seconds, ref)

    def watched(name: str, action: Callable[..., Any], *args: Any) -> tuple[float, Any]:
        idle = setup.process.memory_info().rss
        with PeakRSS(setup.process.pid) as rss:
            seconds, result = timed(action, *args)
        figures.growth.setdefault(name.format(label), []).append((rss.peak - idle) / MB)
        record(name, seconds)
        return seconds, result

    if counted:
        figures.add(f"reference {label}", size, ref, None)
    proxy_up, obj = watched("upload {} (proxy)", dor.add_data_object, source, user.identity, True, False, "B", "bin")
    proxy_down, _ = watched("download {} (proxy)", dor.get_content, obj.obj_id, user, target)
    target.unlink()
    if setup.loop is not None and setup.fetcher is not None and setup.fetcher.dor is not None:
        delegation = Delegation.create(
            user, setup.fetcher.iid, obj.obj_id, servers=[setup.custodian.identity.id], scopes=["content"]
        )
        fetching = setup.fetcher.dor.fetch_remote(
            obj.obj_id, setup.custodian, target, delegation, expected_c_hash=obj.c_hash
        )
        seconds, _ = timed(setup.loop.run_until_complete, fetching)
        record("fetch {} (cross-node)", seconds)
        target.unlink()
    dor.delete_data_object(obj.obj_id, user)
    # The CLI's transfers come after the proxy's object is gone, as the proxy's come after the previous round's:
    # each upload finds the node's memory in the same state (on machines that hand memory over lazily, a new page
    # of the page cache costs more than one freed just before).
    if setup.use_cli:
        port = setup.node.port
        add = ("add", "--data-type", "C", "--data-format", "bin", "--assume-creator", str(source))
        fixed, _ = timed(cli, user, port, "usage")  # start-up, keystore unlock (scrypt), one signed request
        if counted:
            figures.fixed.append(fixed)
        took, out = timed(cli, user, port, *add)
        record("CLI upload {}", took)
        record("CLI upload {} less start-up", took - fixed)
        if counted:
            figures.compare(f"CLI upload {label} vs proxy", took, proxy_up)
        found = re.search(r"^Object ID: ([0-9a-f]{64})$", out, re.MULTILINE)  # what a person reads first
        if found is None:
            raise SystemExit(f"saas-cli dor add printed no object ID: {out[-500:]!r}")
        folder = setup.work / "cli-download"
        took, _ = timed(cli, user, port, "download", found.group(1), "--destination", str(folder))
        record("CLI download {}", took)
        record("CLI download {} less start-up", took - fixed)
        if counted:
            figures.compare(f"CLI download {label} vs proxy", took, proxy_down)
        shutil.rmtree(folder)
        dor.delete_data_object(found.group(1), user)


def print_marginal(added: dict[int, dict[str, float]]) -> None:
    """What the CLI adds per byte over the proxy: the change of its added seconds between the smallest and the
    largest size (0: the CLI costs only a fixed start-up; the same per byte as the proxy)."""
    if len(added) < 2:
        return
    small, large = min(added), max(added)
    for kind in ("upload", "download"):
        a, b = added[small].get(kind), added[large].get(kind)
        if a is None or b is None:
            continue
        per_gib = (b - a) / ((large - small) / 2**30)
        label = f"CLI {kind} added per GiB"
        figure = f"{per_gib:+.2f} s (fixed {a:+.2f} s)"
        print(f"  {label:<34} {figure:>32}   goal - (0: the proxy's per-byte cost)")


def bench_size(setup: Setup, size: int, runs: int) -> dict[str, float]:
    source = write_random_file(setup.work / f"data-{size}.bin", size)
    reference = Reference(source, setup.work / "reference.out")
    figures = Figures()
    try:
        with DORProxy(("127.0.0.1", setup.node.port), setup.user, timeout=600) as dor:
            for run in range(runs + 1):  # round 0 warms up (its rates are not counted, its RSS growth is)
                one_round(setup, dor, reference, source, figures, run > 0)
        figures.print()
        return {
            kind: statistics.median(values)
            for label, values in figures.added.items()
            for kind in ("upload", "download")
            if label.startswith(f"CLI {kind}")
        }
    finally:
        reference.stop()
        source.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200M,1G", help="comma-separated sizes (default 200M,1G)")
    parser.add_argument("--runs", type=int, default=3, help="counted rounds per size (default 3)")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI figures")
    parser.add_argument("--no-fetch", action="store_true", help="skip the cross-node fetch")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    work = Path(tempfile.mkdtemp(prefix="saas-bench-transfer-"))
    node: NodeRun | None = None
    setup: Setup | None = None
    try:
        context(work)
        owner = Keystore.create(work / "keystore", "bench node", "node@example.org", PASSWORD)
        user = Keystore.create(work / "keystore", "bench user", "user@example.org", PASSWORD)
        node = NodeRun(owner, work / "datastore", work / "node.log", ("--storage-quota", "unlimited"))
        node.wait_ready()
        setup = Setup(work, node, user, not args.no_cli)
        with NodeDBProxy(("127.0.0.1", node.port)) as db:
            db.update_identity(user.identity)
            setup.custodian = db.get_node()
            if not args.no_fetch:
                keys = Keystore.create(work / "keystore", "bench fetcher", "f@example.org", PASSWORD)
                db.update_identity(keys.identity)
                config = NodeConfig(
                    datastore=work / "fetcher",
                    keystore=keys.path,
                    password=PASSWORD,
                    rest_address=("127.0.0.1", free_port()),
                    p2p_address=("127.0.0.1", free_port()),
                    node_type="storage",
                    log_level="WARNING",
                )
                setup.loop = asyncio.new_event_loop()
                setup.fetcher = Node(config, keys)
                setup.loop.run_until_complete(setup.fetcher.start())
        added = {size: bench_size(setup, size, args.runs) for size in sizes}
        print_marginal(added)
    finally:
        if setup is not None and setup.loop is not None:
            if setup.fetcher is not None:
                setup.loop.run_until_complete(setup.fetcher.stop())
            setup.loop.close()
        if node is not None:
            node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
