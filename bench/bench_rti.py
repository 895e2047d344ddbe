"""RTI figures (issue "The RTI"): prints numbers with their goals, no pass/fail. Uses RTIProxy / DORProxy against a
`saas-cli service` node process on 127.0.0.1 and the a + b adapter of adapters/examples/abc in a local git repo.

(a) deploy of the a+b adapter from a local repository: POST → state ready (median of --deploys; goal ≤ 1 s);
(b) submit → successful latency for a+b, sequential (median and p95 of --latency jobs; goal ≤ 0.3 s);
(c) throughput of --jobs a+b jobs submitted by 8 client threads (goal ≥ 20 jobs/s on 2 cores);
(d) node RSS after 200, 600 and 1000 jobs in total (goal: flat).

    .venv/bin/python bench/bench_rti.py [--deploys 5] [--latency 30] [--jobs 200] [--total 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bench_node
import psutil
from bench_node import PASSWORD, NodeRun

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "rti"))
from rti_support import adapter_repo

from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.rti.proxy import RTIProxy
from saas.rti.schemas import Task


def node_env() -> dict[str, str]:
    """The node's environment with the real Python first on PATH: a pyenv shim (a shell script) in front of
    `python3` costs ~90 ms per adapter run, which would measure the shim rather than the RTI."""
    clean = _plain_env()
    real = str(Path(sys.base_prefix) / "bin")
    clean["PATH"] = real + os.pathsep + clean.get("PATH", "")
    return clean


_plain_env = bench_node.env
bench_node.env = node_env


class AbcJobs:
    """The seed's a + b job (a by reference, b by value, c stored in the DOR), run and timed from any thread: each
    thread gets its own `RTIProxy`."""

    def __init__(self, address: tuple[str, int], keystore: Keystore, a_id: str, timeout: float = 120):
        self.address, self.keystore, self.timeout = address, keystore, timeout
        self.inputs = [Task.InputReference(name="a", obj_id=a_id), Task.InputValue(name="b", value={"v": 2})]
        self.outputs = [Task.Output(name="c", owner_iid=keystore.iid)]
        self._local = threading.local()

    def _proxy(self) -> RTIProxy:
        if not hasattr(self._local, "proxy"):
            self._local.proxy = RTIProxy(self.address, self.keystore)
        return self._local.proxy

    def run(self, proc_id: str) -> float:
        """Submit one job and wait until it succeeded; returns the seconds from submission to success."""
        proxy, began = self._proxy(), time.perf_counter()
        job = proxy.submit_job(proc_id, self.inputs, self.outputs, self.keystore)
        status = proxy.wait_for_job(job.id, self.keystore, timeout=self.timeout)
        if status.state != "successful":
            raise RuntimeError(f"job {job.id} {status.state}: {status.errors}")
        return time.perf_counter() - began

    def run_one_request(self, proc_id: str) -> float:
        """The same job through `run_job` (the node answers the submission once the job is final)."""
        proxy, began = self._proxy(), time.perf_counter()
        status = proxy.run_job(proc_id, self.inputs, self.outputs, self.keystore, timeout=self.timeout)
        if status.state != "successful":
            raise RuntimeError(f"job {status.job.id} {status.state}: {status.errors}")
        return time.perf_counter() - began


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deploys", type=int, default=5)
    parser.add_argument("--latency", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--total", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--unsafe-no-sandbox", action="store_true", help="run the adapters without the sandbox (for comparison)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-rti-"))
    node = None
    try:
        keystore = Keystore.create(work / "keystore", "bench", "bench@example.org", PASSWORD)
        extra = ("--unsafe-no-sandbox",) if args.unsafe_no_sandbox else ()
        node = NodeRun(keystore, work / "datastore", work / "node.log", extra)
        node.wait_ready()
        repo, commit = adapter_repo(work / "repo", "abc")
        source = str(repo)
        print(
            f"node: pid {node.proc.pid}, {os.cpu_count()} CPUs, max jobs = CPU count, "
            f"adapters run {Path(sys.base_prefix) / 'bin' / 'python3'}"
        )
        with DORProxy(("127.0.0.1", node.port), keystore) as dor:
            proc_id = dor.add_gpp_data_object(source, commit, "abc", "default", keystore.identity).obj_id
            a_file = work / "a.json"
            a_file.write_text(json.dumps({"v": 1}))
            a_id = dor.add_data_object(a_file, keystore.identity, False, False, "JSONObject", "json").obj_id

        rti = RTIProxy(("127.0.0.1", node.port), keystore)
        deploys = []
        for i in range(args.deploys):
            if i:
                rti.undeploy(proc_id, keystore)
            began = time.perf_counter()
            rti.deploy(proc_id, keystore)
            while rti.get_status(proc_id).state == "deploying":
                time.sleep(0.005)
            deploys.append(time.perf_counter() - began)
            assert rti.get_status(proc_id).state == "ready"
        print(
            f"(a) deploy a+b from a local repo: median {statistics.median(deploys):.3f} s "
            f"(min {min(deploys):.3f}, max {max(deploys):.3f}; goal <= 1 s, original 12.4 s)"
        )

        jobs = AbcJobs(("127.0.0.1", node.port), keystore, a_id, timeout=60)

        jobs.run(proc_id)  # warm up
        latencies = [jobs.run(proc_id) for _ in range(args.latency)]
        print(
            f"(b) submit -> successful (a+b, sequential, n={args.latency}): "
            f"median {statistics.median(latencies):.3f} s, "
            f"p95 {percentile(latencies, 0.95):.3f} s (goal <= 0.3 s, original 7-8 s)"
        )

        process = psutil.Process(node.proc.pid)
        done = 1 + args.latency
        with ThreadPoolExecutor(args.threads) as pool:
            began = time.perf_counter()
            list(pool.map(lambda _: jobs.run(proc_id), range(args.jobs)))
            elapsed = time.perf_counter() - began
            done += args.jobs
            print(
                f"(c) throughput: {args.jobs} jobs in {elapsed:.2f} s = {args.jobs / elapsed:.1f} jobs/s "
                f"({args.threads} client threads; goal >= 20 jobs/s on 2 cores, original 0.25-0.49)"
            )
            rss = [(done, process.memory_info().rss / 2**20)]
            for checkpoint in (600, args.total):
                if checkpoint <= done:
                    continue
                list(pool.map(lambda _: jobs.run(proc_id), range(checkpoint - done)))
                done = checkpoint
                rss.append((done, process.memory_info().rss / 2**20))
        print("(d) node RSS: " + ", ".join(f"{mib:.1f} MiB after {n} jobs" for n, mib in rss) + " (goal: flat)")
        rti.close()
    finally:
        if node is not None:
            node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
