"""Help output and exit codes of incomplete command lines."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        ([], "usage: saas-cli [-h]"),
        (["identity"], "usage: saas-cli identity [-h]"),
        (["identity", "credentials"], "usage: saas-cli identity credentials [-h]"),
        (["identity", "credentials", "add"], "usage: saas-cli identity credentials add [-h]"),
        (["identity", "credentials", "test"], "usage: saas-cli identity credentials test [-h]"),
    ],
)
def test_missing_command_prints_help_to_stderr_and_exits_2(cli, args: list[str], usage: str) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(usage)
    assert "COMMAND" in result.stderr or "KIND" in result.stderr


def test_help_lists_commands_and_global_flags(cli) -> None:
    result = cli("--help")
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith("usage: saas-cli")
    for flag in (
        "--keystore",
        "--keystore-id",
        "--password",
        "--temp-dir",
        "--log-level",
        "--json",
        "--non-interactive",
    ):
        assert flag in result.stdout
    assert "identity" in result.stdout


def test_identity_help(cli) -> None:
    result = cli("identity", "--help")
    assert result.returncode == 0
    for command in ("create", "list", "show", "update", "remove", "credentials"):
        assert command in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["identity", "frobnicate"],
        ["--log-level", "LOUD", "identity", "list"],
        ["identity", "create", "--no-such-flag"],
    ],
)
def test_bad_command_line_exits_2(cli, args: list[str]) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "usage: saas-cli" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_loads_no_crypto() -> None:
    """`--help` stays cheap: the SDK's heavy dependencies are imported only by the commands that need them."""
    code = (
        "import sys\n"
        "from saas_cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('cryptography', 'pydantic', 'questionary', 'httpx') if m in sys.modules)\n"
        "print(','.join(heavy), file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""
