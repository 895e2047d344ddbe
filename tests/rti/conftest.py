"""Fixtures for the RTI tests (helpers live in rti_support.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rti_support import RTIEnv, adapter_repo

from saas.core.keystore import Keystore
from saas.nodedb.proxy import NodeDBProxy


@pytest.fixture
def rti_env_factory(
    node_factory: Callable[..., Any], keystores: Callable[[str], Keystore], tmp_path: Path
) -> Iterator[Callable[..., RTIEnv]]:
    repo, commit = adapter_repo(tmp_path / "repos" / "adapters", "abc", "fail", "forget", "slow")

    def make(**config: Any) -> RTIEnv:
        node = node_factory("node", **config)
        alice, bob = keystores("alice"), keystores("bob")
        with NodeDBProxy(node.address) as db:
            for keystore in (alice, bob):
                db.update_identity(keystore.identity)
        files = tmp_path / "files"
        files.mkdir(exist_ok=True)
        return RTIEnv(node, node.keystore, alice, bob, repo, commit, files)

    made: list[RTIEnv] = []

    def tracked(**config: Any) -> RTIEnv:
        made.append(make(**config))
        return made[-1]

    yield tracked
    for env in made:
        for node in env.restarted:
            node.stop()


@pytest.fixture
def env(rti_env_factory: Callable[..., RTIEnv]) -> RTIEnv:
    return rti_env_factory()
