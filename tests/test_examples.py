"""Every script in examples/ runs green against a real node (a subprocess talking to it over REST), configured
the way a user configures it: $SAAS_ADDRESS, $SAAS_KEYSTORE, $SAAS_KEYSTORE_ID and $SAAS_PASSWORD."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, RunningNode
from tests.rti.rti_support import adapter_repo
from tests.sdk.sdk_support import own_copy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").rglob("*.py"))


def run_example(script: Path, node: RunningNode, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    keystore = own_copy(node.keystore, tmp_path / "keystore")  # the node owner (deploys), in a folder of its own
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAAS_") and not k.upper().endswith("_PROXY")}
    env |= {
        "SAAS_ADDRESS": "{}:{}".format(*node.address),
        "SAAS_KEYSTORE": str(keystore.path.parent),
        "SAAS_KEYSTORE_ID": keystore.iid,
        "SAAS_PASSWORD": PASSWORD,
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
    }
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=110
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_against_a_node(script: Path, node: RunningNode, tmp_path: Path) -> None:
    result = run_example(script, node, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "result c = {'v': 18}" in result.stdout
    assert result.stdout.rstrip().endswith("done")


@pytest.mark.timeout(120)
def test_example_with_a_given_repository(node: RunningNode, tmp_path: Path) -> None:
    repo, _ = adapter_repo(tmp_path / "repo", "abc")
    result = run_example(ROOT / "examples" / "applications" / "example_sdk.py", node, tmp_path, "--repo", str(repo))
    assert result.returncode == 0, result.stdout + result.stderr  # the commit is the repository's HEAD
    assert "result c = {'v': 18}" in result.stdout


def test_every_example_is_collected() -> None:
    assert {p.name for p in EXAMPLES} >= {"example_api.py", "example_sdk.py"}
