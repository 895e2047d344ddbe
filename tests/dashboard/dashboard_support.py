"""Shared set-up of the dashboard tests: a node with an adapter repository and two published users, and the real
`saas-cli dashboard` run as a user."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saas.core.keystore import Keystore
from saas.nodedb.proxy import NodeDBProxy
from tests.rti.rti_support import RTIEnv, adapter_repo

PASSWORD = "test password"  # tests/conftest.py's keystores
SAAS_CLI = Path(sys.executable).parent / "saas-cli"


def rti_env(
    node_factory: Callable[..., Any], keystores: Callable[[str], Keystore], tmp_path: Path, *adapters: str
) -> RTIEnv:
    """A full node, a repository of the example `adapters`, and alice and bob published on the node."""
    repo, commit = adapter_repo(tmp_path / "repos" / "adapters", *adapters)
    node = node_factory("node")
    alice, bob = keystores("alice"), keystores("bob")
    with NodeDBProxy(node.address) as db:
        for keystore in (alice, bob):
            db.update_identity(keystore.identity)
    files = tmp_path / "files"
    files.mkdir()
    return RTIEnv(node, node.keystore, alice, bob, repo, commit, files)


def dashboard_cli(user: Keystore, node: Any, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`saas-cli --json dashboard --address NODE EXTRA` as `user` (password from a file, no terminal)."""
    password = tmp_path / "password"
    password.write_text(PASSWORD)
    password.chmod(0o600)
    host, port = node.address
    command = [
        str(SAAS_CLI),
        "--keystore",
        str(user.path.parent),
        "--keystore-id",
        user.iid,
        "--password-file",
        str(password),
        "--json",
        "--non-interactive",
        "dashboard",
        "--address",
        f"{host}:{port}",
        *extra,
    ]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "NO_PROXY": "*"}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)
