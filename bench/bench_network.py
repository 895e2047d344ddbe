"""Network figures (issue "The network"): real `saas-cli service` processes on 127.0.0.1.

Prints: time for N node processes (one boot node, the others started concurrently) until every node lists all N
online — measured from the moment the last process serves REST — and each process's RSS; identity propagation
time (published on the last node until every node has it); P2P request round trip (ping) on an open connection.

    .venv/bin/python bench/bench_network.py [--nodes 20] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from bench_node import free_port, wait_rest

from saas.core.keystore import Keystore

CLI = str(Path(sys.executable).parent / "saas-cli")
PASSWORD = "bench password"


def start_node(
    keystore: Keystore, datastore: Path, boot: str | None, node_type: str = "storage", *extra: str
) -> tuple[subprocess.Popen[bytes], int, int]:
    """A `saas-cli service` process (its output discarded): (process, REST port, P2P port)."""
    rest, p2p = free_port(), free_port()
    args = [CLI, "--keystore", str(keystore.path.parent), "--keystore-id", keystore.iid, "--password", PASSWORD,
            "--non-interactive", "service", "--use-defaults", "--datastore", str(datastore),
            "--rest-address", f"127.0.0.1:{rest}", "--p2p-address", f"127.0.0.1:{p2p}",
            "--boot-node", boot or f"127.0.0.1:{p2p}", "--type", node_type, *extra]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAAS_")}
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return process, rest, p2p


def counts(port: int) -> tuple[int, int]:
    """(nodes known, nodes online) as node `port` lists them."""
    nodes = httpx.get(f"http://127.0.0.1:{port}/api/v1/db/network", timeout=5, trust_env=False).json()
    return len(nodes), sum(1 for n in nodes if n["online"])


def ping_round_trip(runs: int = 200) -> tuple[float, float]:
    """Median and p90 ms of a P2P ping between two in-process hosts on one open connection."""
    from saas.p2p.host import P2PHost, tcp_multiaddr

    async def main() -> list[float]:
        with tempfile.TemporaryDirectory() as d:
            a = P2PHost(Path(d) / "a.key", ("127.0.0.1", 0), ("127.0.0.1", 0))
            b = P2PHost(Path(d) / "b.key", ("127.0.0.1", 0), ("127.0.0.1", 0))

            async def pong(peer: str, message: dict[str, object]) -> dict[str, object]:
                return {"type": "pong"}

            a.set_handler("/bench/ping/1.0.0", pong)
            await a.start()
            await b.start()
            await b.connect(a.peer_id, [tcp_multiaddr("127.0.0.1", a.port)])
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                await b.request(a.peer_id, "/bench/ping/1.0.0", {"type": "ping"})
                times.append((time.perf_counter() - t) * 1000)
            await b.stop()
            await a.stop()
            return times

    times = sorted(asyncio.run(main()))
    return statistics.median(times), times[int(len(times) * 0.9)]


def run_network(n: int, keystores: list[Keystore], work: Path) -> None:
    processes: list[subprocess.Popen[bytes]] = []
    try:
        boot_process, boot_rest, boot_p2p = start_node(keystores[0], work / "ds0", None)
        processes.append(boot_process)
        wait_rest(boot_rest)
        boot = f"127.0.0.1:{boot_p2p}"
        started = [start_node(keystores[i], work / f"ds{i}", boot) for i in range(1, n)]
        processes += [p for p, _, _ in started]
        rest_ports = [boot_rest] + [r for _, r, _ in started]
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(wait_rest, rest_ports[1:]))
        last_started = time.perf_counter()
        deadline = last_started + 60
        known_at = None
        while True:
            with ThreadPoolExecutor(n) as pool:
                listed = list(pool.map(counts, rest_ports))
            if known_at is None and all(k == n for k, _ in listed):
                known_at = time.perf_counter() - last_started
            if all(o == n for _, o in listed):
                break
            if time.perf_counter() > deadline:
                print(f"  not converged after 60 s: (known, online) counts {listed}")
                return
            # Polled 4x a second: polling all nodes back to back (every 20 ms) took enough CPU on a 2-core machine
            # to slow the network it measures by several seconds.
            time.sleep(0.25)
        converged = time.perf_counter() - last_started
        print(f"  {n} nodes: every node knows all {n} {known_at:.2f} s after the last one serves REST")
        print(f"  {n} nodes: every node lists all {n} online (connected: full mesh) {converged:.2f} s after")
        rss = [psutil.Process(p.pid).memory_info().rss / 2**20 for p in processes]
        print(f"  RSS per node: median {statistics.median(rss):.0f} MiB, max {max(rss):.0f} MiB")

        newcomer = Keystore.create(work / "extra", "newcomer", "new@example.org", PASSWORD)
        t = time.perf_counter()
        httpx.post(
            f"http://127.0.0.1:{rest_ports[-1]}/api/v1/db/identity", json=newcomer.identity.model_dump(), timeout=10
        ).raise_for_status()

        def has(port: int) -> bool:
            return httpx.get(f"http://127.0.0.1:{port}/api/v1/db/identity/{newcomer.iid}", timeout=5).status_code == 200

        while True:
            with ThreadPoolExecutor(n) as pool:
                if all(pool.map(has, rest_ports)):
                    break
            if time.perf_counter() - t > 30:
                print("  identity did not reach every node in 30 s")
                break
            time.sleep(0.01)
        print(f"  identity propagation to all {n} nodes: {time.perf_counter() - t:.2f} s")
    finally:
        stop_nodes(processes)


def stop_nodes(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every node process, then wait for each (killed after 15 s)."""
    for p in processes:
        p.send_signal(signal.SIGTERM)
    for p in processes:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        print(f"creating {args.nodes} keystores ...", flush=True)
        with ThreadPoolExecutor(8) as pool:
            keystores = list(
                pool.map(lambda i: Keystore.create(work / "ks", f"node{i}", f"n{i}@example.org", PASSWORD),
                         range(args.nodes))
            )  # fmt: skip
        for run in range(args.runs):
            print(f"run {run + 1}:")
            run_network(args.nodes, keystores, work / f"run{run}")
    median, p90 = ping_round_trip()
    print(f"P2P request round trip on an open connection: median {median:.2f} ms, p90 {p90:.2f} ms")


if __name__ == "__main__":
    main()
