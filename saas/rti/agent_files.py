"""The files of an agent pool (`AgentPool`) under its root folder: each instance's folder (`instance-<i>`, with the
`jobs` folder of the jobs it holds), its own rotated logs (`instance-<i>.stdout.log` / `.stderr.log`), the process
group ids (`pids.json`, so a restarted node kills what a crashed one left behind), and a job's log files
(`open_job_logs`). Everything here blocks except `InstanceLog`, which the event loop writes line by line."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from saas.rti import process as processes
from saas.rti.deploy import tail
from saas.rti.runner import STDERR_LOG, STDOUT_LOG
from saas.rti.sandbox import Sandbox

__all__ = ["LOG_LIMIT", "InstanceLog", "PoolFiles", "open_job_logs"]

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


class PoolFiles:
    def __init__(self, root: Path, name: str):
        self.root = root
        self.name = name
        self._pids_lock = threading.Lock()

    def marker(self, index: int) -> str:
        """What instance `index`'s processes carry in `SAAS_JOB_ID` (so leftovers are found by it)."""
        return f"agent-{self.name}-{index}"

    def folder(self, index: int) -> Path:
        return self.root / f"instance-{index}"

    def prepare(self, instances: int, sandbox: Sandbox | None) -> None:
        """Kill what a crashed node left behind, then make the instance folders."""
        pids = self.root / "pids.json"
        with contextlib.suppress(OSError, ValueError):
            for index, pgid in json.loads(pids.read_text()).items():
                processes.kill_leftover(int(pgid), self.marker(int(index)))
        for index in range(instances):
            folder = self.folder(index)
            jobs = folder / "jobs"
            shutil.rmtree(jobs, ignore_errors=True)  # folders of jobs a crashed node had handed out
            jobs.mkdir(parents=True)
            if sandbox is not None:
                sandbox.own(folder)
                sandbox.own(jobs)

    def open_logs(self, index: int) -> list[InstanceLog]:
        return [InstanceLog(self.root / f"instance-{index}.{name}.log") for name in ("stdout", "stderr")]

    def log_tail(self, index: int) -> str:
        out = tail(self.root / f"instance-{index}.stdout.log", 1000).strip()
        err = tail(self.root / f"instance-{index}.stderr.log", 1000).strip()
        return "\n".join(part for part in (out, err) if part)

    def save_pids(self, pids: Callable[[], Mapping[int, int]]) -> None:
        """Under a lock, with `pids()` taken under it: so the last write holds every process started before it."""
        with self._pids_lock:
            temp = self.root / ".pids.json"
            temp.write_text(json.dumps({str(index): pid for index, pid in pids().items()}))
            os.replace(temp, self.root / "pids.json")

    def remove_pids(self) -> None:
        (self.root / "pids.json").unlink(missing_ok=True)


def open_job_logs(folder: Path) -> tuple[BinaryIO, BinaryIO]:
    """A job's stdout and stderr log files, opened for appending (blocks)."""
    folder.mkdir(parents=True, exist_ok=True)
    return open(folder / STDOUT_LOG, "ab", buffering=0), open(folder / STDERR_LOG, "ab", buffering=0)
