"""Node process figures (issues "Node" and "DOR"): prints numbers with their goals, no pass/fail.

(a) start-up: wall time from spawning `saas-cli service` to the first 200 of `GET /api/v1/db/node` (median);
(b) DOR add and download throughput through `DORProxy` against a node process, per file size (MB/s, median), with
    the node process's peak RSS growth over its idle RSS during each transfer (sampled every ~20 ms);
(c) 1 KiB add latency: median and p95 of sequential adds.

    .venv/bin/python bench/bench_node.py [--sizes 200M,1G] [--runs N] [--small N]

Files are created in a temp dir (random data written in chunks) and removed at the end. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas_cli.commands.service import parse_size

CLI = str(Path(sys.executable).parent / "saas-cli")
PASSWORD = "bench password"
MB = 1_000_000
MiB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_rest(port: int, timeout: float = 60) -> None:
    """Until the node on REST port `port` of 127.0.0.1 answers (exits the benchmark after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/db/node", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"node on REST port {port} did not start")


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY") and not k.startswith("SAAS_")}
    clean["NO_PROXY"] = "*"
    return clean


class NodeRun:
    """One `saas-cli service` process on free ports."""

    def __init__(self, keystore: Keystore, datastore: Path, log: Path, extra: tuple[str, ...] = ()):
        self.port = free_port()
        command = [
            CLI,
            "--keystore",
            str(keystore.path.parent),
            "--keystore-id",
            keystore.iid,
            "--password",
            PASSWORD,
            "--non-interactive",
            "--log-level",
            "ERROR",
            "service",
            "--use-defaults",
            "--type",
            "full",
            "--datastore",
            str(datastore),
            "--rest-address",
            f"127.0.0.1:{self.port}",
            "--p2p-address",
            f"127.0.0.1:{free_port()}",
            "--allow-local-git",  # the benchmarks' adapters are in local repositories
            *extra,
        ]
        self.log = log
        with open(log, "ab") as out:
            self.began = time.perf_counter()
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env(), start_new_session=True
            )

    def wait_ready(self, timeout: float = 30) -> float:
        """Seconds from spawning to the first 200 of GET /db/node."""
        url = f"http://127.0.0.1:{self.port}/api/v1/db/node"
        with httpx.Client(trust_env=False, timeout=1) as client:
            while True:
                try:
                    if client.get(url).status_code == 200:
                        return time.perf_counter() - self.began
                except httpx.TransportError:
                    pass
                if self.proc.poll() is not None or time.perf_counter() - self.began > timeout:
                    self.stop()
                    raise RuntimeError(f"node did not start; see {self.log}:\n{self.log.read_text()}")
                time.sleep(0.005)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class PeakRSS:
    """Samples a process's RSS every `interval` s in a thread; `peak` is the largest sample."""

    def __init__(self, pid: int, interval: float = 0.02):
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def write_random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(4 * MiB, left)
            f.write(os.urandom(n))
            left -= n
    return path


def observed(process: psutil.Process, action: Callable[..., Any], *args: Any) -> tuple[float, float, Any]:
    """Run `action(*args)`: (seconds, the node's peak RSS growth over its RSS before, in MB, result).

    Dirty pages of earlier steps (the test file, the last download) are flushed first, so their write-back does
    not compete with the measured transfer."""
    os.sync()
    idle = process.memory_info().rss
    with PeakRSS(process.pid) as rss:
        start = time.perf_counter()
        result = action(*args)
        seconds = time.perf_counter() - start
    return seconds, (rss.peak - idle) / MB, result


def rates(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} MB/s ({min(values):.0f}-{max(values):.0f})"


def row(label: str, figure: str, goal: str) -> None:
    print(f"  {label:<42} {figure:>26}   goal {goal}", flush=True)


def size_label(size: int) -> str:
    return f"{size / (1024**3):g} GiB" if size >= 1024**3 else f"{size / MiB:g} MiB"


def bench_start(keystore: Keystore, work: Path, runs: int) -> None:
    times = []
    for i in range(runs):
        node = NodeRun(keystore, work / f"start-{i}", work / "start.log")
        try:
            times.append(node.wait_ready())
        finally:
            node.stop()
    row(
        "(a) start -> REST answers",
        f"{statistics.median(times):.3f} s (min {min(times):.3f})",
        "<= 1.5 s",
    )


def bench_transfers(keystore: Keystore, work: Path, sizes: list[int], runs: int, small: int) -> None:
    node = NodeRun(keystore, work / "datastore", work / "node.log")
    try:
        node.wait_ready()
        process = psutil.Process(node.proc.pid)
        with DORProxy(("127.0.0.1", node.port), keystore, timeout=600) as dor:
            identity = keystore.identity
            warm = write_random_file(work / "warm.bin", MiB)  # first requests: imports, connection, caches
            for _ in range(3):
                dor.delete_data_object(dor.add_data_object(warm, identity, False, False, "B", "bin").obj_id, keystore)
            for size in sizes:
                source = write_random_file(work / f"data-{size}.bin", size)
                target = work / f"download-{size}.bin"
                add_rates, get_rates, add_growth, get_growth = [], [], [], []
                for run in range(runs + 1):  # run 0 warms up: its rates are not counted, its RSS growth is
                    seconds, growth, obj = observed(
                        process, dor.add_data_object, source, identity, False, False, "Bench", "bin"
                    )
                    if run:
                        add_rates.append(size / seconds / MB)
                    add_growth.append(growth)
                    seconds, growth, _ = observed(process, dor.get_content, obj.obj_id, keystore, target)
                    if run:
                        get_rates.append(size / seconds / MB)
                    get_growth.append(growth)
                    target.unlink()
                    dor.delete_data_object(obj.obj_id, keystore)
                source.unlink()
                label = size_label(size)
                row(f"(b) add {label} (DORProxy)", rates(add_rates), ">= 250 MB/s")
                row(f"    node RSS growth during add {label}", f"{max(add_growth):.1f} MB (max)", "<= 30 MB")
                row(f"(b) download {label} (DORProxy)", rates(get_rates), ">= 300 MB/s")
                row(f"    node RSS growth during download {label}", f"{max(get_growth):.1f} MB (max)", "<= 30 MB")

            kib = work / "one-kib.bin"
            latencies = []
            for _ in range(small):
                kib.write_bytes(os.urandom(1024))
                start = time.perf_counter()
                dor.add_data_object(kib, identity, False, False, "Small", "bin")
                latencies.append(time.perf_counter() - start)
            latencies.sort()
            p95 = latencies[min(len(latencies) - 1, round(0.95 * len(latencies)) - 1)]
            row(
                f"(c) 1 KiB add latency ({small} sequential)",
                f"median {statistics.median(latencies) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms",
                "- (no goal set)",
            )
    finally:
        node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200M,1G", help="comma-separated file sizes (default 200M,1G)")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--small", type=int, default=200, help="number of 1 KiB adds (default 200)")
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    work = Path(tempfile.mkdtemp(prefix="saas-bench-node-"))
    try:
        keystore = Keystore.create(work / "keystore", "bench node", "bench@example.org", PASSWORD)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"bench_node: {os.cpu_count()} CPUs, load {load}, Python {sys.version.split()[0]}, runs={args.runs}")
        bench_start(keystore, work, args.runs)
        bench_transfers(keystore, work, sizes, args.runs, args.small)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
