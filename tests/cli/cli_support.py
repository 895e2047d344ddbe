"""Helpers shared by the CLI tests."""

from __future__ import annotations

import os
from pathlib import Path


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
