"""Parsing adapters' stdout: `trigger:` lines become events, anything odd is an ordinary line (never a crash); what
trigger messages a job keeps is bounded (`MessageLog`)."""

from __future__ import annotations

import json

import pytest

from saas.rti.messages import MessageLog
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


def test_message_log_keeps_first_and_last_and_counts_the_rest() -> None:
    log = MessageLog(max_length=50, max_count=10, max_bytes=64 * 1024)
    for n in range(40_000):
        log.add("info", f"message {n}", n)
    entries = log.entries()
    assert [e["message"] for e in entries[:5]] == [f"message {n}" for n in range(5)]
    assert entries[5]["dropped"] == 40_000 - 10
    assert [e["message"] for e in entries[6:]] == [f"message {n}" for n in range(40_000 - 5, 40_000)]
    assert len(log) == 10


def test_message_log_cuts_long_messages_and_bounds_bytes() -> None:
    log = MessageLog(max_length=100, max_count=1000, max_bytes=4096)
    log.add("x" * 1000, "y" * (50 * 2**20), 1)
    first = log.entries()[0]
    assert first["message"] == "y" * 100 + f"... [truncated: {50 * 2**20} characters]"
    assert len(first["severity"]) == 32
    for n in range(1000):
        log.add("info", "z" * 100, n)
    assert len(json.dumps(log.entries())) < 4096 + 200  # the bytes bound, whatever the count
    assert log.entries()[-1]["time"] == 999


def test_message_log_survives_a_restart() -> None:
    log = MessageLog(max_length=10, max_count=4)
    for n in range(10):
        log.add("info", f"m{n}" * 20, n)
    restored = MessageLog.restore(json.loads(json.dumps(log.entries())), max_length=10, max_count=4)
    assert restored.entries() == log.entries()
