"""Where remote backends run their commands: this machine (`LocalShell`) or a host over OpenSSH (`SSHShell`).

Every command is a bash script with positional arguments (`bash -c <script> _ <args...>`), so no value is ever
spliced into shell text: over SSH the script and each argument travel single-quoted. The private key lives in a
0600 file inside a private temporary folder only while a `session()` is open; `BatchMode=yes` (never a prompt) and
`StrictHostKeyChecking=accept-new` with a known_hosts file of the deployment (the host key is pinned at deploy).
Nothing here logs a key or puts it on a command line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saas.core.errors import AuthenticationError, UnreachableError
from saas.core.schemas import SSHCredentials
from saas.rti.backends.base import BackendError
from saas.rti.process import kill_group, tool_env

__all__ = ["LocalShell", "SSHShell", "Shell", "ShellResult", "pipe"]

SSH_TIMEOUT = 60.0


class SSHLoginError(BackendError, AuthenticationError):
    pass


class SSHUnreachableError(BackendError, UnreachableError):
    pass


@dataclass
class ShellResult:
    code: int
    out: bytes
    err: bytes

    def text(self) -> str:
        return self.out.decode("utf-8", "replace")

    def error_text(self) -> str:
        lines = self.err.decode("utf-8", "replace").strip().splitlines()
        return " | ".join(line.strip() for line in lines[-3:]) or "no error output"


class Shell:
    """Runs bash scripts on this machine."""

    label = "this machine"
    remote = False

    def argv(self, script: str, *args: str) -> list[str]:
        return ["bash", "-c", script, "_", *args]

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Shell]:
        yield self

    async def spawn(self, script: str, *args: str, **kwargs: Any) -> asyncio.subprocess.Process:
        kwargs.setdefault("stdin", asyncio.subprocess.DEVNULL)
        return await asyncio.create_subprocess_exec(
            *self.argv(script, *args), env=tool_env(), start_new_session=True, **kwargs
        )

    async def run(
        self, script: str, *args: str, input: bytes | None = None, timeout: float = SSH_TIMEOUT
    ) -> ShellResult:
        process = await self.spawn(
            script,
            *args,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(input), timeout)
        except BaseException:
            _kill(process)
            await process.wait()
            raise
        result = ShellResult(process.returncode or 0, out, err)
        self.check_connection(result)
        return result

    async def check(self, script: str, *args: str, what: str, input: bytes | None = None, timeout: float = 60) -> str:
        """Run a script; raise `BackendError` naming `what` with its error output when it fails."""
        try:
            result = await self.run(script, *args, input=input, timeout=timeout)
        except TimeoutError:
            raise BackendError(f"{what} on {self.label} timed out after {timeout:g} s") from None
        if result.code != 0:
            raise BackendError(f"{what} on {self.label} failed: {result.error_text()}", {"exit_code": result.code})
        return result.text()

    def check_connection(self, result: ShellResult) -> None:
        """Raise when a result says the connection itself failed (SSH only)."""

    async def close(self) -> None:
        """Release shared connections (SSH only)."""


class LocalShell(Shell):
    pass


@dataclass
class _Master:
    """One authenticated SSH connection that sessions share (OpenSSH ControlMaster on a socket in a 0700 folder)."""

    folder: str
    users: int = 0

    @property
    def control(self) -> str:
        return os.path.join(self.folder, "cm")


class SSHShell(Shell):
    """Runs bash scripts on `credentials.host` as `credentials.login` (inside an open `session()`).

    Sessions share ControlMaster connections (at most JOBS_PER_MASTER sessions each, so a host's MaxSessions is never
    reached): the handshake and login happen once per master, not per command. The private key is on disk only
    while a master logs in; a master ends after MASTER_IDLE seconds without use (also when the node crashed), or on
    `close()`."""

    remote = True
    JOBS_PER_MASTER = 4  # a job holds at most two channels at once (its stdout and stderr followers)
    MASTER_IDLE = 300

    def __init__(self, credentials: SSHCredentials, known_hosts: Path, _control: str | None = None):
        self._credentials = credentials
        self._known_hosts = known_hosts
        self._control = _control
        host, port = credentials.host_and_port()
        self._host, self._port = host, port
        self.label = f"{credentials.login}@{credentials.host}"
        self._masters: list[_Master] = []
        self._lock: asyncio.Lock | None = None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Shell]:
        master = await self._acquire()
        try:
            yield SSHShell(self._credentials, self._known_hosts, master.control)
        finally:
            master.users -= 1

    async def _acquire(self) -> _Master:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            for master in list(self._masters):
                if master.users >= self.JOBS_PER_MASTER:
                    continue
                if await self._alive(master):
                    master.users += 1
                    return master
                self._masters.remove(master)
                await asyncio.to_thread(shutil.rmtree, master.folder, True)
            master = await self._start_master()
            master.users += 1
            self._masters.append(master)
            return master

    async def _alive(self, master: _Master) -> bool:
        code = await self._control_command(master, "check")
        return code == 0

    async def _control_command(self, master: _Master, command: str) -> int | None:
        process = await asyncio.create_subprocess_exec(
            *self._options(master.control, "no"),
            "-O",
            command,
            "-l",
            self._credentials.login,
            "--",
            self._host,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            return await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            _kill(process)
            await process.wait()
            return None

    async def _start_master(self) -> _Master:
        if shutil.which("ssh") is None:
            raise BackendError("The 'ssh' client is not installed on this node")
        master = _Master(await asyncio.to_thread(tempfile.mkdtemp, prefix="saas-ssh-"))  # mode 0700
        key_file = os.path.join(master.folder, "key")
        log = os.path.join(master.folder, "login.log")

        def write_key() -> None:
            key = self._credentials.private_key()
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key if key.endswith("\n") else key + "\n")

        try:
            await asyncio.to_thread(write_key)
            process = await asyncio.create_subprocess_exec(
                *self._options(master.control, "yes"),
                *("-i", key_file, "-N", "-f", "-E", log, "-o", f"ControlPersist={self.MASTER_IDLE}"),
                *("-l", self._credentials.login, "--", self._host),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                code = await asyncio.wait_for(process.wait(), SSH_TIMEOUT)
            except BaseException:
                _kill(process)
                await process.wait()
                raise
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, master.folder, True)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(key_file)  # the master is logged in (or failed): the key leaves the disk
        if code != 0:
            error = await asyncio.to_thread(Path(log).read_bytes) if os.path.exists(log) else b""
            await asyncio.to_thread(shutil.rmtree, master.folder, True)
            self.check_connection(ShellResult(255, b"", error))
            raise BackendError(f"SSH to {self.label} failed (exit code {code})")
        return master

    async def close(self) -> None:
        """Stop every master connection (undeploy, node stop)."""
        masters, self._masters = self._masters, []
        for master in masters:
            await self._control_command(master, "exit")
            await asyncio.to_thread(shutil.rmtree, master.folder, True)

    def _options(self, control: str, master: str) -> list[str]:
        options = {
            "BatchMode": "yes",
            "IdentitiesOnly": "yes",
            "ConnectTimeout": "15",
            "StrictHostKeyChecking": "accept-new",
            "UserKnownHostsFile": str(self._known_hosts),
            "GlobalKnownHostsFile": "/dev/null",
            "LogLevel": "ERROR",
            "ServerAliveInterval": "15",
            "ServerAliveCountMax": "4",
            "ControlMaster": master,
            "ControlPath": control,
        }
        argv = ["ssh", "-F", "/dev/null", "-T"]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        if self._port is not None:
            argv += ["-p", str(self._port)]
        return argv

    def argv(self, script: str, *args: str) -> list[str]:
        if self._control is None:
            raise RuntimeError("SSHShell used outside session()")
        remote = " ".join(["bash", "-c", shlex.quote(script), "_", *(shlex.quote(a) for a in args)])
        return [*self._options(self._control, "no"), "-l", self._credentials.login, "--", self._host, remote]

    def check_connection(self, result: ShellResult) -> None:
        if result.code != 255:
            return
        reason = f"SSH to {self.label} failed: {result.error_text()}"
        details = {"host": self._credentials.host, "login": self._credentials.login}
        if "Permission denied" in reason or "Host key verification failed" in reason:
            raise SSHLoginError(reason, details)
        if re.search(r"refused|timed out|resolve|No route|unreachable|closed", reason, re.IGNORECASE):
            raise SSHUnreachableError(reason, details)
        raise BackendError(reason, details)


def _kill(process: asyncio.subprocess.Process) -> None:
    kill_group(process.pid)


async def pipe(
    source: list[str], target: list[str], timeout: float, cwd: Path | None = None
) -> tuple[ShellResult, ShellResult]:
    """Run `source | target` (two argv lists, e.g. a local `tar -c` into an ssh `tar -x`); both results."""
    read_fd, write_fd = os.pipe()
    env = tool_env()
    try:
        first = await asyncio.create_subprocess_exec(
            *source,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        second = await asyncio.create_subprocess_exec(
            *target,
            stdin=read_fd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    finally:
        os.close(read_fd)
        os.close(write_fd)
    try:
        (out1, err1), (out2, err2) = await asyncio.wait_for(
            asyncio.gather(first.communicate(), second.communicate()), timeout
        )
    except BaseException:
        for process in (first, second):
            _kill(process)
            await process.wait()
        raise
    return ShellResult(first.returncode or 0, out1, err1), ShellResult(second.returncode or 0, out2, err2)
