"""Trigger helpers for adapters (stdlib only: adapters run in their own environment).

The RTI reads an adapter's stdout line by line. Lines of the form `trigger:<type>:<value>` are triggers:
`trigger:progress:<0-100>`, `trigger:output:<name>` (required once per declared output, after the file
`<wd>/<name>` is complete) and `trigger:message:<severity>:<text>`. Each helper prints one line and flushes."""

from __future__ import annotations

import sys

__all__ = ["print_message", "print_output", "print_progress"]


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def print_progress(progress: int) -> None:
    """Report progress in percent (0-100)."""
    _emit(f"trigger:progress:{max(0, min(100, int(progress)))}")


def print_output(name: str) -> None:
    """Announce that output `name` is complete (the file `<wd>/<name>` exists)."""
    _emit(f"trigger:output:{name}")


def print_message(severity: str, text: str) -> None:
    """A message for the job's status (`info`, `warning`, `error`, ...); one line."""
    _emit(f"trigger:message:{severity}:{' '.join(str(text).splitlines())}")
