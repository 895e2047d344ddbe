"""Agent figures (issue "Agents"): prints medians with their goals, no pass/fail. Uses RTIProxy / DORProxy against a
`saas-cli service` node process on 127.0.0.1, with the warm a + b agent of adapters/examples/abc-agent (2 instances)
beside the same job on the a + b processor of adapters/examples/abc, both from one local git repository.

(a) submit → successful latency, sequential (median and p95 of --latency jobs; agent goal ≤ 50 ms);
(b) throughput of --jobs jobs submitted by --threads client threads, median of --repeat runs (agent goal ≥ 200
    jobs/s with 2 instances on 2 cores); the processor runs --jobs / 4 jobs.
Each is measured two ways: `submit_job` then `wait_for_job` (two requests), and `run_job` (one request: the node
answers the submission once the job is final).

The job is the seed's a + b: a by reference (a DOR object), b by value, c stored in the DOR.

    .venv/bin/python bench/bench_agents.py [--latency 50] [--jobs 400] [--threads 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bench_rti  # noqa: F401  (puts the real Python first on the node's PATH, as bench_rti does)
from bench_node import PASSWORD, NodeRun
from bench_rti import AbcJobs, percentile
from rti_support import adapter_repo

from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.rti.proxy import RTIProxy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per case (the median is printed)")
    parser.add_argument(
        "--unsafe-no-sandbox", action="store_true", help="run the adapters without the sandbox (for comparison)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-agents-"))
    node = None
    try:
        keystore = Keystore.create(work / "keystore", "bench", "bench@example.org", PASSWORD)
        extra = ("--unsafe-no-sandbox",) if args.unsafe_no_sandbox else ()
        node = NodeRun(keystore, work / "datastore", work / "node.log", extra)
        node.wait_ready()
        repo, commit = adapter_repo(work / "repo", "abc", "abc-agent")
        source = str(repo)
        address = ("127.0.0.1", node.port)
        print(f"node: pid {node.proc.pid}, {os.cpu_count()} CPUs, max jobs = CPU count")
        procs: dict[str, str] = {}
        with DORProxy(address, keystore) as dor, RTIProxy(address, keystore) as rti:
            for name in ("abc", "abc-agent"):
                procs[name] = dor.add_gpp_data_object(source, commit, name, "default", keystore.identity).obj_id
                began = time.perf_counter()
                rti.deploy(procs[name], keystore)
                assert rti.wait_deployed(procs[name], timeout=60, interval=0.005).state == "ready"
                print(f"deploy {name}: {time.perf_counter() - began:.3f} s")
            a_file = work / "a.json"
            a_file.write_text(json.dumps({"v": 1}))
            a_id = dor.add_data_object(a_file, keystore.identity, False, False, "JSONObject", "json").obj_id

        jobs = AbcJobs(address, keystore, a_id)
        ways: dict[str, Callable[[str], float]] = {"submit + wait": jobs.run, "run (one request)": jobs.run_one_request}

        def latency(name: str, way: str, n: int) -> list[float]:
            ways[way](procs[name])  # warm up
            return [ways[way](procs[name]) for _ in range(n)]

        def throughput(name: str, way: str, n: int) -> float:
            run: Callable[[int], float] = lambda _: ways[way](procs[name])  # noqa: E731
            with ThreadPoolExecutor(args.threads) as pool:
                began = time.perf_counter()
                list(pool.map(run, range(n)))
                return n / (time.perf_counter() - began)

        for name, n, goal in (
            ("abc-agent", args.latency, "goal <= 50 ms"),
            ("abc", max(5, args.latency // 3), "processor, for comparison"),
        ):
            for way in ways:
                values = latency(name, way, n)
                print(
                    f"(a) submit -> successful, {name}, {way}, sequential (n={n}): "
                    f"median {statistics.median(values) * 1000:.1f} ms, "
                    f"p95 {percentile(values, 0.95) * 1000:.1f} ms ({goal})"
                )
        for name, n, goal in (
            ("abc-agent", args.jobs, "goal >= 200 jobs/s with 2 instances on 2 cores"),
            ("abc", max(20, args.jobs // 4), "processor, for comparison"),
        ):
            for way in ways:
                rates = [throughput(name, way, n) for _ in range(args.repeat)]
                print(
                    f"(b) throughput, {name}, {way}: {n} jobs, {args.threads} client threads: "
                    f"median {statistics.median(rates):.1f} jobs/s of {args.repeat} runs "
                    f"({', '.join(f'{r:.0f}' for r in rates)}) ({goal})"
                )
        with RTIProxy(address, keystore) as rti:
            status = rti.get_json(f"/rti/proc/{procs['abc-agent']}", signer=keystore)
            served = [(i["index"], i["jobs_served"], i["restarts"]) for i in status["instances"]]
            print(f"agent instances (index, jobs served, restarts): {served}")
    finally:
        if node is not None:
            node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
