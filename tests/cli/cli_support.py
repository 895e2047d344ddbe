"""Helpers shared by the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def write_password_file(path: Path, password: str) -> Path:
    """`path` holding `password` and a newline, mode 0600 (for `--password-file`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return path


def assert_clean_error(result, code: int, *fragments: str) -> None:
    """Exit `code`, one `Error: ...` line on stderr naming every fragment, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def doctor(
    node: Any, *args: str, address: str | None = None, keystore: Any = None, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`saas-cli [--json] doctor --address ... ARGS` with `keystore` (default: the node's own, as its owner) and
    `password` (default: the test password) in `SAAS_PASSWORD`; `--json` may be any of `args`."""
    from tests.conftest import PASSWORD

    keystore = keystore or node.node.keystore
    command = [
        sys.executable,
        "-m",
        "saas_cli.main",
        *(a for a in args if a == "--json"),
        "--keystore",
        str(keystore.path.parent),
        "--keystore-id",
        keystore.iid,
        "doctor",
        "--address",
        address or "{}:{}".format(*node.address),
        *(a for a in args if a != "--json"),
    ]
    env = {**os.environ, "SAAS_PASSWORD": PASSWORD if password is None else password}
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False, env=env)
