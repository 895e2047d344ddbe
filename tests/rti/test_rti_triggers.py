"""Parsing adapters' stdout: `trigger:` lines become events, anything odd is an ordinary line (never a crash)."""

from __future__ import annotations

import pytest

from saas.rti.runner import parse_trigger


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("trigger:progress:42", ("progress", 42)),
        ("trigger:progress:42.9\n", ("progress", 42)),
        ("trigger:progress:250", ("progress", 100)),
        ("trigger:progress:-5", ("progress", 0)),
        ("trigger:output:c", ("output", "c")),
        ("trigger:message:warning:disk almost full", ("message", ("warning", "disk almost full"))),
        ("trigger:progress:inf", None),
        ("trigger:progress:nan", None),
        ("trigger:progress:1e999", None),
        ("trigger:progress:abc", None),
        ("trigger:output:../etc/passwd", None),
        ("hello world", None),
    ],
)
def test_parse_trigger(line: str, expected: object) -> None:
    assert parse_trigger(line) == expected
