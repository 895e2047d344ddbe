"""Offers figures (issue 18): N nodes on 127.0.0.1, one processor deployed on the first. By default the nodes run
in this process (each on its own event loop thread, all sharing one interpreter lock with the client, so the
figures add up every node's work); `--processes` runs each node as its own `saas-cli service` process, as a network
of real nodes would (they still share this machine's cores).

Prints: the time of one network-wide `find_offers` call (every RTI node asked at once, offers verified and ranked)
for N nodes, median and p90 over the runs; and a job's submission latency directly vs with `submit_anywhere`
(offers from the nodes, then the submission with the chosen offer), medians — the difference is what choosing
adds.

    .venv/bin/python bench/bench_offers.py [--nodes 10] [--runs 20] [--processes]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "rti"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_network import start_node, stop_nodes  # noqa: E402
from bench_node import wait_rest  # noqa: E402
from rti_support import adapter_repo  # noqa: E402

from saas.config import NodeConfig  # noqa: E402
from saas.core.keystore import Keystore  # noqa: E402
from saas.dor.proxy import DORProxy  # noqa: E402
from saas.node import Node  # noqa: E402
from saas.nodedb.proxy import NodeDBProxy  # noqa: E402
from saas.rti.choosing import find_offers, submit_anywhere  # noqa: E402
from saas.rti.proxy import RTIProxy  # noqa: E402
from tests.conftest import RunningNode, free_port  # noqa: E402

PASSWORD = "bench password"


@dataclass
class BenchNode:
    address: tuple[str, int]
    keystore: Keystore
    peers: Callable[[], int]  # how many other nodes it is connected to


def start(work: Path, name: str, boot: str | None, node_type: str) -> RunningNode:
    keystore = Keystore.create(work / "keystores", name, f"{name}@example.org", PASSWORD)
    config = NodeConfig(
        datastore=work / name,
        keystore=keystore.path,
        password=PASSWORD,
        rest_address=("127.0.0.1", free_port()),
        p2p_address=("127.0.0.1", free_port()),
        boot_node=boot,
        node_type=node_type,  # type: ignore[arg-type]
        log_level="WARNING",
        allow_local_git=True,
    )
    node = RunningNode(Node(config, keystore))
    node.start()
    return node


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@contextmanager
def in_process(work: Path, n: int) -> Iterator[list[BenchNode]]:
    first = start(work, "node0", None, "full")
    boot = "{}:{}".format(*first.node.config.p2p_address)
    running = [first] + [start(work, f"node{i}", boot, "execution") for i in range(1, n)]
    try:
        yield [BenchNode(r.address, r.keystore, lambda r=r: len(r.node.p2p.peers())) for r in running]
    finally:
        for r in reversed(running):
            r.stop()


@contextmanager
def processes(work: Path, n: int) -> Iterator[list[BenchNode]]:
    started: list[subprocess.Popen[bytes]] = []
    nodes: list[BenchNode] = []
    boot = None
    try:
        for i in range(n):
            keystore = Keystore.create(work / "keystores", f"node{i}", f"node{i}@example.org", PASSWORD)
            kind = "full" if i == 0 else "execution"
            process, rest, p2p = start_node(keystore, work / f"ds{i}", boot, kind, "--allow-local-git")
            started.append(process)
            if boot is None:
                wait_rest(rest)
                boot = f"127.0.0.1:{p2p}"

            def peers(port: int = rest, iid: str = keystore.iid) -> int:
                with NodeDBProxy(("127.0.0.1", port)) as db:
                    return sum(1 for info in db.get_network() if info.online and info.identity.id != iid)

            nodes.append(BenchNode(("127.0.0.1", rest), keystore, peers))
        for node in nodes:
            wait_rest(node.address[1])
        yield nodes
    finally:
        stop_nodes(started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--processes", action="store_true", help="each node in its own process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with (processes if args.processes else in_process)(work, args.nodes) as nodes:
            print(f"{args.nodes} nodes, {'one process each' if args.processes else 'in this process'}")
            run(work, nodes, args.runs)


def run(work: Path, nodes: list[BenchNode], runs: int) -> None:
    user = Keystore.create(work / "keystores", "user", "user@example.org", PASSWORD)
    for n in nodes:
        with NodeDBProxy(n.address) as db:
            db.update_identity(user.identity)
    deadline = time.monotonic() + 60
    while any(n.peers() < len(nodes) - 1 for n in nodes):
        if time.monotonic() > deadline:
            raise SystemExit("the network did not form")
        time.sleep(0.2)
    repo, commit = adapter_repo(work / "repo", "abc")
    first = nodes[0]
    with DORProxy(first.address, user) as dor:
        proc_id = dor.add_gpp_data_object(str(repo), commit, "abc", "default", user.identity).obj_id
    with RTIProxy(first.address, first.keystore) as rti:
        rti.deploy(proc_id, first.keystore)
        rti.wait_deployed(proc_id, timeout=120, authority=first.keystore)
    task: dict[str, Any] = {
        "proc_id": proc_id,
        "user_iid": user.iid,
        "input": [{"name": "a", "type": "value", "value": {"v": 1}}, {"name": "b", "type": "value", "value": {"v": 2}}],
        "output": [{"name": "c", "owner_iid": user.iid}],
    }
    request = {"proc_id": proc_id}
    find_offers(first.address, request, user)  # warm up connections and caches
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        found = find_offers(first.address, request, user, deadline=5.0)
        times.append(time.perf_counter() - t)
        assert len(found) == len(nodes) and not found.unanswered, found.unanswered
    print(f"offers from {len(nodes)} nodes: median {statistics.median(times) * 1000:.0f} ms, "
          f"p90 {percentile(times, 0.9) * 1000:.0f} ms")  # fmt: skip
    # Each submission is timed on an idle network: the previous job has ended (its process start and output storage
    # would otherwise load the node that makes the only offer that can run it).
    direct, anywhere = [], []
    with RTIProxy(first.address, user) as rti:
        for _ in range(runs):
            t = time.perf_counter()
            job = rti.submit_task(task, user)
            direct.append(time.perf_counter() - t)
            rti.wait_for_job(job.id, user, timeout=60)
            t = time.perf_counter()
            _, _, job = submit_anywhere(first.address, task, user)
            anywhere.append(time.perf_counter() - t)
            rti.wait_for_job(job.id, user, timeout=60)
    d, a = statistics.median(direct), statistics.median(anywhere)
    print(f"submit: direct {d * 1000:.0f} ms, --anywhere {a * 1000:.0f} ms (adds {(a - d) * 1000:.0f} ms), medians")


if __name__ == "__main__":
    main()
