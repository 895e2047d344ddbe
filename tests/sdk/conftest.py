"""Fixtures for the SDK tests: a real node, an SDK context on it, and a git repository of the example adapters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from saas.sdk.base import connect
from tests.conftest import RunningNode
from tests.rti.rti_support import adapter_repo
from tests.sdk.sdk_support import SDKEnv, own_copy


@pytest.fixture(scope="module")
def sdk_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return adapter_repo(tmp_path_factory.mktemp("sdk-repo") / "adapters", "abc", "fail", "slow")


@pytest.fixture
def sdk(node_factory: Callable[..., RunningNode], tmp_path: Path, sdk_repo: tuple[Path, str]) -> SDKEnv:
    node = node_factory()
    keystore = own_copy(node.keystore, tmp_path / "user-keystore")
    files = tmp_path / "files"
    files.mkdir()
    context = connect("{}:{}".format(*node.address), keystore)
    return SDKEnv(node, context, keystore, sdk_repo[0], sdk_repo[1], files)
