"""Nodes as real processes (`saas-cli service`), joined through a boot node given as host:port: they see each
other; a node killed with SIGKILL shows offline on the others and online again after a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import waiting
from tests.conftest import PASSWORD, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

CLI = str(Path(sys.executable).parent / "saas-cli")


class NodeProcess:
    def __init__(self, keystore: Any, datastore: Path, boot: str | None, p2p_port: int | None = None):
        self.keystore = keystore
        self.datastore = datastore
        self.rest_port = free_port()
        self.p2p_port = p2p_port or free_port()
        self.boot = boot or f"127.0.0.1:{self.p2p_port}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}/api/v1"

    def start(self) -> None:
        args = [
            CLI,
            "--keystore", str(self.keystore.path.parent),
            "--keystore-id", self.keystore.iid,
            "--password", PASSWORD,
            "--non-interactive",
            "service",
            "--use-defaults",
            "--datastore", str(self.datastore),
            "--rest-address", f"127.0.0.1:{self.rest_port}",
            "--p2p-address", f"127.0.0.1:{self.p2p_port}",
            "--boot-node", self.boot,
            "--type", "storage",
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAAS_")}
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        wait_until(self.ready, 20, "the node process to serve REST")

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"node process exited with {self.process.returncode}")
        try:
            return httpx.get(self.url + "/db/node", trust_env=False, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def network(self) -> dict[str, bool]:
        nodes = httpx.get(self.url + "/db/network", trust_env=False, timeout=5).json()
        return {n["identity"]["id"]: n["online"] for n in nodes}

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


def wait_until(condition: Callable[[], Any], timeout: float, message: str) -> Any:
    return waiting.wait_until(condition, timeout, interval=0.1, what=message)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for p in started:
        p.stop()


def test_three_processes_join_and_a_killed_node_comes_back(
    processes: list[NodeProcess], keystores: Callable[[str], Any], tmp_path: Path
) -> None:
    a = NodeProcess(keystores("alice"), tmp_path / "a", None)
    processes.append(a)
    a.start()
    boot = f"127.0.0.1:{a.p2p_port}"
    b = NodeProcess(keystores("bob"), tmp_path / "b", boot)
    c = NodeProcess(keystores("carol"), tmp_path / "c", boot)
    processes += [b, c]
    b.start()
    c.start()
    everyone = {a.keystore.iid, b.keystore.iid, c.keystore.iid}

    def all_online() -> bool:
        return all(p.network() == dict.fromkeys(everyone, True) for p in (a, b, c))

    wait_until(all_online, 10, "three processes to see each other online")

    c.stop(signal.SIGKILL)
    wait_until(
        lambda: not a.network()[c.keystore.iid] and not b.network()[c.keystore.iid], 10, "the killed node offline"
    )
    c.start()
    wait_until(all_online, 10, "the restarted node online again everywhere")


def test_boot_node_process_started_ten_seconds_late(
    processes: list[NodeProcess], keystores: Callable[[str], Any], tmp_path: Path
) -> None:
    """The others start first and keep trying (with backoff); once the boot node runs, all join within seconds."""
    boot_port = free_port()
    boot = f"127.0.0.1:{boot_port}"
    b = NodeProcess(keystores("bob"), tmp_path / "b", boot)
    c = NodeProcess(keystores("carol"), tmp_path / "c", boot)
    processes += [b, c]
    b.start()
    c.start()
    time.sleep(10)  # time passing is the behaviour: the boot node starts ten seconds late
    assert b.network() == {b.keystore.iid: True}  # running alone, still trying
    assert c.network() == {c.keystore.iid: True}
    a = NodeProcess(keystores("alice"), tmp_path / "a", boot, p2p_port=boot_port)
    processes.append(a)
    a.start()
    everyone = dict.fromkeys({a.keystore.iid, b.keystore.iid, c.keystore.iid}, True)
    wait_until(lambda: all(p.network() == everyone for p in (a, b, c)), 10, "the late boot node to be joined")
