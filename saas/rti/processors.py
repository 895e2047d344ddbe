"""The processors of a node (DESIGN §8): deploying, installing and undeploying adapters, their execution backends,
the sandbox adapter processes run in and the limits they run with.

`ProcessorRegistry` owns the deployed processors (`records`, shared with the job pipeline, which reads it) and
their rows on the job board. Callers may rely on:
- `deploy` answers at once with state `deploying`; the install runs in the background and ends `ready` or `failed`
  (with the install log tail, shown to the node owner only). Deploying a processor that is deploying or ready
  changes nothing; a failed one is replaced.
- processors survive a restart (`load`): they are not reinstalled; one that was deploying is `failed` ("node
  restarted during deployment"), one whose backend is no longer usable is `failed` with the reason.
- with strict deployment only the node owner deploys or undeploys (403); `undeploy` refuses (409) while the
  processor has unfinished jobs unless forced, then cancels them.
What it needs of the job pipeline (agents' instance pools, a processor's unfinished jobs, cancelling one) comes
in as callables at construction, so that this module knows nothing of how jobs run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas.core.errors import AuthorisationError, ConflictError, CryptoError, InvalidInputError, NotFoundError, RTIError
from saas.core.identity import Identity
from saas.core.schemas import GithubCredentials, decrypt_credentials
from saas.dor.schemas import GitProcessorPointer
from saas.git import git_env
from saas.rti import board
from saas.rti import deploy as deployment
from saas.rti.backends import Backend, make_backend
from saas.rti.cgroups import Limits
from saas.rti.limits import limits_for, resources
from saas.rti.records import ActiveJob, ProcessorRecord
from saas.rti.sandbox import Sandbox
from saas.rti.schemas import DeployParameters, Processor
from saas.sqlite import Database

if TYPE_CHECKING:
    from saas.audit.log import AuditLog
    from saas.config import NodeConfig
    from saas.core.keystore import Keystore
    from saas.rti.agents import AgentPool
    from saas.rti.ports import Network

__all__ = ["ProcessorBusyError", "ProcessorRegistry", "UnknownProcessorError"]

logger = logging.getLogger(__name__)


class UnknownProcessorError(RTIError, NotFoundError):
    pass


class ProcessorBusyError(RTIError, ConflictError):
    pass


class ProcessorRegistry:
    def __init__(
        self,
        config: NodeConfig,
        root: Path,
        db: Database,
        *,
        iid: str,
        keystore: Keystore,
        audit: AuditLog,
        network: Network,
        new_pool: Callable[[ProcessorRecord], AgentPool],
        restart_agent: Callable[[ProcessorRecord], Coroutine[Any, Any, None]],
        jobs_of: Callable[[str], list[ActiveJob]],
        cancel_job: Callable[[ActiveJob, str], Awaitable[None]],
    ):
        """`new_pool`, `restart_agent`, `jobs_of` and `cancel_job` are the job pipeline's: an agent's instance pool,
        starting it again after a restart, a processor's unfinished jobs and cancelling one."""
        self._config = config
        self.root = root  # the RTI's folder: processors under `procs/<proc_id>`
        self._db = db
        self._iid = iid
        self._keystore = keystore
        self._audit = audit
        self._network = network
        self.install_timeout = config.install_timeout
        self.records: dict[str, ProcessorRecord] = {}
        self.sandbox: Sandbox | None = None  # set by `start`
        self._new_pool, self._restart_agent = new_pool, restart_agent
        self._jobs_of, self._cancel_job = jobs_of, cancel_job

    # -- decisions ----------------------------------------------------------------------------------------------

    @property
    def isolation(self) -> str | None:
        """What the node record says about how adapters run: "sandbox" or "none"."""
        if self.sandbox is None:
            return None
        return "sandbox" if self.sandbox.enabled else "none"

    def limits(self, asked: dict[str, Any] | None = None, walltime: bool = True) -> Limits:
        """What a job (or agent instance, or install) may use: what its descriptor or task asks, within the node's
        limits (each the default when nothing is asked)."""
        return limits_for(self._config, asked, walltime)

    def job_network(self, descriptor: Any) -> bool:
        """Jobs have network unless the node denies it or the descriptor says `"network": false`."""
        return self._config.job_network == "allow" and (descriptor.model_extra or {}).get("network") is not False

    def proc_root(self, proc_id: str) -> Path:
        return self.root / "procs" / proc_id

    def is_owner(self, caller: Identity | None) -> bool:
        return caller is not None and caller.id == self._iid

    def may_deploy(self, caller: Identity) -> None:
        if self._config.strict_deployment and caller.id != self._iid:
            raise AuthorisationError("Strict deployment: only the node owner may deploy or undeploy processors")

    @staticmethod
    def backend_spec(params: DeployParameters) -> dict[str, Any]:
        name = params.backend or ("ssh" if params.ssh_credentials is not None else "local")
        if name == "ssh" and params.ssh_credentials is None:
            raise InvalidInputError("The ssh backend needs SSH credentials (an SSH profile)")
        if name == "local" and params.ssh_credentials is not None:
            raise InvalidInputError("SSH credentials are for the ssh or slurm backend, not local")
        if params.partition is not None and name != "slurm":
            raise InvalidInputError("A partition is only for the slurm backend")
        return {"name": name, "ssh_credentials": params.ssh_credentials, "partition": params.partition}

    @property
    def require_sandbox(self) -> Sandbox:
        if self.sandbox is None:
            raise RTIError("The RTI has not started")
        return self.sandbox

    # -- reading ------------------------------------------------------------------------------------------------

    def get(self, proc_id: str) -> ProcessorRecord:
        if proc_id not in self.records:
            raise UnknownProcessorError(f"Processor {proc_id} is not deployed on this node", {"proc_id": proc_id})
        return self.records[proc_id]

    def get_deployed(self, caller: Identity | None = None) -> list[Processor]:
        return [p.model(self.is_owner(caller)) for p in self.records.values()]

    def get_processor(self, proc_id: str, caller: Identity | None = None) -> Processor:
        """A processor's state; why it failed, its log tail and the jobs its agent instances hold are shown to the
        node owner only."""
        return self.get(proc_id).model(self.is_owner(caller))

    async def locate_gpp(self, proc_id: str, custodian: str | None = None) -> GitProcessorPointer:
        """The GPP of a processor: from this node's DOR, else from any DOR of the network."""
        try:
            return await self._network.find_gpp(proc_id, custodian)
        except NotFoundError as e:
            raise UnknownProcessorError(e.reason, {"proc_id": proc_id}) from None

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def make_sandbox(self) -> Sandbox:
        """The sandbox for adapter processes, and what a crashed run left of them killed. Blocks."""
        config = self._config
        network = config.job_network == "allow"
        if config.unsafe_no_sandbox:
            logger.warning(
                "RTI WITHOUT SANDBOX (--unsafe-no-sandbox): adapters run as this node's user and can read its "
                "datastore, its keystore and other users' jobs"
            )
            sandbox = Sandbox.unsafe(config.datastore, network)
        else:
            sandbox = Sandbox.detect(config.datastore, network, config.sandbox_uid)
        if sandbox.cgroups is not None:
            swept = sandbox.cgroups.sweep()
            if swept:
                logger.info("killed the processes of %d adapter cgroups left from before the restart", swept)
        return sandbox

    async def start(self) -> None:
        """Make the sandbox (the first thing the RTI does at start)."""
        self.sandbox = await asyncio.to_thread(self.make_sandbox)

    async def load(self, rows: list[Any]) -> None:
        """The processors of the board's `rows` (`board.processors`), as they were: backends made again, an
        interrupted deployment failed, agents' instances started again (in the background)."""
        for row in rows:
            p = ProcessorRecord(
                row["proc_id"],
                row["state"],
                GitProcessorPointer.model_validate_json(row["gpp"]),
                row["error"],
                row["log_tail"],
                spec=json.loads(row["backend"]) if row["backend"] else {"name": "local"},
            )
            try:
                p.backend = await self.make_backend(p)
            except (InvalidInputError, CryptoError) as e:
                p.state, p.error = "failed", f"Execution backend unusable after restart: {e.reason}"
            if p.state == "deploying":
                await asyncio.to_thread(deployment.kill_leftover_install, self.proc_root(p.proc_id))
                p.state, p.error = "failed", "node restarted during deployment"
                await self._db.run(board.put_processor, p)
            self.records[p.proc_id] = p
            if p.state == "ready" and p.is_agent:
                p.agent = self._new_pool(p)
                p.task = asyncio.create_task(self._restart_agent(p))

    async def close(self) -> None:
        """Close every backend (after the jobs and agents stopped), then the sandbox."""
        for processor in self.records.values():
            with contextlib.suppress(Exception):
                await processor.backend.close()

    async def close_sandbox(self) -> None:
        if self.sandbox is not None:
            await asyncio.to_thread(self.sandbox.close)

    # -- deploying ----------------------------------------------------------------------------------------------

    async def make_backend(self, processor: ProcessorRecord) -> Backend:
        return await make_backend(
            processor.spec,
            decrypt=self._keystore.decrypt,
            proc_root=self.proc_root(processor.proc_id),
            rti_root=self.root,
            node_tag=self._iid[:16],
            gpp=processor.gpp,
            proc_id=processor.proc_id,
            sandbox=self.require_sandbox,
            install_limits=self.limits(walltime=False),
        )

    async def deploy(self, caller: Identity, proc_id: str, params: DeployParameters) -> Processor:
        self.may_deploy(caller)
        existing = self.records.get(proc_id)
        if existing is not None and existing.state in ("deploying", "ready"):
            return existing.model(self.is_owner(caller))
        if existing is not None and existing.agent is not None:
            await existing.agent.stop()  # a failed agent: nothing of it may keep running
        credentials = None
        if params.github_credentials is not None:
            credentials = await decrypt_credentials(
                GithubCredentials, params.github_credentials, self._keystore.decrypt, "GitHub credentials"
            )
        spec = self.backend_spec(params)
        gpp = await self.locate_gpp(proc_id, params.gpp_custodian)
        await asyncio.to_thread(git_env, gpp.source, self._config.allow_local_git)  # 403: a source not allowed
        if gpp.proc_descriptor.kind == "agent" and spec["name"] != "local":
            raise InvalidInputError("Agents run on this node only (the local backend), not over SSH or SLURM")
        if existing is not None:  # a failed deployment is replaced
            await existing.backend.close()
        processor = ProcessorRecord(proc_id, "deploying", gpp, spec=spec)
        if gpp.proc_descriptor.kind == "agent" or spec["name"] == "local":
            self.limits(resources(gpp.proc_descriptor.model_extra, None, spec))  # 400 for bad resources
        processor.backend = await self.make_backend(processor)
        self.records[proc_id] = processor
        await self._db.run(board.put_processor, processor)
        processor.task = asyncio.create_task(self.install(processor, credentials))
        self._audit.record("processor.deploy", actor=caller.id, proc_id=proc_id, backend=spec["name"])
        return processor.model(self.is_owner(caller))

    async def install(self, processor: ProcessorRecord, credentials: Any) -> None:
        root = self.proc_root(processor.proc_id)
        started = time.monotonic()
        try:
            allow_local = self._config.allow_local_git
            await processor.backend.install(
                root, processor.gpp, credentials, self.install_timeout, allow_local_git=allow_local
            )
            if processor.is_agent:
                processor.agent = self._new_pool(processor)
                await processor.agent.start()
            processor.state, processor.error, processor.log_tail = "ready", None, None
        except deployment.DeploymentError as e:
            processor.state, processor.error = "failed", e.reason
            processor.log_tail = e.details.get("log_tail")
        except asyncio.CancelledError:
            return
        except Exception as e:
            logger.exception("deploying %s failed", processor.proc_id)
            processor.state, processor.error = "failed", f"Deployment failed: {type(e).__name__}"
        processor.task = None
        if self.records.get(processor.proc_id) is processor:
            self._audit.record(f"processor.{processor.state}", proc_id=processor.proc_id)  # ready / failed
            await self._db.run(board.put_processor, processor)
        logger.info("processor %s %s in %.2f s", processor.proc_id, processor.state, time.monotonic() - started)

    async def undeploy(self, caller: Identity, proc_id: str, force: bool = False) -> Processor:
        self.may_deploy(caller)
        processor = self.get(proc_id)
        jobs = self._jobs_of(proc_id)
        if jobs and not force:
            raise ProcessorBusyError(
                f"Processor {proc_id} has {len(jobs)} unfinished job(s): cancel them or undeploy with force",
                {"jobs": [a.job.id for a in jobs]},
            )
        if processor.agent is not None:
            processor.agent.prepare_stop()  # its cancelled jobs must not restart instances
        for active in jobs:
            await self._cancel_job(active, "processor undeployed")
        if processor.task is not None:
            processor.task.cancel()
            await asyncio.gather(processor.task, return_exceptions=True)
        if processor.agent is not None:
            await processor.agent.stop()
        del self.records[proc_id]
        await self._db.run(board.delete_processor, proc_id)
        await processor.backend.remove(self.proc_root(proc_id))
        await asyncio.to_thread(deployment.remove, self.proc_root(proc_id))
        self._audit.record("processor.undeployed", actor=caller.id, proc_id=proc_id, jobs_cancelled=len(jobs))
        return processor.model(self.is_owner(caller))
