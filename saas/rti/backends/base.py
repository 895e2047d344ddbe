"""The interface every execution backend implements, and what a job gives it (`JobContext`).

A backend installs a processor (`install`) and runs one job's `execute.sh` (`execute`): the working folder on this
node holds the inputs before and the outputs after, and stdout/stderr lines reach `JobContext.on_line` (for triggers)
and the job's log files as they are written. So staging, status, logs and postprocessing are the same for every
backend. A backend that runs jobs outside this node's process tree (`reattachable`) hands a small JSON `handle` to
`JobContext.on_handle` once the job started; after a restart of the node `execute` is called again with that
handle and follows the job to its end instead of starting it again."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saas.core.errors import InvalidInputError, RTIError
from saas.core.schemas import GithubCredentials
from saas.dor.schemas import GitProcessorPointer
from saas.rti.cgroups import Limits

__all__ = ["Backend", "BackendError", "JobContext", "UnusableBackend"]


class BackendError(RTIError, InvalidInputError):
    """A backend cannot be used as configured (bad credentials, unreachable host, bad resources)."""


@dataclass
class JobContext:
    job_id: str
    proc_id: str
    config: str
    adapter: Path  # the adapter folder on this node (the local backend runs it, remote backends copied it)
    wd: Path  # inputs are here before `execute`, outputs must be here after it
    logs: Path  # execute_stdout.log / execute_stderr.log are appended here
    outputs: list[str]  # the descriptor's output names (what remote backends fetch back)
    on_line: Callable[[str], None]
    on_handle: Callable[[dict[str, Any]], Awaitable[None]]
    detaching: Callable[[], bool] = lambda: False  # True while the node stops: leave remote jobs running
    resources: dict[str, Any] = field(default_factory=dict)
    limits: Limits | None = None  # what the sandboxed job may use (local backend)
    network: bool = True  # may the job use the network (local backend)
    visible: Path | None = None  # the folder around the adapter the job sees read-only (the repository)
    handle: dict[str, Any] | None = None  # set when re-attaching after a restart


class Backend(abc.ABC):
    name: str = ""
    reattachable: bool = False

    @abc.abstractmethod
    async def install(
        self,
        proc_root: Path,
        gpp: GitProcessorPointer,
        credentials: GithubCredentials | None,
        timeout: float,
        *,
        allow_local_git: bool = False,
    ) -> None:
        """Clone the adapter at the commit (if the node allows its source: `allow_local_git` is the node's setting)
        and run install.sh where jobs will run; raise `DeploymentError`."""

    @abc.abstractmethod
    async def execute(self, ctx: JobContext) -> None:
        """Run (or, with `ctx.handle`, follow) execute.sh; raise `JobFailedError` when it fails. Cancelling kills
        the job's processes, unless `ctx.detaching()` says the node is stopping and the job can be re-attached."""

    async def remove(self, proc_root: Path) -> None:  # noqa: B027 - most backends leave nothing elsewhere
        """Undeploy: remove what `install` left outside `proc_root` (best effort)."""

    async def close(self) -> None:  # noqa: B027 - only backends with connections hold anything
        """Release connections (undeploy, node stop); jobs still running elsewhere are not affected."""

    def describe(self) -> dict[str, Any]:
        """What a processor's record may show about its backend (never credentials)."""
        return {"name": self.name}


class UnusableBackend(Backend):
    """Stands in for a backend that could not be built (the processor has failed): refuses everything."""

    name = "unusable"

    async def install(
        self,
        proc_root: Path,
        gpp: GitProcessorPointer,
        credentials: GithubCredentials | None,
        timeout: float,
        *,
        allow_local_git: bool = False,
    ) -> None:
        raise BackendError("The processor has no usable execution backend")

    async def execute(self, ctx: JobContext) -> None:
        raise BackendError("The processor has no usable execution backend")
