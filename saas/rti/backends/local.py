"""The local backend: install and run adapters on this node, in the sandbox (`saas.rti.deploy`, `saas.rti.runner`)."""

from __future__ import annotations

from pathlib import Path

from saas.core.schemas import GithubCredentials
from saas.dor.schemas import GitProcessorPointer
from saas.rti import deploy, runner
from saas.rti.backends.base import Backend, JobContext
from saas.rti.cgroups import Limits
from saas.rti.sandbox import Sandbox

__all__ = ["LocalBackend"]


class LocalBackend(Backend):
    name = "local"

    def __init__(self, sandbox: Sandbox, install_limits: Limits | None = None):
        self.sandbox = sandbox
        self.install_limits = install_limits

    async def install(
        self,
        proc_root: Path,
        gpp: GitProcessorPointer,
        credentials: GithubCredentials | None,
        timeout: float,
        *,
        allow_local_git: bool = False,
    ) -> None:
        await deploy.install(
            proc_root, gpp, credentials, timeout, self.sandbox, self.install_limits, allow_local_git=allow_local_git
        )

    async def execute(self, ctx: JobContext) -> None:
        async def on_start(pid: int) -> None:
            await ctx.on_handle({"pid": pid})

        await runner.execute(
            self.sandbox,
            ctx.adapter,
            ctx.config,
            ctx.wd,
            ctx.logs,
            ctx.on_line,
            on_start,
            ctx.job_id,
            limits=ctx.limits,
            network=ctx.network,
            visible=ctx.visible,
        )
