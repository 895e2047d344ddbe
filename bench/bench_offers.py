"""Offers figures (issue 18): in-process nodes on 127.0.0.1 (each on its own event loop thread), one processor
deployed on the first.

Prints: the time of one network-wide `find_offers` call (every RTI node asked at once, offers verified and ranked)
for N nodes, median and p90 over the runs; and a job's submission latency directly vs with `submit_anywhere`
(offers from all nodes, then the submission with the chosen offer), medians — the difference is what choosing
adds.

    .venv/bin/python bench/bench_offers.py [--nodes 10] [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "rti"))

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        first = start(work, "node0", None, "full")
        boot = "{}:{}".format(*first.node.config.p2p_address)
        nodes = [first] + [start(work, f"node{i}", boot, "execution") for i in range(1, args.nodes)]
        try:
            run(work, nodes, args.runs)
        finally:
            for n in reversed(nodes):
                n.stop()


def run(work: Path, nodes: list[RunningNode], runs: int) -> None:
    user = Keystore.create(work / "keystores", "user", "user@example.org", PASSWORD)
    for n in nodes:
        with NodeDBProxy(n.address) as db:
            db.update_identity(user.identity)
    deadline = time.monotonic() + 60
    while any(len(n.node.p2p.peers()) < len(nodes) - 1 for n in nodes):
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
    direct, anywhere = [], []
    with RTIProxy(first.address, user) as rti:
        for _ in range(runs):
            t = time.perf_counter()
            rti.submit_task(task, user)
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            submit_anywhere(first.address, task, user)
            anywhere.append(time.perf_counter() - t)
    d, a = statistics.median(direct), statistics.median(anywhere)
    print(f"submit: direct {d * 1000:.0f} ms, --anywhere {a * 1000:.0f} ms (adds {(a - d) * 1000:.0f} ms), medians")


if __name__ == "__main__":
    main()
