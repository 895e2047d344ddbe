"""Deploying a processor: clone the adapter repository at the pinned commit and run `install.sh <config>`.

The repository URL is untrusted (see `saas.dor.gpp`): only file, http(s) and ssh; a GitHub token reaches git only
through `GIT_ASKPASS` and that one process's environment. git and install.sh run as asyncio subprocesses (the loop
never blocks); install.sh runs in its own process group with a timeout, its output goes to `install.log`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
from collections.abc import Callable
from pathlib import Path

from saas.core.errors import InvalidInputError, RTIError
from saas.core.schemas import GithubCredentials
from saas.dor.gpp import _ASKPASS, _check_proc_path, _check_source
from saas.dor.schemas import GitProcessorPointer

__all__ = ["DeploymentError", "adapter_dir", "clone", "install", "remove", "run_install", "tail"]

INSTALL_TIMEOUT = 600.0
CLONE_TIMEOUT = 600.0
TAIL_BYTES = 2000


class DeploymentError(RTIError, InvalidInputError):
    """Cloning or installing the adapter failed; `details['log_tail']` holds the end of the log."""


LineHandler = Callable[[str], None]


def adapter_dir(proc_root: Path, gpp: GitProcessorPointer) -> Path:
    return proc_root / "repo" / _check_proc_path(gpp.proc_path)


def tail(path: Path, size: int = TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


async def _run(
    args: list[str], cwd: Path, env: dict[str, str], log: Path, timeout: float, on_line: LineHandler | None = None
) -> int:
    """Run `args` in its own process group with stdout and stderr appended to `log` (and, with `on_line`, each line
    also handed to it); the whole group is killed on a timeout or cancellation."""
    with open(log, "ab") as out:
        target = asyncio.subprocess.PIPE if on_line else out
        process = await asyncio.create_subprocess_exec(
            *args,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=target,
            stderr=asyncio.subprocess.STDOUT if on_line else out,
            start_new_session=True,
        )

        async def pump() -> None:
            assert process.stdout is not None and on_line is not None
            while line := await process.stdout.readline():
                out.write(line)
                on_line(line.decode("utf-8", "replace").rstrip("\r\n"))

        try:
            waiting = asyncio.gather(pump(), process.wait()) if on_line else process.wait()
            await asyncio.wait_for(waiting, timeout)
            assert process.returncode is not None
            return process.returncode
        except (TimeoutError, asyncio.CancelledError):
            kill_group(process.pid)
            await process.wait()
            raise


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def install(
    proc_root: Path,
    gpp: GitProcessorPointer,
    credentials: GithubCredentials | None = None,
    install_timeout: float = INSTALL_TIMEOUT,
) -> Path:
    """Clone into `<proc_root>/repo` at the commit and run install.sh; returns the adapter folder."""
    folder = await clone(proc_root, gpp, credentials)
    await run_install(folder, gpp.proc_config, proc_root / "install.log", install_timeout)
    return folder


async def clone(proc_root: Path, gpp: GitProcessorPointer, credentials: GithubCredentials | None = None) -> Path:
    """Clone into `<proc_root>/repo` (emptied first) at the commit; returns the adapter folder (with install.sh).
    The log goes to `<proc_root>/install.log`; a GitHub token never reaches it."""
    _check_source(gpp.source)
    await asyncio.to_thread(_reset, proc_root)
    log = proc_root / "install.log"
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ALLOW_PROTOCOL": "file:https:http:ssh",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
    }
    secret: str | None = None
    askpass_dir = proc_root / ".askpass"
    if credentials is not None:
        askpass_dir.mkdir(mode=0o700)
        askpass = askpass_dir / "askpass.sh"
        askpass.write_text(_ASKPASS)  # reads the secret from its environment; holds none itself
        askpass.chmod(stat.S_IRWXU)
        secret = credentials.token()
        env |= {"GIT_ASKPASS": str(askpass), "SAAS_GIT_USERNAME": credentials.login, "SAAS_GIT_PASSWORD": secret}
    repo = proc_root / "repo"
    try:
        code = await _run(
            ["git", "clone", "--quiet", "--no-checkout", "--", gpp.source, str(repo)],
            proc_root,
            env,
            log,
            CLONE_TIMEOUT,
        )
        if code == 0:
            code = await _run(["git", "-C", str(repo), "checkout", "--quiet", gpp.commit_id], proc_root, env, log, 120)
    except TimeoutError:
        raise DeploymentError(f"Cloning '{gpp.source}' timed out", {"log_tail": _clean(tail(log), secret)}) from None
    finally:
        shutil.rmtree(askpass_dir, ignore_errors=True)
    if code != 0:
        raise DeploymentError(
            f"Could not clone '{gpp.source}' at {gpp.commit_id[:12]}", {"log_tail": _clean(tail(log), secret)}
        )
    folder = adapter_dir(proc_root, gpp).resolve()
    if not folder.is_relative_to(repo.resolve()) or not (folder / "install.sh").is_file():
        raise DeploymentError(f"No install.sh in '{gpp.proc_path}'", {"log_tail": ""})
    return folder


async def run_install(
    folder: Path, config: str, log: Path, install_timeout: float = INSTALL_TIMEOUT, on_line: LineHandler | None = None
) -> None:
    """Run `install.sh <config>` in the adapter folder on this machine (own process group, no `SAAS_*` variables,
    timeout, log; `on_line` also gets each output line)."""
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("SAAS_")}
    try:
        code = await _run(["bash", "install.sh", config], folder, plain_env, log, install_timeout, on_line)
    except TimeoutError:
        raise DeploymentError(
            f"install.sh did not finish within {install_timeout:g} s", {"log_tail": tail(log)}
        ) from None
    if code != 0:
        raise DeploymentError(f"install.sh exited with code {code}", {"log_tail": tail(log)})


def _clean(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def _reset(proc_root: Path) -> None:
    shutil.rmtree(proc_root, ignore_errors=True)
    proc_root.mkdir(parents=True)


def remove(proc_root: Path) -> None:
    shutil.rmtree(proc_root, ignore_errors=True)
