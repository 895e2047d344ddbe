"""Fixtures for the SDK tests: a real node, an SDK context on it, and a git repository of the example adapters."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from saas.core.keystore import Keystore
from saas.sdk.base import SDKContext, connect
from tests.conftest import PASSWORD, RunningNode
from tests.rti.rti_support import adapter_repo


def own_copy(keystore: Keystore, directory: Path) -> Keystore:
    """The same identity from a copy of its keystore file, so a test may add content keys to it freely."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / keystore.path.name
    shutil.copyfile(keystore.path, target)
    return Keystore.load(target, PASSWORD)


@dataclass
class SDKEnv:
    node: RunningNode
    context: SDKContext
    keystore: Keystore  # the node owner's identity (strict deployment: only it deploys)
    repo: Path
    commit: str
    files: Path

    def json_file(self, name: str, value: Any) -> Path:
        import json

        path = self.files / name
        path.write_text(json.dumps(value))
        return path

    def gpp(self, example: str = "abc") -> Any:
        return self.context.upload_gpp(str(self.repo), self.commit, example, "default")


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
