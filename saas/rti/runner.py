"""The runner: runs one job's adapter. `execute.sh <config> <wd>` in its own process group (in the sandbox) with
stdout/stderr streamed to log files and parsed live for triggers.

The inputs (`saas.rti.inputs`) and outputs (`saas.rti.outputs`) of a job have their own modules, which take the
RTI's narrow ports (`saas.rti.ports`); `fetch_input` here is the node-level entry to fetching an input."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from saas._compat import timeout
from saas.core.triggers import parse_trigger
from saas.rti import inputs, process
from saas.rti.cgroups import Limits
from saas.rti.jobs import JobFailedError
from saas.rti.sandbox import Sandbox

if TYPE_CHECKING:
    from saas.node import Node
    from saas.rti.placement import InputLocation
    from saas.rti.schemas import Task

__all__ = ["JobFailedError", "execute", "fetch_input", "parse_trigger"]


async def fetch_input(node: Node, item: Task.InputReference, location: InputLocation, wd: Path, user_iid: str) -> None:
    """`saas.rti.inputs.fetch_input` with the node's DOR, network and keys."""
    from saas.rti.ports import NodeNetwork, local_dor

    await inputs.fetch_input(local_dor(node), NodeNetwork(node), node.keystore, item, location, wd, user_iid)


KILL_GRACE = 2.0
STDOUT_LOG = "execute_stdout.log"
STDERR_LOG = "execute_stderr.log"


async def execute(
    sandbox: Sandbox | None,
    adapter: Path,
    config: str,
    wd: Path,
    logs: Path,
    on_line: Callable[[str], None],
    on_start: Callable[[int], Awaitable[None]] | None = None,
    job_id: str = "",
    limits: Limits | None = None,
    network: bool = True,
    visible: Path | None = None,
) -> None:
    """Run `execute.sh <config> <wd>` in the sandbox (the adapter folder, or `visible` around it, read-only; `wd`
    read-write); raise `JobFailedError` on a non-zero exit, a limit exceeded or the walltime passed. Cancelling this
    coroutine kills every process of the job (SIGTERM, then SIGKILL after a grace period) before it propagates."""
    limits = limits or Limits()
    child = await process.spawn(
        sandbox,
        ["bash", "execute.sh", config, str(wd)],
        cwd=adapter,
        name=f"job-{job_id}" if job_id else "",
        ro=[visible or adapter],
        rw=[wd],
        network=network,
        limits=limits,
        env=process.child_env(visible or adapter, {"SAAS_JOB_ID": job_id}),  # the id finds leftovers
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        if on_start is not None:
            await on_start(child.pid)
        with open(logs / STDOUT_LOG, "ab", buffering=0) as out, open(logs / STDERR_LOG, "ab", buffering=0) as err:
            async with timeout(limits.walltime):
                _, err_tail = await asyncio.gather(
                    process.pump(child.stdout, out, on_line), process.pump(child.stderr, err, on_line)
                )
                code = await child.wait()
    except TimeoutError:
        exceeded = await child.close()
        also = f"; before that {exceeded}" if exceeded else ""
        raise JobFailedError(f"The job exceeded its walltime of {limits.walltime:g} s and was killed{also}") from None
    except BaseException:
        await child.stop(KILL_GRACE)
        await child.close()
        raise
    exceeded = await child.close()  # no process of the job survives it
    if exceeded is not None:
        raise JobFailedError(f"execute.sh was stopped: {exceeded}")
    if code != 0:
        text = err_tail.decode("utf-8", "replace").strip()
        raise JobFailedError(f"execute.sh exited with code {code}" + (f": {text[-500:]}" if text else ""))
