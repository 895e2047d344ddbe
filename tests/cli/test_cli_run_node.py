"""`scripts/run-node` (the README's first Quick start command) with HOME in a temporary folder.

The script is run with SAAS_VENV pointing at a small venv folder whose `python` and `saas-cli` hand over to this
venv's, with an install stamp for the current pyproject.toml: `saas_ensure_venv` then neither creates a venv nor
runs pip, and the shared .venv (and its stamp) is never touched. Extra arguments override the default addresses."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import stat
import sys
from pathlib import Path

import pytest

from saas.core.keystore import Keystore
from saas.nodedb.proxy import NodeDBProxy

REPOSITORY = Path(__file__).resolve().parents[2]
RUN_NODE = REPOSITORY / "scripts" / "run-node"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A venv folder that `saas_ensure_venv` accepts as installed (see the module docstring)."""
    folder = tmp_path / "venv"
    (folder / "bin").mkdir(parents=True)
    for name in ("python", "saas-cli"):
        wrapper = folder / "bin" / name
        wrapper.write_text(f'#!/bin/sh\nexec "{VENV_BIN / name}" "$@"\n')
        wrapper.chmod(0o755)
    digest = hashlib.sha256((REPOSITORY / "pyproject.toml").read_bytes()).hexdigest()
    (folder / ".saas-installed-").write_text(digest + "\n")
    return folder


@pytest.fixture
def run_node(background, base_env: dict[str, str], home: Path, venv: Path):
    """`run_node(extra_env)`: start scripts/run-node on fresh ports; returns (process, REST address, P2P address)."""

    def start(extra_env: dict[str, str] | None = None):
        rest, p2p = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        env = {**base_env, "HOME": str(home), "SAAS_VENV": str(venv), **(extra_env or {})}
        process = background(["bash", RUN_NODE, "--rest-address", rest, "--p2p-address", p2p], env=env)
        line = process.wait_for("Created ", timeout=60)
        assert line.rstrip("\n") == f"Created 'full' node instance at {rest}/{p2p} (keep RTI job history: No)"
        assert "== installing" not in process.stdout and "== creating" not in process.stdout
        return process, rest, p2p

    return start


def assert_password_out_of_reach(pid: int, password: str) -> None:
    """The node (run-node execs into it) has the password in neither its command line nor its environment."""
    for name in ("cmdline", "environ"):
        assert password.encode() not in Path(f"/proc/{pid}/{name}").read_bytes(), name
    assert b"--password-file" in Path(f"/proc/{pid}/cmdline").read_bytes()


def node_identity(rest: str) -> tuple[str, str]:
    with NodeDBProxy(rest) as proxy:
        identity = proxy.get_node().identity
    return identity.id, identity.name


@pytest.mark.slow
def test_first_run_creates_password_and_identity_second_run_reuses_them(run_node, home: Path) -> None:
    keystore = home / ".keystore"
    password_file = keystore / "dev-node.password"

    process, rest, _ = run_node()
    lines = process.stdout.splitlines()
    assert f"Generated a password for the development identity: it is in {password_file} (mode 0600)." in lines, (
        process.stdout
    )
    assert f"Creating the development identity in {keystore} ..." in lines
    created = [line.removeprefix("Development identity: ") for line in lines if line.startswith("Development identity")]
    assert len(created) == 1, process.stdout
    iid = created[0]
    assert node_identity(rest) == (iid, "dev node")
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o700
    assert (keystore / "dev-node.id").read_text().strip() == iid
    password = password_file.read_text()
    assert len(password) >= 24
    assert password not in process.stdout + process.stderr
    assert_password_out_of_reach(process.process.pid, password)
    assert (home / ".datastore").is_dir()  # the default datastore
    assert process.stop(signal.SIGTERM) == 0
    assert process.stdout.rstrip().endswith("Node stopped.")

    process, rest, _ = run_node()  # same HOME: nothing is generated again
    assert "Generated a password" not in process.stdout
    assert "Creating the development identity" not in process.stdout
    assert node_identity(rest) == (iid, "dev node")
    assert password_file.read_text() == password
    assert sorted(p.name for p in keystore.glob("*.json")) == [f"{iid}.json"]
    assert process.stop(signal.SIGTERM) == 0


@pytest.mark.slow
def test_saas_password_from_the_environment_is_not_written(run_node, home: Path) -> None:
    keystore = home / ".keystore"
    process, rest, _ = run_node({"SAAS_PASSWORD": "env password"})
    assert "Generated a password" not in process.stdout
    assert not (keystore / "dev-node.password").exists()
    iid = (keystore / "dev-node.id").read_text().strip()
    assert f"Development identity: {iid}" in process.stdout
    assert node_identity(rest)[0] == iid
    assert Keystore.load(keystore / f"{iid}.json", "env password").iid == iid
    assert_password_out_of_reach(process.process.pid, "env password")
    assert json.loads((keystore / f"{iid}.json").read_text())["identity"]["name"] == "dev node"
    assert process.stop(signal.SIGTERM) == 0


def test_busy_port_is_named_with_free_ones_suggested(base_env, home: Path, venv: Path) -> None:
    """--rest-address/--p2p-address are the script's own options: a busy port is named and free ones suggested
    before anything is created."""
    import subprocess

    p2p = f"127.0.0.1:{free_port()}"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        rest = f"127.0.0.1:{busy.getsockname()[1]}"
        env = {**base_env, "HOME": str(home), "SAAS_VENV": str(venv)}
        result = subprocess.run(
            ["bash", RUN_NODE, "--rest-address", rest, f"--p2p-address={p2p}"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert lines[-2] == f"Cannot start the node: the REST port {rest} is busy (another node running?)."
    suggested = lines[-1].removeprefix("Try: scripts/run-node --rest-address ").split(" --p2p-address ")
    assert suggested[1] == p2p and suggested[0] != rest and suggested[0].startswith("127.0.0.1:")
    assert not (home / ".keystore" / "dev-node.id").exists()  # nothing was created
