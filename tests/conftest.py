"""Fixtures shared by every test folder: session keystores and real nodes on free 127.0.0.1 ports.

A node started with `node_factory` runs in-process on its own asyncio loop in a background thread, with its real
REST server (uvicorn), SQLite and datastore, so the sync proxies talk to it over real HTTP. Keystores are created
once per session (RSA-4096 generation is slow) and must not be modified by tests.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from saas.config import NodeConfig
from saas.core.errors import ConfigError, P2PError
from saas.core.keystore import Keystore
from saas.node import Node

PASSWORD = "test password"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningNode:
    """A node on its own event loop thread. `address` is `(host, port)` of its REST service."""

    def __init__(self, node: Node):
        self.node = node
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="node-loop", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.node.config.rest_address

    @property
    def url(self) -> str:
        return "http://{}:{}".format(*self.address)

    @property
    def keystore(self) -> Keystore:
        return self.node.keystore

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        """Run a coroutine on the node's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> None:
        self.call(self.node.start())

    def stop(self) -> None:
        if self.loop.is_running():
            self.call(self.node.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()  # its selector and self-pipe: three descriptors a node, ~1000 in a whole test session


@pytest.fixture(scope="session")
def keystores(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Keystore]:
    """`keystores(name)`: a session-wide keystore per name (created on first use); do not modify them."""
    directory = tmp_path_factory.mktemp("keystores")
    made: dict[str, Keystore] = {}

    def get(name: str) -> Keystore:
        if name not in made:
            made[name] = Keystore.create(directory, name, f"{name}@example.org", PASSWORD)
        return made[name]

    return get


@pytest.fixture
def node_factory(tmp_path: Path, keystores: Callable[[str], Keystore]) -> Iterator[Callable[..., RunningNode]]:
    """`node_factory(name="node", **config)`: start a node (config fields override the defaults)."""
    started: list[RunningNode] = []

    def make(name: str = "node", **overrides: Any) -> RunningNode:
        keystore = keystores(name)
        # A port free_port() found can be taken (e.g. as another connection's local port) before the node binds
        # it: try again with fresh ports, unless the test chose the ports itself.
        attempts = 1 if {"rest_address", "p2p_address"} & overrides.keys() else 5
        for attempt in range(attempts):
            settings: dict[str, Any] = {
                "datastore": tmp_path / f"datastore-{name}",
                "keystore": keystore.path,
                "password": PASSWORD,
                "rest_address": ("127.0.0.1", free_port()),
                "p2p_address": ("127.0.0.1", free_port()),
                "log_level": "WARNING",
                "allow_local_git": True,  # tests add GPPs from repositories in tmp_path
            }
            settings.update(overrides)
            running = RunningNode(Node(NodeConfig(**settings), keystore))
            try:
                running.start()
            except (ConfigError, P2PError) as e:
                running.stop()
                if not e.reason.startswith("Cannot listen on") or attempt == attempts - 1:
                    raise
                continue
            started.append(running)
            return running
        raise AssertionError("unreachable")

    yield make
    for running in reversed(started):
        running.stop()


@pytest.fixture
def node(node_factory: Callable[..., RunningNode]) -> RunningNode:
    """A running full node."""
    return node_factory()


# -- a real sshd (tests/sshd_support.py) -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private ed25519 key file (its public key is next to it, `.pub`)."""
    from sshd_support import ssh_keygen

    return ssh_keygen(tmp_path_factory.mktemp("sshkey") / "id_ed25519")


@pytest.fixture(scope="session")
def other_ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key that no sshd of these tests authorises."""
    from sshd_support import ssh_keygen

    return ssh_keygen(tmp_path_factory.mktemp("sshkey_other") / "id_ed25519")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory, ssh_key: Path) -> Iterator[Any]:
    """A real OpenSSH server on a free 127.0.0.1 port that lets the current user in with `ssh_key`."""
    from sshd_support import start_sshd

    with start_sshd(tmp_path_factory.mktemp("sshd"), ssh_key) as server:
        yield server


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real one-node SLURM cluster (tests/slurm_support.py); SLURM_CONF points at it for this session."""
    from slurm_support import start_slurm

    with start_slurm(tmp_path_factory.mktemp("slurm")) as cluster:
        before = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(cluster.conf)
        try:
            yield cluster
        finally:
            if before is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = before
