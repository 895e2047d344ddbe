"""Helpers shared by the CLI tests."""

from __future__ import annotations


def assert_clean_error(result, code: int, *fragments: str) -> None:
    """Exit `code`, one `Error: ...` line on stderr naming every fragment, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
