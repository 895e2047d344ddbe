"""Helpers for the SDK tests (and the examples' tests): a keystore copy of one's own, and `SDKEnv`."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saas.core.keystore import Keystore
from saas.sdk.base import SDKContext
from tests.conftest import PASSWORD, RunningNode


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
        path = self.files / name
        path.write_text(json.dumps(value))
        return path

    def gpp(self, example: str = "abc") -> Any:
        return self.context.upload_gpp(str(self.repo), self.commit, example, "default")
