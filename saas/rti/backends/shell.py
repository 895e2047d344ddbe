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
import signal
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saas.core.errors import AuthenticationError, UnreachableError
from saas.core.schemas import SSHCredentials
from saas.rti.backends.base import BackendError

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
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAAS_")}
        return await asyncio.create_subprocess_exec(
            *self.argv(script, *args), env=env, start_new_session=True, **kwargs
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


class LocalShell(Shell):
    pass


class SSHShell(Shell):
    """Runs bash scripts on `credentials.host` as `credentials.login` (needs an open `session()`)."""

    remote = True

    def __init__(self, credentials: SSHCredentials, known_hosts: Path):
        self._credentials = credentials
        self._known_hosts = known_hosts
        self._key_file: str | None = None
        self._control: str | None = None
        host, port = credentials.host_and_port()
        self._host, self._port = host, port
        self.label = f"{credentials.login}@{credentials.host}"

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Shell]:
        """Write the key, log in once (a ControlMaster: later commands share its connection, so the handshake and
        authentication happen once per session), and remove the key and stop the master at the end."""
        if shutil.which("ssh") is None:
            raise BackendError("The 'ssh' client is not installed on this node")
        folder = await asyncio.to_thread(tempfile.mkdtemp, prefix="saas-ssh-")  # mode 0700
        shell = SSHShell(self._credentials, self._known_hosts)
        shell._key_file = os.path.join(folder, "key")
        shell._control = os.path.join(folder, "cm")

        def write_key() -> None:
            key = self._credentials.private_key()
            fd = os.open(shell._key_file or "", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key if key.endswith("\n") else key + "\n")

        log = os.path.join(folder, "master.log")
        try:
            await asyncio.to_thread(write_key)
            master = await asyncio.create_subprocess_exec(
                *shell._options(control="yes"),
                "-N",
                "-f",
                "-E",
                log,
                "-o",
                "ControlPersist=60",  # a master left behind by a crashed node ends a minute after its last use
                "-l",
                self._credentials.login,
                "--",
                self._host,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                code = await asyncio.wait_for(master.wait(), SSH_TIMEOUT)
            except BaseException:
                _kill(master)
                await master.wait()
                raise
            if code != 0:
                error = await asyncio.to_thread(Path(log).read_bytes) if os.path.exists(log) else b""
                shell.check_connection(ShellResult(255, b"", error))
            try:
                yield shell
            finally:
                stop = await asyncio.create_subprocess_exec(
                    *shell._options(control="no"),
                    "-O",
                    "exit",
                    "-l",
                    self._credentials.login,
                    "--",
                    self._host,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 10)
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)

    def _options(self, control: str) -> list[str]:
        if self._key_file is None or self._control is None:
            raise RuntimeError("SSHShell used outside session()")
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
            "ControlMaster": control,
            "ControlPath": self._control,
        }
        argv = ["ssh", "-F", "/dev/null", "-T", "-i", self._key_file]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        if self._port is not None:
            argv += ["-p", str(self._port)]
        return argv

    def argv(self, script: str, *args: str) -> list[str]:
        remote = " ".join(["bash", "-c", shlex.quote(script), "_", *(shlex.quote(a) for a in args)])
        return [*self._options(control="no"), "-l", self._credentials.login, "--", self._host, remote]

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
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def pipe(
    source: list[str], target: list[str], timeout: float, cwd: Path | None = None
) -> tuple[ShellResult, ShellResult]:
    """Run `source | target` (two argv lists, e.g. a local `tar -c` into an ssh `tar -x`); both results."""
    read_fd, write_fd = os.pipe()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAAS_")}
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
