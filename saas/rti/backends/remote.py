"""What the SSH and SLURM backends share: a folder tree on the execution host and the moves between it and this
node. All transfers are `tar` streams through the backend's `Shell` (this machine or ssh).

Layout on the execution host, under `base` (relative paths are relative to the login's home):
`procs/<proc_id>/repo/` the adapter repository at the commit (without .git), `procs/<proc_id>/install.log`,
`jobs/<job_id>/wd/` the working folder, `jobs/<job_id>/{stdout,stderr}` what execute.sh writes and
`jobs/<job_id>/exitcode` its exit code once it finished."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

from saas.core.schemas import GithubCredentials
from saas.dor.schemas import GitProcessorPointer
from saas.git import repo_folder
from saas.rti import deploy, inputs, runner
from saas.rti.backends.base import Backend, BackendError, JobContext
from saas.rti.backends.shell import Shell, pipe
from saas.rti.process import kill_group, pump

__all__ = ["RemoteBackend"]

TRANSFER_TIMEOUT = 3600.0
# Every script starts with this: $1 is the base folder, made absolute against $HOME.
PRELUDE = 'B=$1; case "$B" in /*) ;; *) B="$HOME/$B" ;; esac; '
# Unpacks the inputs (stdin) into a fresh job folder, then runs a backend's start command in the same connection:
# $2 job ID, $3 processor ID, $4 adapter path in the repository, $5 config, then the backend's own arguments.
STAGE = PRELUDE + (
    'J="$B/jobs/$2"; A="$B/procs/$3/repo/$4"; rm -rf "$J" && mkdir -p "$J/wd" && tar -x -C "$J/wd" || exit 95; '
    ': > "$J/stdout"; : > "$J/stderr"; '
)


class RemoteBackend(Backend):
    """Install into and run jobs in a folder tree reached through `shell` (subclasses say how jobs start)."""

    reattachable = True

    def __init__(self, shell: Shell, base: str, proc_id: str, proc_path: str):
        self.shell = shell
        self.base = base
        self.proc_id = proc_id
        self.proc_path = str(repo_folder(proc_path))

    # -- deploy ---------------------------------------------------------------------------------------------------

    async def install(
        self,
        proc_root: Path,
        gpp: GitProcessorPointer,
        credentials: GithubCredentials | None,
        timeout: float,
        *,
        allow_local_git: bool = False,
    ) -> None:
        await deploy.clone(proc_root, gpp, credentials, allow_local_git=allow_local_git)
        log = proc_root / "install.log"
        try:
            async with self.shell.session() as shell:
                await self.prepare(shell, gpp)
                _, unpacked = await pipe(
                    ["tar", "-c", "-C", str(proc_root / "repo"), "--exclude=./.git", "."],
                    shell.argv(
                        PRELUDE + 'd="$B/procs/$2"; rm -rf "$d" && mkdir -p "$d/repo" && tar -x -C "$d/repo"',
                        self.base,
                        self.proc_id,
                    ),
                    TRANSFER_TIMEOUT,
                )
                shell.check_connection(unpacked)
                if unpacked.code != 0:
                    raise BackendError(f"Copying the adapter to {shell.label} failed: {unpacked.error_text()}")
                await self.installed(shell)
                await self._install_remote(shell, gpp.proc_config, log, timeout)
        except BackendError as e:
            raise deploy.DeploymentError(e.reason, {"log_tail": deploy.tail(log)}) from None

    async def prepare(self, shell: Shell, gpp: GitProcessorPointer) -> None:
        """Checks before copying the adapter (e.g. that SLURM answers)."""

    async def installed(self, shell: Shell) -> None:
        """After the adapter was copied to `procs/<proc_id>/repo` (before install.sh)."""

    async def _install_remote(self, shell: Shell, config: str, log: Path, timeout: float) -> None:
        with open(log, "ab") as out:
            process = await shell.spawn(
                PRELUDE + 'cd "$B/procs/$2/repo/$3" && exec bash install.sh "$4"',
                self.base,
                self.proc_id,
                self.proc_path,
                config,
                stdout=out,
                stderr=out,
            )
            try:
                code = await asyncio.wait_for(process.wait(), timeout)
            except (TimeoutError, asyncio.CancelledError) as e:
                _kill(process)
                await process.wait()
                if isinstance(e, TimeoutError):
                    raise deploy.DeploymentError(
                        f"install.sh did not finish within {timeout:g} s on {shell.label}",
                        {"log_tail": deploy.tail(log)},
                    ) from None
                raise
        if code == 255 and self.shell.remote:
            raise BackendError(f"SSH to {shell.label} failed while running install.sh")
        if code != 0:
            raise deploy.DeploymentError(
                f"install.sh exited with code {code} on {shell.label}", {"log_tail": deploy.tail(log)}
            )

    async def remove(self, proc_root: Path) -> None:
        with contextlib.suppress(Exception):
            async with self.shell.session() as shell:
                await shell.run(PRELUDE + 'rm -rf "$B/procs/$2"', self.base, self.proc_id, timeout=60)
        await self.close()

    async def close(self) -> None:
        await self.shell.close()

    # -- jobs -----------------------------------------------------------------------------------------------------

    async def execute(self, ctx: JobContext) -> None:
        try:
            await self._execute(ctx)
        except BackendError as e:  # e.g. the host refused the login: the job fails with that reason
            raise runner.JobFailedError(e.reason) from None

    async def _execute(self, ctx: JobContext) -> None:
        async with self.shell.session() as shell:
            handle = ctx.handle
            try:
                if handle is None:
                    handle = await self._stage_and_start(shell, ctx)
                    await ctx.on_handle(handle)
                else:
                    await asyncio.to_thread(_reset_logs, ctx.logs)
                await asyncio.gather(
                    self.follow(shell, ctx, handle, "stdout", ctx.logs / runner.STDOUT_LOG),
                    self.follow(shell, ctx, handle, "stderr", ctx.logs / runner.STDERR_LOG),
                )
                code = await self._fetch(shell, ctx)
                if code is None or code != 0:
                    raise runner.JobFailedError(await self.failure(shell, ctx, handle, code))
            except BaseException:
                if ctx.detaching():
                    raise  # the node stops: the job runs on and is re-attached after the restart
                with contextlib.suppress(Exception):  # also when cancelled while starting (no handle yet)
                    await asyncio.shield(self.kill(shell, ctx, handle))
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._cleanup(shell, ctx))
                raise

    @abc.abstractmethod
    def start_command(self, ctx: JobContext) -> tuple[str, list[str]]:
        """The script (run after STAGE, with its variables) that starts execute.sh, and its extra arguments."""

    @abc.abstractmethod
    def started(self, shell: Shell, ctx: JobContext, output: str) -> dict[str, Any]:
        """The handle that finds the job again, from the start command's output."""

    @abc.abstractmethod
    async def follow(self, shell: Shell, ctx: JobContext, handle: dict[str, Any], name: str, log: Path) -> None:
        """Stream `jobs/<id>/<name>` into `log` and `ctx.on_line` until the job ended."""

    @abc.abstractmethod
    async def kill(self, shell: Shell, ctx: JobContext, handle: dict[str, Any] | None) -> None:
        """Stop the job and every process it started (`handle` None: it may have been starting)."""

    async def failure(self, shell: Shell, ctx: JobContext, handle: dict[str, Any], code: int | None) -> str:
        """The reason a job did not exit 0 (`code` None: it ended without writing its exit code)."""
        text = deploy.tail(ctx.logs / runner.STDERR_LOG).strip()
        if code is None:
            return f"execute.sh on {shell.label} ended without an exit code (killed?)"
        return f"execute.sh exited with code {code}" + (f": {text[-500:]}" if text else "")

    async def _stage_and_start(self, shell: Shell, ctx: JobContext) -> dict[str, Any]:
        script, args = self.start_command(ctx)
        packed, started = await pipe(
            ["tar", "-c", "-C", str(ctx.wd), "--exclude=./.store", "."],
            shell.argv(STAGE + script, self.base, ctx.job_id, self.proc_id, self.proc_path, ctx.config, *args),
            TRANSFER_TIMEOUT,
        )
        shell.check_connection(started)
        if packed.code != 0 or started.code == 95:
            failed = packed if packed.code != 0 else started
            raise runner.JobFailedError(f"Staging the inputs on {shell.label} failed: {failed.error_text()}")
        if started.code != 0:
            raise runner.JobFailedError(f"Starting the job on {shell.label} failed: {started.error_text()}")
        return self.started(shell, ctx, started.text())

    async def _fetch(self, shell: Shell, ctx: JobContext) -> int | None:
        """Copy the exit code and the outputs that exist back into the local working folder."""
        incoming = ctx.wd / ".store" / "remote"
        await asyncio.to_thread(_fresh_dir, incoming)
        script = (
            PRELUDE + 'J="$B/jobs/$2"; cd "$J" || exit 3; shift 2; set -- exitcode "$@"; files=(); '
            'for f in "$@"; do [ -e "$f" ] && files+=("$f"); done; tar -c -h -- "${files[@]}"; rc=$?; '
            'cd / && rm -rf "$J"; exit $rc'  # the job folder goes once its outputs are on their way
        )
        names = [f"wd/{inputs.input_path(ctx.wd, n).name}" for n in ctx.outputs]
        packed, unpacked = await pipe(
            shell.argv(script, self.base, ctx.job_id, *names),
            ["tar", "-x", "-C", str(incoming), "--no-same-owner", "--no-same-permissions"],
            TRANSFER_TIMEOUT,
        )
        shell.check_connection(packed)
        if packed.code != 0 or unpacked.code != 0:
            raise runner.JobFailedError(
                f"Fetching the outputs from {shell.label} failed: {(packed if packed.code else unpacked).error_text()}"
            )
        return await asyncio.to_thread(_take_outputs, incoming, ctx.wd, ctx.outputs)

    async def _cleanup(self, shell: Shell, ctx: JobContext) -> None:
        await shell.run(PRELUDE + 'rm -rf "$B/jobs/$2"', self.base, ctx.job_id, timeout=60)


def _fresh_dir(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _take_outputs(incoming: Path, wd: Path, outputs: list[str]) -> int | None:
    """Move fetched outputs into the working folder (regular files only); the exit code, if there was one."""
    import shutil

    try:
        for name in outputs:
            source = incoming / "wd" / name
            if source.is_file() and not source.is_symlink():
                os.replace(source, inputs.input_path(wd, name))
        code_file = incoming / "exitcode"
        if not code_file.is_file():
            return None
        try:
            return int(code_file.read_text().strip())
        except ValueError:
            return None
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def _reset_logs(logs: Path) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    for name in (runner.STDOUT_LOG, runner.STDERR_LOG):
        (logs / name).write_bytes(b"")


def _kill(process: asyncio.subprocess.Process) -> None:
    kill_group(process.pid)


async def stream(process: asyncio.subprocess.Process, log: Path, on_line: Any) -> None:
    """Pump a follower's stdout into the log (and trigger parsing); kill the follower if we are cancelled."""
    assert process.stdout is not None
    try:
        with open(log, "ab", buffering=0) as sink:
            await pump(process.stdout, sink, on_line)
        await process.wait()
    except BaseException:
        _kill(process)
        await process.wait()
        raise
