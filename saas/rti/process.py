"""Adapter processes (DESIGN §12): the one place the RTI starts a process, gives it an environment, reads its output
and kills it. install.sh, processor jobs (`execute.sh <config> <wd>`), agent instances, git and the ssh/slurm shell
commands all go through here.

Adapter code (`spawn` with a `Sandbox`) runs in the sandbox (see `saas.rti.sandbox`) and in a cgroup of its own
(see `saas.rti.cgroups`), so killing it kills every process it started, double-forked and `setsid` ones included.
The node's own tools (`spawn` with `sandbox=None`: git, ssh, sbatch) run in their own process group. Every child
gets a minimal environment (`child_env`): nothing of the node's own (no password, no token)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from saas.core.helpers import marked_processes
from saas.rti.cgroups import Cgroup, Limits
from saas.rti.sandbox import Sandbox

__all__ = ["AdapterProcess", "Limits", "child_env", "kill_group", "kill_leftover", "pump", "spawn", "tool_env"]

STREAM_LIMIT = 1024 * 1024
TAIL_BYTES = 2000
STOP_GRACE = 2.0
GONE_TIMEOUT = 5.0


def child_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment of an adapter process: nothing of the node's own (no password, no tokens)."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }
    return env | (extra or {})


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one of the node's own tools (git, ssh, sbatch): the node's, less every `SAAS_*`."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SAAS_")} | (extra or {})


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass(eq=False)
class AdapterProcess:
    """A started process: its process group (and cgroup) is what `kill` ends."""

    process: asyncio.subprocess.Process
    cgroup: Cgroup | None = None
    limits: Limits = field(default_factory=Limits)
    sandboxed: bool = False
    _init: int | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdin(self) -> asyncio.StreamWriter | None:
        return self.process.stdin

    @property
    def stdout(self) -> asyncio.StreamReader | None:
        return self.process.stdout

    @property
    def stderr(self) -> asyncio.StreamReader | None:
        return self.process.stderr

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    async def wait(self) -> int:
        return await self.process.wait()

    def _note_init(self) -> None:
        """Before a signal: remember the sandbox's init (bubblewrap's child, pid 1 of the adapter's PID namespace).
        Killing bubblewrap kills it, and it is gone only once every process of the namespace is, which `close`
        waits for when no cgroup does (the node run by an ordinary user)."""
        if self.sandboxed and self._init is None and self.process.returncode is None:
            pid = self.process.pid
            with contextlib.suppress(OSError, ValueError, IndexError):
                self._init = int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])

    def signal(self, sig: int) -> None:
        self._note_init()
        kill_group(self.process.pid, sig)

    def kill_now(self) -> None:
        """SIGKILL the process group now (from a callback); `close()` later kills what is left in the cgroup. With
        the sandbox, killing the group kills the PID namespace and so every process of the adapter."""
        self._note_init()
        kill_group(self.process.pid, signal.SIGKILL)

    async def kill(self) -> None:
        """SIGKILL every process of it (group and cgroup)."""
        self.kill_now()
        if self.cgroup is not None:
            await asyncio.to_thread(self.cgroup.kill)

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM, then after `grace` seconds SIGKILL; waits for the process."""
        if self.process.returncode is None:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.process.wait()), grace)
        await self.kill()
        await self.process.wait()

    async def close(self) -> str | None:
        """Kill whatever is left and remove its cgroup; returns which of its limits it ran into, if any (read from
        the cgroup in the same worker-thread hop as its removal)."""
        self.kill_now()
        if self.cgroup is not None:
            return await asyncio.to_thread(_remove, self.cgroup)
        if self._init is not None:  # the kill of the PID namespace is asynchronous: wait until it is done
            await asyncio.to_thread(_wait_gone, self._init, GONE_TIMEOUT)
        return None


def _remove(cgroup: Cgroup) -> str | None:
    exceeded = cgroup.exceeded()
    cgroup.remove()
    return exceeded


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait until process `pid` has exited (gone, or a zombie nobody reaps); at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            return
        if stat[stat.rindex(b")") + 2 :][:1] in (b"Z", b"X"):
            return
        time.sleep(0.005)


async def spawn(
    sandbox: Sandbox | None,
    argv: list[str],
    *,
    cwd: Path,
    name: str = "",
    rw: list[Path] | tuple[Path, ...] = (),
    ro: list[Path] | tuple[Path, ...] = (),
    network: bool = True,
    limits: Limits | None = None,
    env: dict[str, str] | None = None,
    stdin: Any = asyncio.subprocess.DEVNULL,
    stdout: Any = asyncio.subprocess.PIPE,
    stderr: Any = asyncio.subprocess.PIPE,
) -> AdapterProcess:
    """Start `argv` in its own process group. With a `sandbox`, it is adapter code: it runs sandboxed with only
    `rw` / `ro` visible, in a cgroup `name` with `limits`, with the environment `env` (see `child_env`). Without,
    it is one of the node's own tools, run as the node with `env` (see `tool_env`)."""
    limits = limits or Limits()
    cgroup: Cgroup | None = None
    command = argv
    if sandbox is not None:
        if sandbox.cgroups is not None and name:
            cgroup = await asyncio.to_thread(sandbox.cgroups.create, name, limits)
        command = sandbox.wrap(argv, cwd=cwd, rw=rw, ro=ro, network=network, limits=limits)
        if cgroup is not None:
            command = cgroup.join_command() + command
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=cwd,
            env=env if env is not None else tool_env(),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            limit=STREAM_LIMIT,
        )
    except BaseException:
        if cgroup is not None:
            await asyncio.to_thread(cgroup.remove)
        raise
    return AdapterProcess(process, cgroup, limits, sandboxed=sandbox is not None and sandbox.enabled)


async def pump(
    stream: asyncio.StreamReader,
    sink: IO[bytes] | None,
    on_line: Callable[[str], None] | None,
    on_bytes: Callable[[bytes], None] | None = None,
) -> bytes:
    """Copy a stream line by line to `sink` (a file), handing each line to `on_line` (decoded) and `on_bytes`
    (as read); returns the last `TAIL_BYTES` (for error messages). A line longer than the stream limit is skipped."""
    tail = b""
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # longer than STREAM_LIMIT
            continue
        if not line:
            return tail
        if sink is not None:
            sink.write(line)
        tail = (tail + line)[-TAIL_BYTES:]
        if on_line is not None:
            on_line(line.decode("utf-8", "replace"))
        if on_bytes is not None:
            on_bytes(line)


def kill_leftover(pgid: int, marker: str) -> bool:
    """After a crash of the node: kill what is left of a process group (the leader may be gone while its children
    live on). Only a group with a member whose environment carries SAAS_JOB_ID=<marker> is killed, so a reused id
    is left alone. (Sandboxed processes die with the node and their cgroups are swept at start: this is for
    processes started without the sandbox.)"""
    if any(group == pgid for _, group in marked_processes(f"SAAS_JOB_ID={marker}")):
        kill_group(pgid, signal.SIGKILL)
        return True
    return False
