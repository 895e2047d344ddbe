"""The SSH backend: the adapter is installed on a remote host and execute.sh runs there.

A job's inputs are copied to `jobs/<job_id>/wd` on the host, execute.sh runs detached from the SSH connection in
its own session (`setsid`; its process group ID is the job's handle), writing stdout/stderr to files there that
the node follows (`tail -f`) into its own log files and trigger parser. When it ended, the exit code and the
outputs come back into the local working folder, so postprocessing is the local one. Cancel kills the remote
process group (TERM, then KILL). Because the job does not depend on the connection, a restarted node follows it
again (re-attach) instead of failing it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from saas.core.schemas import SSHCredentials
from saas.rti import runner
from saas.rti.backends.base import JobContext
from saas.rti.backends.remote import PRELUDE, RemoteBackend, stream
from saas.rti.backends.shell import Shell, SSHShell

__all__ = ["SSHBackend"]

KILL_GRACE = runner.KILL_GRACE

_START = (
    'cd "$A" || exit 97; export SAAS_JOB_ID="$2" PYTHONUNBUFFERED=1; '
    'setsid bash -c \'echo $$; echo $$ > "$1/pid"; exec >"$1/stdout" 2>"$1/stderr" </dev/null; '
    'bash execute.sh "$2" "$1/wd"; '
    'echo $? > "$1/exitcode.part"; mv "$1/exitcode.part" "$1/exitcode"\' _ "$J" "$5" </dev/null &'
)
# Follows until the exit code is written or the process is gone. Not `tail --pid=<job>`: kill(pid, 0) holds for a
# zombie, and an orphaned job may wait for its reaper for seconds. tail ends once this script has ended.
_FOLLOW = PRELUDE + (
    'J="$B/jobs/$2"; tail -c +1 -s 0.1 -f --pid=$$ "$J/$4" & '
    'alive() { local s; s=$(sed -n "s/.*) \\(.\\).*/\\1/p" "/proc/$1/stat" 2>/dev/null) || return 1; '
    '[ -n "$s" ] && [ "$s" != Z ]; }; '
    'while [ ! -e "$J/exitcode" ] && alive "$3"; do sleep 0.1; done'
)
# Without a handle (cancelled while starting): the process ID the job wrote, if it started within a second.
_FIND = PRELUDE + (
    'J="$B/jobs/$2"; for i in $(seq 10); do [ -s "$J/pid" ] && break; sleep 0.1; done; '
    '[ -s "$J/pid" ] || exit 0; set -- "$(cat "$J/pid")"; '
)
_KILL = (
    'kill -TERM -- "-$1" 2>/dev/null || exit 0; '
    f'for i in $(seq {int(KILL_GRACE * 10)}); do sleep 0.1; kill -0 -- "-$1" 2>/dev/null || exit 0; done; '
    'kill -KILL -- "-$1" 2>/dev/null; exit 0'
)


class SSHBackend(RemoteBackend):
    name = "ssh"

    def __init__(self, credentials: SSHCredentials, known_hosts: Path, base: str, proc_id: str, proc_path: str):
        super().__init__(SSHShell(credentials, known_hosts), base, proc_id, proc_path)
        self.host = credentials.host
        self.login = credentials.login

    def start_command(self, ctx: JobContext) -> tuple[str, list[str]]:
        return _START, []

    def started(self, shell: Shell, ctx: JobContext, output: str) -> dict[str, Any]:
        try:
            pid = int(output.strip().splitlines()[0])
        except (ValueError, IndexError):
            raise runner.JobFailedError(f"Starting execute.sh on {shell.label} gave no process ID") from None
        return {"backend": self.name, "pid": pid}

    async def follow(self, shell: Shell, ctx: JobContext, handle: dict[str, Any], name: str, log: Path) -> None:
        import asyncio

        process = await shell.spawn(
            _FOLLOW,
            self.base,
            ctx.job_id,
            str(int(handle["pid"])),
            name,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=1024 * 1024,
        )
        await stream(process, log, ctx.on_line)

    async def kill(self, shell: Shell, ctx: JobContext, handle: dict[str, Any] | None) -> None:
        if handle is None:
            await shell.run(_FIND + _KILL, self.base, ctx.job_id, timeout=30)
        else:
            await shell.run(_KILL, str(int(handle["pid"])), timeout=30)
