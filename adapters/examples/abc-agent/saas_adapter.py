"""Trigger helpers for adapters (stdlib only: adapters run in their own environment, so this one file may also be
copied next to an adapter as e.g. `saas_adapter.py`).

The RTI reads an adapter's stdout line by line. Lines of the form `trigger:<type>:<value>` are triggers:
`trigger:progress:<0-100>`, `trigger:output:<name>` (required once per declared output, after the file
`<wd>/<name>` is complete) and `trigger:message:<severity>:<text>`. Each helper prints one line and flushes.

Agents (`"kind": "agent"` in the descriptor) stay running and take jobs one at a time: they print `trigger:ready`,
then read one JSON line per job on stdin (`{"job_id": ..., "wd": ...}`, inputs already in `wd`) and end each job
with `trigger:done` or `trigger:error:<text>`. `agent_jobs()` does all of that:

    for job in agent_jobs():
        with job:  # trigger:done at the end; an exception becomes trigger:error:<text> and the loop goes on
            a = json.loads(job.path("a").read_text())
            ...
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["AgentJob", "agent_jobs", "print_message", "print_output", "print_progress"]


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _one_line(text: object) -> str:
    return " ".join(str(text).splitlines())


def print_progress(progress: int) -> None:
    """Report progress in percent (0-100)."""
    _emit(f"trigger:progress:{max(0, min(100, int(progress)))}")


def print_output(name: str) -> None:
    """Announce that output `name` is complete (the file `<wd>/<name>` exists)."""
    _emit(f"trigger:output:{name}")


def print_message(severity: str, text: str) -> None:
    """A message for the job's status (`info`, `warning`, `error`, ...); one line."""
    _emit(f"trigger:message:{severity}:{_one_line(text)}")


class AgentJob:
    """One job handed to an agent. Ends with `done()` or `error(text)`; as a context manager it ends itself
    (`trigger:done`, or `trigger:error:<exception>` when the block raises, and the exception is swallowed so the
    agent keeps serving). A job left open is done when the loop asks for the next one."""

    def __init__(self, job_id: str, wd: str):
        self.job_id = job_id
        self.wd = Path(wd)
        self.ended = False

    def path(self, name: str) -> Path:
        """`<wd>/<name>`: where input `name` is and where output `name` must be written."""
        return self.wd / name

    def done(self) -> None:
        if not self.ended:
            self.ended = True
            _emit("trigger:done")

    def error(self, text: str) -> None:
        if not self.ended:
            self.ended = True
            _emit(f"trigger:error:{_one_line(text) or 'error'}")

    def __enter__(self) -> AgentJob:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        if exc is None:
            self.done()
            return False
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: let the agent end
            return False
        self.error(f"{type(exc).__name__}: {exc}")
        return True


def agent_jobs(stdin: IO[str] | None = None) -> Iterator[AgentJob]:
    """Print `trigger:ready`, then yield one `AgentJob` per job line on stdin until stdin closes (the RTI closes it
    to stop the agent)."""
    source = stdin if stdin is not None else sys.stdin
    _emit("trigger:ready")
    for line in source:
        if not line.strip():
            continue
        try:
            document = json.loads(line)
            job = AgentJob(str(document["job_id"]), str(document["wd"]))
        except (ValueError, KeyError, TypeError):
            _emit("trigger:error:invalid job line")
            continue
        yield job
        job.done()
