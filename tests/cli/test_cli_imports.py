"""What the CLI imports (issue 21): start-up stays light, the HTTP client (httpx, httpcore) is imported only by a
command that talks to a node, transfers skip what httpx and httpcore import for other uses (trio, httpx's own
command-line tool), and no command pulls in the node's server stack (web server, P2P, SQLite catalog).

Each case runs `saas_cli.main.main(argv)` in a fresh interpreter and lists `sys.modules` at the end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy

HTTP_CLIENT = ("httpx", "httpcore", "h11")
UNUSED = ("trio", "click", "rich", "pygments")  # imported by httpcore and httpx when installed; no use to a transfer
SERVER = (
    "fastapi",
    "uvicorn",
    "starlette",
    "libp2p",
    "sqlite3",
    "saas.node",
    "saas.rest.app",
    "saas.rest.server",
    "saas.p2p",
    "saas.dor.service",
    "saas.dor.catalog",
    "saas.dor.store",
    "saas.rti",
)
RUN = """
import json, sys
from saas_cli.main import main
code = 0
try:
    main(sys.argv[2:])
except SystemExit as e:
    code = e.code or 0
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(n for n, m in sys.modules.items() if m is not None)}, f)
"""


def run_main(env: dict[str, str], tmp_path: Path, *argv: str) -> tuple[int, set[str]]:
    """(exit code, modules loaded) of `saas-cli argv...` run in-process by a fresh interpreter."""
    report = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(report), *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.exists(), result.stderr
    found = json.loads(report.read_text())
    return found["code"], set(found["modules"])


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """The modules of `names` (packages with everything under them) that are loaded."""
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_parsing_a_transfer_command_imports_no_http_client(cli_env, tmp_path: Path) -> None:
    code, modules = run_main(cli_env, tmp_path, "dor", "add", "--help")
    assert code == 0
    assert loaded(modules, (*HTTP_CLIENT, "cryptography", "pydantic")) == []


def test_a_command_that_fails_before_talking_to_a_node_imports_no_http_client(
    cli_env, shared_keystore, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.bin"
    code, modules = run_main(cli_env, tmp_path, *shared_keystore.args(), "dor", "add", str(missing))
    assert code == 2
    assert loaded(modules, (*HTTP_CLIENT, *SERVER)) == []


def test_transfers_import_the_http_client_but_no_server_module(
    cli_env, shared_keystore, module_node, publish, tmp_path: Path
) -> None:
    publish(module_node.address, shared_keystore)
    content = tmp_path / "content.bin"
    content.write_bytes(b"imports" * 1000)
    flags = [*shared_keystore.args(), "--non-interactive", "dor", "--address", module_node.address]
    add = ["add", "--data-type", "ImportsTest", "--data-format", "bin", "--assume-creator", str(content)]
    code, modules = run_main(cli_env, tmp_path, *flags, *add)
    assert code == 0
    assert "httpx" in modules and "saas.rest.bulk" in modules
    assert loaded(modules, (*SERVER, *UNUSED)) == []

    keystore = Keystore.load(shared_keystore.path, shared_keystore.password)
    with DORProxy(module_node.address, keystore=keystore) as proxy:
        (obj,) = proxy.search(data_type="ImportsTest")
    code, modules = run_main(cli_env, tmp_path, *flags, "download", obj.obj_id, "--destination", str(tmp_path))
    assert code == 0
    assert (tmp_path / f"{obj.obj_id}.bin").read_bytes() == content.read_bytes()
    assert "httpx" in modules
    assert loaded(modules, (*SERVER, *UNUSED)) == []


@pytest.mark.parametrize("command", [["dor", "usage"], ["identity", "list"]])
def test_no_command_imports_the_server_stack(
    cli_env, shared_keystore, module_node, publish, tmp_path: Path, command
) -> None:
    publish(module_node.address, shared_keystore)
    flags = [*shared_keystore.args(), "--non-interactive"]
    if command[0] == "dor":
        command = ["dor", "--address", module_node.address, *command[1:]]
    code, modules = run_main(cli_env, tmp_path, *flags, *command)
    assert code == 0
    assert loaded(modules, SERVER) == []
    if command[0] == "identity":  # keystores only: no node is asked
        assert loaded(modules, HTTP_CLIENT) == []
