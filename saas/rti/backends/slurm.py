"""The SLURM backend: each job is a batch job (`sbatch`) on a SLURM cluster, submitted on this machine or on an SSH
login node (with an SSH profile). The adapter and the job folders live under `base`, which the compute nodes must
see (a shared filesystem, as on any cluster).

The job script runs execute.sh in the adapter folder and records its exit code; stdout/stderr go to files that the
node follows as they grow, until `squeue` says the job left the running states. Cancel is `scancel`. Resources
come from the descriptor's optional `resources` ({cores, memory, walltime, partition}), the deployment's partition
and the job's own `resources`, in that order of precedence (the job wins). SLURM counts time limits in minutes, so
the walltime is also enforced to the second inside the job (`timeout`): a job over its walltime fails with that
reason."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

from saas.core.schemas import SSHCredentials
from saas.dor.schemas import GitProcessorPointer
from saas.rti import deploy, runner
from saas.rti.backends.base import BackendError, JobContext
from saas.rti.backends.remote import PRELUDE, RemoteBackend, stream
from saas.rti.backends.shell import LocalShell, Shell, SSHShell
from saas.rti.schemas import Resources

__all__ = ["SlurmBackend", "sbatch_options"]

JOB_SCRIPT = """#!/bin/bash
# saas-middleware job: $1 config, $2 working folder, $3 job folder, $4 walltime in seconds (0: none), $5 job ID
export SAAS_JOB_ID="$5" PYTHONUNBUFFERED=1
if [ "$4" -gt 0 ]; then
    timeout --signal=TERM --kill-after=5 "$4" bash execute.sh "$1" "$2"
else
    bash execute.sh "$1" "$2"
fi
code=$?
echo "$code" > "$3/exitcode.part" && mv "$3/exitcode.part" "$3/exitcode"
exit "$code"
"""
_SUBMIT = (
    'config=$5; walltime=$6; job=$2; script="$B/procs/$3/job.sh"; shift 6; '
    'exec sbatch --parsable --job-name="saas-$job" --output="$J/stdout" --error="$J/stderr" --open-mode=append '
    '--chdir="$A" "$@" "$script" "$config" "$J/wd" "$J" "$walltime" "$job"'
)
_RUNNING = "PENDING|RUNNING|CONFIGURING|COMPLETING|SUSPENDED|REQUEUED|REQUEUE_HOLD|REQUEUE_FED|RESIZING|SIGNALING"
# Follows a job's output file until the job script wrote its exit code (checked every 0.25 s: a file, no load on
# slurmctld) or, asked every 5 s, SLURM says the job left the running states (killed, cancelled, over its limit).
_FOLLOW = PRELUDE + (
    'J="$B/jobs/$2"; tail -c +1 -s 0.2 -f --pid=$$ "$J/$4" & n=0; '
    'while [ ! -e "$J/exitcode" ]; do n=$((n + 1)); '
    'if [ $((n % 20)) -eq 0 ]; then s=$(squeue -h -j "$3" --states=all -o %T 2>&1); rc=$?; '
    f'if [ $rc -eq 0 ]; then case "$s" in {_RUNNING}|STAGE_OUT) ;; *) break ;; esac; '
    'else case "$s" in *"Invalid job id"*) break ;; esac; fi; fi; sleep 0.25; done'
)
QUEUE_POLL = 3.0
_STATE = 'squeue -h -j "$1" --states=all -o "%T|%r" 2>/dev/null || true'


def sbatch_options(resources: Resources) -> list[str]:
    options = []
    if resources.cores is not None:
        options.append(f"--cpus-per-task={resources.cores}")
    if resources.memory is not None:
        options.append(f"--mem={resources.memory}")
    if resources.partition is not None:
        options.append(f"--partition={resources.partition}")
    if resources.gpus:
        options.append(f"--gpus={resources.gpus}")
    seconds = resources.walltime_seconds()
    if seconds is not None:
        # SLURM's limit is in minutes: a minute more than ours, so the job's own `timeout` reports it first.
        options.append(f"--time={math.ceil(seconds / 60) + 1}")
    return options


class SlurmBackend(RemoteBackend):
    name = "slurm"

    def __init__(
        self,
        credentials: SSHCredentials | None,
        known_hosts: Path,
        base: str,
        proc_id: str,
        proc_path: str,
        partition: str | None = None,
    ):
        shell: Shell = LocalShell() if credentials is None else SSHShell(credentials, known_hosts)
        super().__init__(shell, base, proc_id, proc_path)
        self.partition = partition
        self.host = None if credentials is None else credentials.host

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "partition": self.partition, "remote": self.host is not None}

    def resources(self, descriptor: dict[str, Any] | None, job: dict[str, Any] | None) -> Resources:
        merged: dict[str, Any] = {}
        merged.update({k: v for k, v in (descriptor or {}).items() if v is not None})
        if self.partition is not None:
            merged["partition"] = self.partition
        merged.update({k: v for k, v in (job or {}).items() if v is not None})
        return Resources.model_validate(merged)

    async def prepare(self, shell: Shell, gpp: GitProcessorPointer) -> None:
        descriptor = (gpp.proc_descriptor.model_extra or {}).get("resources")
        try:
            self.resources(descriptor, None)
        except ValueError as e:
            raise BackendError(f"The descriptor's resources are invalid: {e}") from None
        partitions = await shell.check("sinfo -h -o %R", what="Asking SLURM for its partitions (sinfo)")
        if self.partition is not None and self.partition not in partitions.split():
            raise BackendError(
                f"SLURM on {shell.label} has no partition '{self.partition}'",
                {"partitions": partitions.split()},
            )

    async def installed(self, shell: Shell) -> None:
        await shell.check(
            PRELUDE + 'cat > "$B/procs/$2/job.sh"',
            self.base,
            self.proc_id,
            input=JOB_SCRIPT.encode(),
            what="Writing the job script",
        )

    def start_command(self, ctx: JobContext) -> tuple[str, list[str]]:
        resources = Resources.model_validate(ctx.resources)
        return _SUBMIT, [str(resources.walltime_seconds() or 0), *sbatch_options(resources)]

    def started(self, shell: Shell, ctx: JobContext, output: str) -> dict[str, Any]:
        slurm_job = output.strip().split(";")[0]
        if not slurm_job.isdigit():
            raise runner.JobFailedError(f"sbatch on {shell.label} gave no job ID: {output.strip()[:200]}")
        ctx.on_line(f"trigger:message:info:submitted as SLURM job {slurm_job}")
        walltime = Resources.model_validate(ctx.resources).walltime_seconds()
        return {"backend": self.name, "slurm_job": slurm_job, "walltime": walltime}

    async def follow(self, shell: Shell, ctx: JobContext, handle: dict[str, Any], name: str, log: Path) -> None:
        process = await shell.spawn(
            _FOLLOW,
            self.base,
            ctx.job_id,
            str(int(handle["slurm_job"])),
            name,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=1024 * 1024,
        )
        if name != "stdout":
            await stream(process, log, ctx.on_line)
            return
        watcher = asyncio.create_task(self._watch_queue(shell, ctx, str(int(handle["slurm_job"]))))
        try:
            await stream(process, log, ctx.on_line)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _watch_queue(self, shell: Shell, ctx: JobContext, slurm_job: str) -> None:
        """While the job waits in the queue, say why (a message each time SLURM's reason changes)."""
        said = ""
        while True:
            await asyncio.sleep(QUEUE_POLL)
            result = await shell.run(_STATE, slurm_job, timeout=30)
            state, _, reason = result.text().strip().partition("|")
            if state != "PENDING":
                if state:
                    return
                continue
            if reason != said:
                said = reason
                ctx.on_line(f"trigger:message:info:SLURM job {slurm_job} is queued (reason: {reason})")

    async def kill(self, shell: Shell, ctx: JobContext, handle: dict[str, Any] | None) -> None:
        if handle is None:  # cancelled while submitting: by the job's name
            await shell.run('scancel --name="saas-$1"', ctx.job_id, timeout=30)
        else:
            await shell.run('scancel "$1"', str(int(handle["slurm_job"])), timeout=30)

    async def failure(self, shell: Shell, ctx: JobContext, handle: dict[str, Any], code: int | None) -> str:
        slurm_job = str(int(handle["slurm_job"]))
        walltime = handle.get("walltime")
        state, _, why = (await shell.run(_STATE, slurm_job, timeout=30)).text().strip().partition("|")
        if code == 124 and walltime:
            return f"The job exceeded its walltime of {walltime} s (SLURM job {slurm_job})"
        if state == "TIMEOUT":
            return f"SLURM job {slurm_job} exceeded its time limit (TIMEOUT)"
        if code is None:
            detail = f"state {state}" + (f", reason {why}" if why and why != "None" else "") if state else "no state"
            return f"SLURM job {slurm_job} ended without finishing execute.sh ({detail})"
        text = deploy.tail(ctx.logs / runner.STDERR_LOG).strip()
        return f"execute.sh exited with code {code} (SLURM job {slurm_job})" + (f": {text[-500:]}" if text else "")
