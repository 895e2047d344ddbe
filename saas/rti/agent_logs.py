"""Log files of agents: each instance's own rotated logs (`_Log`, written from the event loop) and a job's log
files (`open_job_logs`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from saas.rti.runner import STDERR_LOG, STDOUT_LOG

__all__ = ["LOG_LIMIT", "InstanceLog", "open_job_logs"]

LOG_LIMIT = 10 * 2**20


class InstanceLog:
    """An append-only log file written line by line from the event loop, moved to `<name>.1` once it passes
    `LOG_LIMIT`. Buffered: the pool flushes it whenever the instance is between jobs (the job's own log files,
    which callers follow live, are written at once)."""

    def __init__(self, path: Path):
        self.path = path
        self._file: BinaryIO = open(path, "ab")  # noqa: SIM115 (closed by close())
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._size += len(data)
        if self._size > LOG_LIMIT:
            self._file.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._file = open(self.path, "ab")  # noqa: SIM115
            self._size = 0

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def open_job_logs(folder: Path) -> tuple[BinaryIO, BinaryIO]:
    """A job's stdout and stderr log files, opened for appending (blocks)."""
    folder.mkdir(parents=True, exist_ok=True)
    return open(folder / STDOUT_LOG, "ab", buffering=0), open(folder / STDERR_LOG, "ab", buffering=0)
