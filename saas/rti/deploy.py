"""Deploying a processor: clone the adapter repository at the pinned commit and run `install.sh <config>`.

The repository URL is untrusted: only the sources the node allows (`saas.git`); a GitHub token reaches git
only through `GIT_ASKPASS` and that one process's environment. git and install.sh run as asyncio subprocesses (the
loop never blocks); install.sh runs in its own process group with a timeout, its output goes to `install.log`."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saas import _compat
from saas.core.errors import InvalidInputError, RTIError, SaaSError
from saas.core.schemas import GithubCredentials
from saas.dor.schemas import GitProcessorPointer
from saas.git import askpass_env, git_env, redact, repo_folder
from saas.rti import process
from saas.rti.cgroups import Limits
from saas.rti.sandbox import Sandbox

__all__ = [
    "DeploymentError",
    "adapter_dir",
    "clone",
    "install",
    "kill_leftover_install",
    "remove",
    "run_install",
    "strip_carriage_returns",
    "tail",
]

INSTALL_TIMEOUT = 600.0
CLONE_TIMEOUT = 600.0
TAIL_BYTES = 2000
INSTALL_PID = "install.pid"


class DeploymentError(RTIError, InvalidInputError):
    """Cloning or installing the adapter failed; `details['log_tail']` holds the end of the log."""


LineHandler = Callable[[str], None]


def adapter_dir(proc_root: Path, gpp: GitProcessorPointer) -> Path:
    return proc_root / "repo" / repo_folder(gpp.proc_path)


def tail(path: Path, size: int = TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


async def _run(
    sandbox: Sandbox | None,
    args: list[str],
    cwd: Path,
    env: dict[str, str],
    log: Path,
    timeout: float,
    on_line: LineHandler | None = None,
    pid_file: Path | None = None,
    **sandboxed: Any,
) -> int:
    """Run `args` (in the sandbox, when given, with `sandboxed` passed to `process.spawn`) with stdout and stderr
    appended to `log` (and, with `on_line`, each line also handed to it); every process it started is killed on a
    timeout or cancellation, and when it ends."""
    with open(log, "ab") as out:
        child = await process.spawn(
            sandbox,
            args,
            cwd=cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            **sandboxed,
        )
        assert child.stdout is not None
        if pid_file is not None:
            await asyncio.to_thread(pid_file.write_text, str(child.pid))

        def line(text: str) -> None:
            if on_line is not None:
                on_line(text.rstrip("\r\n"))

        try:
            async with _compat.timeout(timeout):
                await process.pump(child.stdout, out, line)
                return await child.wait()
        finally:
            await child.close()
            if pid_file is not None:
                await asyncio.to_thread(pid_file.unlink, True)


async def install(
    proc_root: Path,
    gpp: GitProcessorPointer,
    credentials: GithubCredentials | None = None,
    install_timeout: float = INSTALL_TIMEOUT,
    sandbox: Sandbox | None = None,
    limits: Limits | None = None,
    *,
    allow_local_git: bool = False,
) -> Path:
    """Clone into `<proc_root>/repo` at the commit and run install.sh (in the sandbox); returns the adapter folder."""
    folder = await clone(proc_root, gpp, credentials, allow_local_git=allow_local_git)
    repo = proc_root / "repo"
    if sandbox is not None:
        await asyncio.to_thread(sandbox.own, repo, True)  # the adapter's to write during install.sh
    await run_install(
        folder,
        gpp.proc_config,
        proc_root / "install.log",
        install_timeout,
        sandbox=sandbox,
        visible=repo,
        limits=limits,
        marker=f"install-{proc_root.name}",
        pid_file=proc_root / INSTALL_PID,
    )
    return folder


async def clone(
    proc_root: Path,
    gpp: GitProcessorPointer,
    credentials: GithubCredentials | None = None,
    *,
    allow_local_git: bool = False,
) -> Path:
    """Clone into `<proc_root>/repo` (emptied first) at the commit, if the node allows the source (see
    `saas.git`; else `DeploymentError` with the reason); returns the adapter folder (with install.sh).
    The log goes to `<proc_root>/install.log`; a GitHub token never reaches it."""
    try:
        env = process.tool_env(await asyncio.to_thread(git_env, gpp.source, allow_local_git))
    except SaaSError as e:
        raise DeploymentError(e.reason, {"log_tail": ""}) from None
    await asyncio.to_thread(_reset, proc_root)
    log = proc_root / "install.log"
    secret: str | None = None
    askpass_dir = proc_root / ".askpass"
    if credentials is not None:
        askpass_dir.mkdir(mode=0o700)
        env |= askpass_env(askpass_dir, credentials)
        secret = credentials.token()
    repo = proc_root / "repo"
    try:
        code = await _run(
            None,
            ["git", "clone", "--quiet", "--no-checkout", "--", gpp.source, str(repo)],
            proc_root,
            env,
            log,
            CLONE_TIMEOUT,
        )
        if code == 0:
            git = ["git", "-C", str(repo), "checkout", "--quiet", gpp.commit_id]
            code = await _run(None, git, proc_root, env, log, 120)
    except TimeoutError:
        raise DeploymentError(f"Cloning '{gpp.source}' timed out", {"log_tail": redact(tail(log), secret)}) from None
    finally:
        shutil.rmtree(askpass_dir, ignore_errors=True)
    if code != 0:
        raise DeploymentError(
            f"Could not clone '{gpp.source}' at {gpp.commit_id[:12]}", {"log_tail": redact(tail(log), secret)}
        )
    folder = adapter_dir(proc_root, gpp).resolve()
    if not folder.is_relative_to(repo.resolve()) or not (folder / "install.sh").is_file():
        raise DeploymentError(f"No install.sh in '{gpp.proc_path}'", {"log_tail": ""})
    await asyncio.to_thread(strip_carriage_returns, folder)
    return folder


def strip_carriage_returns(folder: Path) -> list[str]:
    """Give install.sh and execute.sh Unix line endings (an adapter written on Windows has CRLF, which bash reads
    as part of each command; the original middleware stripped them too). Only the node's own clone is changed;
    symbolic links are left alone. Returns the names changed. Blocks."""
    changed = []
    for name in ("install.sh", "execute.sh"):
        path = folder / name
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\r" in data:
            path.write_bytes(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
            changed.append(name)
    return changed


async def run_install(
    folder: Path,
    config: str,
    log: Path,
    install_timeout: float = INSTALL_TIMEOUT,
    on_line: LineHandler | None = None,
    *,
    sandbox: Sandbox | None,
    visible: Path | None = None,
    limits: Limits | None = None,
    marker: str = "install",
    pid_file: Path | None = None,
) -> None:
    """Run `install.sh <config>` in the adapter folder: in the sandbox (`sandbox=None` only for a developer's own
    adapter on their machine) with the folder (or `visible` around it) writable and the network allowed, in a
    cgroup of its own with `limits`, a minimal environment and a timeout; the log gets every line (`on_line` too).
    `pid_file` records the process group until it ends, so a restarted node kills what a crashed one left."""
    home = visible or folder
    env = process.child_env(home, {"SAAS_JOB_ID": marker})
    try:
        code = await _run(
            sandbox,
            ["bash", "install.sh", config],
            folder,
            env,
            log,
            install_timeout,
            on_line,
            name=marker,
            rw=[home],
            network=True,
            limits=limits,
            pid_file=pid_file,
        )
    except TimeoutError:
        raise DeploymentError(
            f"install.sh did not finish within {install_timeout:g} s", {"log_tail": tail(log)}
        ) from None
    if code != 0:
        raise DeploymentError(f"install.sh exited with code {code}", {"log_tail": tail(log)})


def kill_leftover_install(proc_root: Path) -> bool:
    """After a crash of the node during a deployment: kill the install.sh it left running. Blocks."""
    try:
        pgid = int((proc_root / INSTALL_PID).read_text())
    except (OSError, ValueError):
        return False
    return process.kill_leftover(pgid, f"install-{proc_root.name}")


def _reset(proc_root: Path) -> None:
    shutil.rmtree(proc_root, ignore_errors=True)
    proc_root.mkdir(parents=True)


def remove(proc_root: Path) -> None:
    shutil.rmtree(proc_root, ignore_errors=True)
