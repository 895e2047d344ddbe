"""Fault figures (issue 15): real `saas-cli service` processes on 127.0.0.1, one of them frozen with SIGSTOP.

Prints, for N storage nodes (default 5) with one data object each: network search latency (SDK `search_network`
through the first node, default deadline) with every node answering, then with one node SIGSTOPped while it is still
shown online (goal: ≤ deadline + 0.2 s) and once it is shown offline; the time from SIGSTOP until every other node
shows it offline (goal ≤ 20 s with the default liveness settings), and from SIGCONT until every node shows it online.

    .venv/bin/python bench/bench_faults.py [--nodes 5] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from bench_network import PASSWORD, start_node
from bench_node import wait_rest

from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy, search_network
from saas.nodedb.fanout import DEFAULT_DEADLINE
from saas.nodedb.proxy import NodeDBProxy


def online(port: int) -> dict[str, bool]:
    nodes = httpx.get(f"http://127.0.0.1:{port}/api/v1/db/network", timeout=5, trust_env=False).json()
    return {n["identity"]["id"]: bool(n["online"]) for n in nodes}


def search_ms(port: int) -> tuple[float, int, int]:
    """One network search through node `port`: (ms, objects found, nodes that did not answer)."""
    t = time.perf_counter()
    found = search_network(("127.0.0.1", port), data_type="BenchFault")
    return (time.perf_counter() - t) * 1000, len(found), len(found.unanswered)


def summary(times: list[float]) -> str:
    times = sorted(times)
    return f"median {statistics.median(times):.0f} ms, max {times[-1]:.0f} ms (n={len(times)})"


def run(n: int, keystores: list[Keystore], user: Keystore, work: Path) -> None:
    processes: list[subprocess.Popen[bytes]] = []
    try:
        first, rest0, p2p0 = start_node(keystores[0], work / "ds0", None)
        processes.append(first)
        wait_rest(rest0)
        others = [start_node(keystores[i], work / f"ds{i}", f"127.0.0.1:{p2p0}") for i in range(1, n)]
        processes += [p for p, _, _ in others]
        ports = [rest0] + [r for _, r, _ in others]
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(wait_rest, ports[1:]))
        everyone = {k.iid for k in keystores[:n]}
        while not all(online(p) == dict.fromkeys(everyone, True) for p in ports):
            time.sleep(0.25)
        item = work / "item.json"
        for i, port in enumerate(ports):
            NodeDBProxy(("127.0.0.1", port)).update_identity(user.identity)
            item.write_text(f'{{"v": {i}}}')
            with DORProxy(("127.0.0.1", port), user) as dor:
                dor.add_data_object(item, user.identity, False, False, "BenchFault", "json")

        healthy = [search_ms(rest0) for _ in range(10)]
        assert all(found == n for _, found, _ in healthy), healthy
        print(f"  search, all {n} nodes answering: {summary([t for t, _, _ in healthy])}")

        victim, victim_port = others[-1][0], ports[-1]
        victim_iid = keystores[n - 1].iid
        watchers = ports[:-1]
        os.kill(victim.pid, signal.SIGSTOP)
        stopped = time.perf_counter()
        stalled: list[float] = []
        after: list[float] = []
        offline_at = None
        while time.perf_counter() - stopped < 30:
            ms, _, missing = search_ms(rest0)
            (stalled if missing else after).append(ms)
            with ThreadPoolExecutor(len(watchers)) as pool:
                views = list(pool.map(online, watchers))
            if offline_at is None and not any(v[victim_iid] for v in views):
                offline_at = time.perf_counter() - stopped
            if offline_at is not None and len(after) >= 5:
                break
        goal = DEFAULT_DEADLINE * 1000 + 200
        print(f"  search, 1 of {n} SIGSTOPped and shown online: {summary(stalled)} (goal <= {goal:.0f} ms)")
        if after:
            print(f"  search, 1 of {n} SIGSTOPped and shown offline: {summary(after)}")
        shown = "not within 30 s" if offline_at is None else f"{offline_at:.1f} s"
        print(f"  SIGSTOP until every other node shows it offline: {shown} (goal <= 20 s)")
        os.kill(victim.pid, signal.SIGCONT)
        continued = time.perf_counter()
        while not all(online(p).get(victim_iid) for p in ports[:-1]) or not online(victim_port)[victim_iid]:
            if time.perf_counter() - continued > 60:
                print("  not online again within 60 s")
                break
            time.sleep(0.1)
        else:
            print(f"  SIGCONT until every node shows it online: {time.perf_counter() - continued:.1f} s")
    finally:
        for p in processes:
            with_signal(p, signal.SIGCONT)
            with_signal(p, signal.SIGTERM)
        for p in processes:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def with_signal(process: subprocess.Popen[bytes], sig: int) -> None:
    if process.poll() is None:
        process.send_signal(sig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        keystores = [Keystore.create(work / "ks", f"node{i}", f"n{i}@example.org", PASSWORD) for i in range(args.nodes)]
        user = Keystore.create(work / "ks", "user", "user@example.org", PASSWORD)
        for r in range(args.runs):
            print(f"run {r + 1}: {args.nodes} storage nodes, deadline {DEFAULT_DEADLINE:g} s", flush=True)
            run(args.nodes, keystores, user, work / f"run{r}")


if __name__ == "__main__":
    main()
