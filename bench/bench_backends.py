"""Execution backend figures (issue "Execution backends"): the a + b processor on the local, ssh and slurm backends
side by side, against a `saas-cli service` node process on 127.0.0.1. Prints numbers, no pass/fail.

The SSH host is a real sshd on 127.0.0.1 (the same machine: the figures are the backend's own overhead, without
network latency); the SLURM cluster is a real one-node cluster (munged + slurmctld + slurmd), both started here
exactly as the tests start them (tests/sshd_support.py, tests/slurm_support.py; needs root, openssh-server,
slurm-wlm and munge).

(a) submit → successful latency, sequential (median and p95 of --latency jobs per backend);
(b) throughput of --jobs jobs submitted by --threads client threads (jobs/s per backend).

    .venv/bin/python bench/bench_backends.py [--latency 10] [--jobs 30] [--threads 8] [--backends local,ssh,slurm]
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench_node import PASSWORD, NodeRun
from bench_rti import AbcJobs, percentile
from rti_support import adapter_repo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from slurm_support import start_slurm
from sshd_support import ssh_keygen, start_sshd

from saas.core.keystore import Keystore
from saas.core.schemas import SSHCredentials
from saas.dor.proxy import DORProxy
from saas.rti.proxy import RTIProxy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--backends", default="local,ssh,slurm")
    args = parser.parse_args()
    backends = args.backends.split(",")

    work = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    node = None
    with ExitStack() as stack:
        try:
            deploy_args: dict[str, dict[str, Any]] = {"local": {}}
            if "ssh" in backends or "slurm" in backends:
                key = ssh_keygen(work / "id_ed25519")
                (work / "sshd").mkdir()
                sshd = stack.enter_context(start_sshd(work / "sshd", key))
                (work / "remote-home").mkdir()
                ssh = SSHCredentials(
                    host=sshd.host, login=sshd.login, key=key.read_text(), home_path=str(work / "remote-home")
                )
                deploy_args["ssh"] = {"ssh_credentials": ssh}
            if "slurm" in backends:
                (work / "slurm").mkdir()
                cluster = stack.enter_context(start_slurm(work / "slurm"))
                os.environ["SLURM_CONF"] = str(cluster.conf)  # the node process inherits it
                deploy_args["slurm"] = {"backend": "slurm"}
            keystore = Keystore.create(work / "keystore", "bench", "bench@example.org", PASSWORD)
            node = NodeRun(keystore, work / "datastore", work / "node.log")
            node.wait_ready()
            repo, commit = adapter_repo(work / "repo", copies=dict.fromkeys(backends, "abc"))  # a GPP per backend
            source = str(repo)
            print(f"node: pid {node.proc.pid}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
            with DORProxy(("127.0.0.1", node.port), keystore) as dor:
                a_file = work / "a.json"
                a_file.write_text(json.dumps({"v": 1}))
                a_id = dor.add_data_object(a_file, keystore.identity, False, False, "JSONObject", "json").obj_id
                procs = {
                    b: dor.add_gpp_data_object(source, commit, b, "default", keystore.identity).obj_id for b in backends
                }
            rti = RTIProxy(("127.0.0.1", node.port), keystore)
            for backend, proc_id in procs.items():
                began = time.perf_counter()
                rti.deploy(proc_id, keystore, **deploy_args[backend])
                status = rti.wait_deployed(proc_id, timeout=120, interval=0.01)
                if status.state != "ready":
                    raise RuntimeError(f"deploying on {backend} failed: {status.error}")
                print(f"{backend:>5}: deploy {time.perf_counter() - began:.3f} s")

            jobs = AbcJobs(("127.0.0.1", node.port), keystore, a_id)

            for backend, proc_id in procs.items():
                jobs.run(proc_id)  # warm up
                latencies = [jobs.run(proc_id) for _ in range(args.latency)]
                with ThreadPoolExecutor(args.threads) as pool:
                    began = time.perf_counter()
                    list(pool.map(lambda _, p=proc_id: jobs.run(p), range(args.jobs)))
                    elapsed = time.perf_counter() - began
                print(
                    f"{backend:>5}: (a) latency median {statistics.median(latencies):.3f} s, "
                    f"p95 {percentile(latencies, 0.95):.3f} s (n={args.latency}); "
                    f"(b) throughput {args.jobs / elapsed:.2f} jobs/s ({args.jobs} jobs, {args.threads} threads)"
                )
            rti.close()
        finally:
            if node is not None:
                node.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
