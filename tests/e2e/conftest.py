"""Fixtures for the end-to-end tests (tests/e2e): real node processes started with `saas-cli service`.

`node_process_factory(name)` gives an `e2e_support.NodeProcess` on free 127.0.0.1 ports with its own datastore;
every process is torn down at the end of the test (SIGTERM, then SIGKILL to its process group after a timeout).
Keystores come from the session-wide `keystores` fixture of tests/conftest.py (never modified here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_support import NodeProcess

from saas.core.keystore import Keystore


@pytest.fixture
def node_process_factory(tmp_path: Path, keystores: Callable[[str], Keystore]) -> Iterator[Callable[..., NodeProcess]]:
    """`node_process_factory(name="e2e-node", start=True)`: a node process with its own datastore."""
    made: list[NodeProcess] = []

    def make(name: str = "e2e-node", start: bool = True) -> NodeProcess:
        node = NodeProcess(keystores(name), tmp_path / f"{name}-{len(made)}", name)
        made.append(node)
        if start:
            node.start()
        return node

    yield make
    for node in reversed(made):
        node.close()


@pytest.fixture
def node_process(node_process_factory: Callable[..., NodeProcess]) -> NodeProcess:
    """A running full node process."""
    return node_process_factory()


@pytest.fixture(scope="session")
def user(keystores: Callable[[str], Keystore]) -> Keystore:
    """The client identity that adds objects (published to each node by the tests)."""
    return keystores("e2e-user")


@pytest.fixture(scope="session")
def other(keystores: Callable[[str], Keystore]) -> Keystore:
    """A second client identity (grantee / outsider)."""
    return keystores("e2e-other")
