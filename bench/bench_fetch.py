"""Cross-node fetch (issue "The network"): node A fetches a restricted 200 MiB object from node B over B's REST
service, signing as itself with the owner's delegation, checking the c_hash (`DORService.fetch_remote`).

Node B is a real `saas-cli service` process; node A runs in this process (fetch_remote is node-internal). Prints
the median of `--runs` fetches in MB/s (10^6 bytes) and MiB/s.

    .venv/bin/python bench/bench_fetch.py [--size-mib 200] [--runs 3]
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
from pathlib import Path

from bench_node import free_port, wait_rest

from saas.config import NodeConfig
from saas.core.delegation import Delegation
from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.node import Node
from saas.nodedb.proxy import NodeDBProxy

CLI = str(Path(sys.executable).parent / "saas-cli")
PASSWORD = "bench password"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * 2**20
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        print("creating keystores ...", flush=True)
        node_b = Keystore.create(work / "ks-b", "node-b", "b@example.org", PASSWORD)
        node_a = Keystore.create(work / "ks-a", "node-a", "a@example.org", PASSWORD)
        user = Keystore.create(work / "ks-user", "user", "user@example.org", PASSWORD)

        rest_b, p2p_b = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAAS_")}
        process = subprocess.Popen(
            [CLI, "--keystore", str(node_b.path.parent), "--keystore-id", node_b.iid, "--password", PASSWORD,
             "--non-interactive", "service", "--use-defaults", "--datastore", str(work / "ds-b"),
             "--rest-address", f"127.0.0.1:{rest_b}", "--p2p-address", f"127.0.0.1:{p2p_b}", "--type", "storage"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        try:
            wait_rest(rest_b)
            with NodeDBProxy(("127.0.0.1", rest_b)) as db:
                db.update_identity(user.identity)
                db.update_identity(node_a.identity)
                custodian = db.get_node()
            source = work / "content.bin"
            with open(source, "wb") as f:
                for _ in range(args.size_mib):
                    f.write(os.urandom(2**20))
            print(f"uploading {args.size_mib} MiB (restricted) to node B ...", flush=True)
            with DORProxy(("127.0.0.1", rest_b), user) as dor:
                obj = dor.add_data_object(source, user.identity, True, False, "Blob", "bin")
            source.unlink()

            config = NodeConfig(
                datastore=work / "ds-a",
                keystore=node_a.path,
                password=PASSWORD,
                rest_address=("127.0.0.1", free_port()),
                p2p_address=("127.0.0.1", free_port()),
                node_type="storage",
                log_level="WARNING",
            )

            async def fetch_all() -> list[float]:
                node = Node(config, node_a)
                await node.start()
                assert node.dor is not None
                try:
                    times = []
                    for _ in range(args.runs):
                        delegation = Delegation.create(
                            user, node_a.iid, obj.obj_id, servers=[custodian.identity.id], scopes=["content"]
                        )
                        target = work / "fetched.bin"
                        t = time.perf_counter()
                        await node.dor.fetch_remote(
                            obj.obj_id, custodian, target, delegation, expected_c_hash=obj.c_hash
                        )
                        times.append(time.perf_counter() - t)
                        assert target.stat().st_size == size
                        target.unlink()
                    return times
                finally:
                    await node.stop()

            times = asyncio.run(fetch_all())
            median = statistics.median(times)
            print(
                f"cross-node fetch of {args.size_mib} MiB (restricted, delegated, c_hash checked):"
                f" median {median:.2f} s"
                f" = {size / median / 1e6:.0f} MB/s ({size / median / 2**20:.0f} MiB/s) over {args.runs} runs"
                f" [{', '.join(f'{t:.2f}' for t in times)} s]"
            )
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
