"""`RTIService`: processors and the job board of a node (DESIGN §8).

What callers may rely on:
- deployment is asynchronous: `deploy` returns at once with state `deploying`; the processor becomes `ready` or
  `failed` (with the install log tail). Processors survive a restart (they are not reinstalled). A job submitted
  while its processor deploys waits, pending, for the deployment (and fails if it fails).
- the job board is SQLite (`<datastore>/rti/jobs.sqlite`); every state transition is stored with its time and reason
  before anything depends on it. At most `max_jobs` jobs run at once (`max_remote_jobs` on ssh and slurm backends,
  which run on other machines); the rest wait, fairly between users (`saas.rti.scheduler`): a free slot goes to the
  waiting user with the fewest running jobs, round robin between equals, each user's jobs in submission order. A
  user may have `max_pending_per_user` jobs waiting to start (more: 429) and `max_running_per_user` running; the
  node owner is exempt from both bounds.
- after a restart: pending jobs are queued again, jobs whose process died are failed ("node restarted") or re-queued
  if the descriptor says `"restartable": true`, and postprocessing resumes. Outputs are stored exactly once: the
  bytes to store and their creation time are fixed in the board before the DOR sees them, so a retry produces the
  same object instead of a duplicate.
- agents (`"kind": "agent"`, see `saas.rti.agents`): deploying one also starts its instances (ready once each
  printed `trigger:ready`); after a restart they are started again. An agent's jobs do not take one of the
  `max_jobs` slots: they stay pending until the agent admits them (a few per instance), prepare their inputs,
  wait for a free instance and run exactly like a processor's job (same inputs, triggers, output checks and
  storage). A job still waiting for an instance when the node stopped is queued again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas.core.errors import (
    AuthorisationError,
    ConflictError,
    CryptoError,
    InvalidInputError,
    NotFoundError,
    RTIError,
)
from saas.core.identity import Identity
from saas.core.schemas import GithubCredentials, decrypt_credentials
from saas.dor.schemas import CDataObject, GitProcessorPointer
from saas.git import git_env
from saas.rti import board, bookings, levels, packages, placement
from saas.rti import deploy as deployment
from saas.rti.admission import JobValidationError, new_job_id  # noqa: F401 (new_job_id: re-exported)
from saas.rti.agents import AgentPool
from saas.rti.backends import Backend, make_backend
from saas.rti.board import ActiveJob, ProcessorRecord
from saas.rti.cgroups import Limits
from saas.rti.pipeline import JobPipeline, _remove_folders
from saas.rti.sandbox import Sandbox
from saas.rti.scheduler import Scheduler
from saas.rti.schemas import DeployParameters, Job, JobStatus, Processor, Resources
from saas.sqlite import Database

if TYPE_CHECKING:
    import sqlite3

    from saas.node import Node

__all__ = [
    "JobValidationError",  # (from saas.rti.admission)
    "ProcessorBusyError",
    "RTIService",
    "UnknownJobError",
    "UnknownProcessorError",
]

logger = logging.getLogger(__name__)


class UnknownProcessorError(RTIError, NotFoundError):
    pass


class UnknownJobError(RTIError, NotFoundError):
    pass


class ProcessorBusyError(RTIError, ConflictError):
    pass


class RTIService(JobPipeline):
    def __init__(self, node: Node):
        self._node = node
        self.root = node.config.datastore / "rti"
        self._jobs_root, self._logs_root = self.root / "jobs", self.root / "logs"
        self.db = Database(self.root / "jobs.sqlite", board.SCHEMA + levels.SCHEMA + bookings.SCHEMA)
        self.max_jobs = node.config.max_jobs or os.cpu_count() or 1
        self.install_timeout = node.config.install_timeout
        self._processors: dict[str, ProcessorRecord] = {}
        self._active: dict[str, ActiveJob] = {}
        # Jobs on ssh/slurm backends run on other machines: they have their own pool of slots.
        self.max_remote_jobs = node.config.max_remote_jobs
        self.scheduler = Scheduler(
            self.max_jobs,
            self.max_remote_jobs,
            node.config.max_pending_per_user,
            node.config.max_running_per_user,
            exempt=lambda user: user == node.iid,
        )
        self._stopping = False
        self._background: set[asyncio.Task[Any]] = set()
        self._to_remove: list[Path] = []  # working folders of finished jobs (`_remove_later`)
        self._remover: asyncio.Task[None] | None = None
        self.sandbox: Sandbox | None = None  # set by `start`
        self.on_finish: list[Callable[[ActiveJob], None]] = []  # told of every job that became final (metrics)
        self.packages: dict[str, packages.Package] = {}  # set by `start` (issue 18)
        self.levels = levels.LevelStore(node, self.db)
        self.bookings = bookings.BookingStore(node, self.db, self.levels)

    @property
    def isolation(self) -> str | None:
        """What the node record says about how adapters run: "sandbox" or "none"."""
        if self.sandbox is None:
            return None
        return "sandbox" if self.sandbox.enabled else "none"

    def _limits(self, resources: dict[str, Any] | None = None, walltime: bool = True) -> Limits:
        """What a job (or agent instance, or install) may use: what its descriptor or task asks, within the node's
        limits (each the default when nothing is asked)."""
        config = self._node.config
        node_memory = (config.job_memory or _half_the_memory()) * 2**20
        asked = _parse_resources(resources or {})
        memory = min(asked.memory or node_memory, node_memory)
        cores = min(asked.cores, config.job_cores or asked.cores) if asked.cores else config.job_cores
        wall = min(asked.walltime or config.job_walltime, config.job_walltime) if walltime else None
        return Limits(memory=memory, pids=config.job_pids, cores=cores, walltime=wall)

    @property
    def retain(self) -> bool:
        return self._node.config.retain_job_history

    def _proc_root(self, proc_id: str) -> Path:
        return self.root / "procs" / proc_id

    def _wd(self, job_id: str) -> Path:
        return self._jobs_root / job_id

    def _logs(self, job_id: str) -> Path:
        return self._logs_root / job_id

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        def open_all() -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            for sub in ("procs", "jobs", "logs"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            self.db.open()
            self.db.call(board.migrate)
            self.db.call(board.forget_proof)
            if self._node.config.purge_inactive_jobs:  # the original's --purge-inactive-jobs
                purged = self.db.call(board.purge_finished)
                _remove_folders([f for i in purged for f in (self._wd(i), self._logs(i))])
                logger.info("purged %d finished jobs (--purge-inactive-jobs)", len(purged))
            procs = self.db.call(lambda c: c.execute("SELECT * FROM processors").fetchall())
            return procs, self.db.call(board.unfinished)

        self.sandbox = await asyncio.to_thread(self._make_sandbox)
        self.packages = await asyncio.to_thread(packages.for_node, self._node.config)
        procs, unfinished = await asyncio.to_thread(open_all)
        await self.levels.load()
        await self.bookings.load()
        watch = asyncio.create_task(self.bookings.watch(self._dispatch, lambda: self._stopping))
        self._background.add(watch)
        for row in procs:
            p = ProcessorRecord(
                row["proc_id"],
                row["state"],
                GitProcessorPointer.model_validate_json(row["gpp"]),
                row["error"],
                row["log_tail"],
                spec=json.loads(row["backend"]) if row["backend"] else {"name": "local"},
            )
            try:
                p.backend = await self._make_backend(p)
            except (InvalidInputError, CryptoError) as e:
                p.state, p.error = "failed", f"Execution backend unusable after restart: {e.reason}"
            if p.state == "deploying":
                await asyncio.to_thread(deployment.kill_leftover_install, self._proc_root(p.proc_id))
                p.state, p.error = "failed", "node restarted during deployment"
                await self.db.run(board.put_processor, p)
            self._processors[p.proc_id] = p
            if p.state == "ready" and p.is_agent:
                p.agent = self._new_pool(p)
                p.task = asyncio.create_task(self._restart_agent(p))
        for row in unfinished:
            await self._recover(row)
        self._dispatch()

    def _make_sandbox(self) -> Sandbox:
        """The sandbox for adapter processes, and what a crashed run left of them killed. Blocks."""
        config = self._node.config
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

    async def stop(self) -> None:
        self._stopping = True
        agents = [p.agent for p in self._processors.values() if p.agent is not None]
        for agent in agents:
            agent.prepare_stop()  # the jobs cancelled below must not restart their instances
        tasks = [a.task for a in self._active.values() if a.task is not None]
        tasks += [p.task for p in self._processors.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(agent.stop() for agent in agents))
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._remover is not None:
            await asyncio.gather(self._remover, return_exceptions=True)
        for processor in self._processors.values():
            with contextlib.suppress(Exception):
                await processor.backend.close()
        await asyncio.to_thread(self.db.close)
        if self.sandbox is not None:
            await asyncio.to_thread(self.sandbox.close)

    # -- processors ---------------------------------------------------------------------------------------------

    def _may_deploy(self, caller: Identity) -> None:
        if self._node.config.strict_deployment and caller.id != self._node.iid:
            raise AuthorisationError("Strict deployment: only the node owner may deploy or undeploy processors")

    async def locate_gpp(self, proc_id: str, custodian: str | None = None) -> GitProcessorPointer:
        """The GPP of a processor: from this node's DOR, else from any DOR of the network."""

        try:
            return await placement.find_gpp(self._node, proc_id, custodian)
        except NotFoundError as e:
            raise UnknownProcessorError(e.reason, {"proc_id": proc_id}) from None

    def _is_owner(self, caller: Identity | None) -> bool:
        return caller is not None and caller.id == self._node.iid

    def get_deployed(self, caller: Identity | None = None) -> list[Processor]:
        return [p.model(self._is_owner(caller)) for p in self._processors.values()]

    def get_processor(self, proc_id: str, caller: Identity | None = None) -> Processor:
        """A processor's state; why it failed, its log tail and the jobs its agent instances hold are shown to the
        node owner only."""
        return self._processor(proc_id).model(self._is_owner(caller))

    def _processor(self, proc_id: str) -> ProcessorRecord:
        if proc_id not in self._processors:
            raise UnknownProcessorError(f"Processor {proc_id} is not deployed on this node", {"proc_id": proc_id})
        return self._processors[proc_id]

    async def deploy(self, caller: Identity, proc_id: str, params: DeployParameters) -> Processor:
        self._may_deploy(caller)
        existing = self._processors.get(proc_id)
        if existing is not None and existing.state in ("deploying", "ready"):
            return existing.model(self._is_owner(caller))
        if existing is not None and existing.agent is not None:
            await existing.agent.stop()  # a failed agent: nothing of it may keep running
        credentials = None
        if params.github_credentials is not None:
            credentials = await decrypt_credentials(
                GithubCredentials, params.github_credentials, self._node.keystore.decrypt, "GitHub credentials"
            )
        spec = self._backend_spec(params)
        gpp = await self.locate_gpp(proc_id, params.gpp_custodian)
        await asyncio.to_thread(git_env, gpp.source, self._node.config.allow_local_git)  # 403: a source not allowed
        if gpp.proc_descriptor.kind == "agent" and spec["name"] != "local":
            raise InvalidInputError("Agents run on this node only (the local backend), not over SSH or SLURM")
        if existing is not None:  # a failed deployment is replaced
            await existing.backend.close()
        processor = ProcessorRecord(proc_id, "deploying", gpp, spec=spec)
        if gpp.proc_descriptor.kind == "agent" or spec["name"] == "local":
            self._limits(_resources(gpp.proc_descriptor.model_extra, None, spec))  # 400 for bad resources
        processor.backend = await self._make_backend(processor)
        self._processors[proc_id] = processor
        await self.db.run(board.put_processor, processor)
        processor.task = asyncio.create_task(self._install(processor, credentials))
        self._node.audit.record("processor.deploy", actor=caller.id, proc_id=proc_id, backend=spec["name"])
        return processor.model(self._is_owner(caller))

    @staticmethod
    def _backend_spec(params: DeployParameters) -> dict[str, Any]:
        name = params.backend or ("ssh" if params.ssh_credentials is not None else "local")
        if name == "ssh" and params.ssh_credentials is None:
            raise InvalidInputError("The ssh backend needs SSH credentials (an SSH profile)")
        if name == "local" and params.ssh_credentials is not None:
            raise InvalidInputError("SSH credentials are for the ssh or slurm backend, not local")
        if params.partition is not None and name != "slurm":
            raise InvalidInputError("A partition is only for the slurm backend")
        return {"name": name, "ssh_credentials": params.ssh_credentials, "partition": params.partition}

    async def _make_backend(self, processor: ProcessorRecord) -> Backend:
        return await make_backend(
            processor.spec,
            decrypt=self._node.keystore.decrypt,
            proc_root=self._proc_root(processor.proc_id),
            rti_root=self.root,
            node_tag=self._node.iid[:16],
            gpp=processor.gpp,
            proc_id=processor.proc_id,
            sandbox=self._sandbox,
            install_limits=self._limits(walltime=False),
        )

    @property
    def _sandbox(self) -> Sandbox:
        if self.sandbox is None:
            raise RTIError("The RTI has not started")
        return self.sandbox

    async def _install(self, processor: ProcessorRecord, credentials: Any) -> None:
        root = self._proc_root(processor.proc_id)
        started = time.monotonic()
        try:
            allow_local = self._node.config.allow_local_git
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
        if self._processors.get(processor.proc_id) is processor:
            self._node.audit.record(f"processor.{processor.state}", proc_id=processor.proc_id)  # ready / failed
            await self.db.run(board.put_processor, processor)
        logger.info("processor %s %s in %.2f s", processor.proc_id, processor.state, time.monotonic() - started)

    async def undeploy(self, caller: Identity, proc_id: str, force: bool = False) -> Processor:
        self._may_deploy(caller)
        processor = self._processor(proc_id)
        jobs = [a for a in self._active.values() if a.job.proc_id == proc_id]
        if jobs and not force:
            raise ProcessorBusyError(
                f"Processor {proc_id} has {len(jobs)} unfinished job(s): cancel them or undeploy with force",
                {"jobs": [a.job.id for a in jobs]},
            )
        if processor.agent is not None:
            processor.agent.prepare_stop()  # its cancelled jobs must not restart instances
        for active in jobs:
            await self._cancel(active, "processor undeployed")
        if processor.task is not None:
            processor.task.cancel()
            await asyncio.gather(processor.task, return_exceptions=True)
        if processor.agent is not None:
            await processor.agent.stop()
        del self._processors[proc_id]
        await self.db.run(lambda c: c.execute("DELETE FROM processors WHERE proc_id = ?", (proc_id,)))
        await processor.backend.remove(self._proc_root(proc_id))
        await asyncio.to_thread(deployment.remove, self._proc_root(proc_id))
        self._node.audit.record("processor.undeployed", actor=caller.id, proc_id=proc_id, jobs_cancelled=len(jobs))
        return processor.model(self._is_owner(caller))

    # -- agents -------------------------------------------------------------------------------------------------

    def _new_pool(self, processor: ProcessorRecord) -> AgentPool:
        descriptor = processor.gpp.proc_descriptor
        root = self._proc_root(processor.proc_id)

        def broken(reason: str, log_tail: str) -> None:
            processor.state, processor.error, processor.log_tail = "failed", reason, log_tail
            task = asyncio.create_task(self.db.run(board.put_processor, processor))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        return AgentPool(
            processor.proc_id,
            deployment.adapter_dir(root, processor.gpp),
            processor.gpp.proc_config,
            root / "agent",
            descriptor.instances,
            descriptor.job_timeout,
            descriptor.startup_timeout,
            on_broken=broken,
            sandbox=self._sandbox,
            limits=self._limits(_resources(descriptor.model_extra, None, processor.spec), walltime=False),
            network=self._job_network(descriptor),
            visible=root / "repo",
        )

    def _job_network(self, descriptor: Any) -> bool:
        """Jobs have network unless the node denies it or the descriptor says `"network": false`."""
        return self._node.config.job_network == "allow" and (descriptor.model_extra or {}).get("network") is not False

    async def _restart_agent(self, processor: ProcessorRecord) -> None:
        """After a node restart: start the instances of a deployed agent again (its jobs wait until then)."""
        assert processor.agent is not None
        try:
            await processor.agent.start()
            logger.info("agent %s restarted", processor.proc_id)
        except asyncio.CancelledError:
            return
        except Exception as e:
            if isinstance(e, deployment.DeploymentError):
                processor.error, processor.log_tail = (
                    f"Restarting the agent failed: {e.reason}",
                    e.details.get("log_tail"),
                )
            else:
                logger.exception("restarting agent %s failed", processor.proc_id)
                processor.error = f"Restarting the agent failed: {type(e).__name__}"
            processor.state = "failed"
            if self._processors.get(processor.proc_id) is processor:
                await self.db.run(board.put_processor, processor)
        processor.task = None

    # -- control ------------------------------------------------------------------------------------------------

    async def _job(self, job_id: str, caller: Identity) -> tuple[Job, ActiveJob | None, sqlite3.Row | None]:
        active = self._active.get(job_id)
        row = None
        if active is not None:
            job = active.job
        else:
            row = await self.db.run(board.get_job, job_id)
            if row is None:
                raise UnknownJobError(f"Job {job_id} not found", {"job_id": job_id})
            job = Job.model_validate_json(row["job"])
        if job.task.user_iid != caller.id:
            raise AuthorisationError(f"Only the owner of job {job_id} may do this", {"job_id": job_id})
        return job, active, row

    async def get_status(
        self, job_id: str, caller: Identity, wait: float = 0.0, until_final: bool = False
    ) -> JobStatus:
        """With `wait`: answer at the job's next change (or, `until_final`, once it is final), at most `wait` s."""
        job, active, row = await self._job(job_id, caller)
        if active is not None and wait > 0 and not active.machine.final:
            with contextlib.suppress(TimeoutError):  # one wake-up: at the next change, or once final
                await asyncio.wait_for((active.ended if until_final else active.changed).wait(), wait)
            if job_id not in self._active and not active.machine.final:  # gone (e.g. the node is stopping)
                row = await self.db.run(board.get_job, job_id)
                active = None
        known: dict[str, CDataObject] = {}
        if active is not None:
            state, doc, known = active.machine.state.value, active.status_doc(), active.stored
        else:
            assert row is not None
            state, doc = row["state"], json.loads(row["status"])
        return JobStatus(
            state=state,
            progress=doc["progress"],
            output=await self._output_meta(doc["outputs"], doc.get("stored_elsewhere") or {}, known),
            messages=doc["messages"],
            errors=doc["errors"],
            timeline=doc["timeline"],
            job=job,
        )

    async def _output_meta(
        self, outputs: dict[str, str], elsewhere: dict[str, dict[str, Any]], known: dict[str, CDataObject]
    ) -> dict[str, CDataObject]:
        """Metadata of a job's outputs: as just stored (`known`, while the job is in memory), else from this node's
        DOR, or as stored on another node's DOR."""
        from saas.dor import catalog

        if known.keys() == outputs.keys():
            return dict(known)
        found: dict[str, CDataObject] = {}
        dor = self._node.dor
        if dor is not None and outputs:
            rows = {r.obj_id: r for r in await dor.db.run(catalog.get_many, list(outputs.values()))}
            for name, obj_id in outputs.items():
                model = rows[obj_id].to_model() if obj_id in rows else None
                if isinstance(model, CDataObject):
                    found[name] = model
        for name, meta in elsewhere.items():
            if name not in found:
                with contextlib.suppress(ValueError):
                    found[name] = CDataObject.model_validate(meta)
        return found

    async def get_jobs(self, caller: Identity, limit: int = 1000) -> list[Job]:
        rows = await self.db.run(
            lambda c: c.execute(
                "SELECT job FROM jobs WHERE user_iid = ? ORDER BY seq DESC LIMIT ?", (caller.id, limit)
            ).fetchall()
        )
        return [Job.model_validate_json(r["job"]) for r in rows]

    async def logs_folder(self, job_id: str, caller: Identity) -> tuple[Path, bool]:
        """The job's log folder and whether the job is still running (for follow)."""
        await self._job(job_id, caller)
        return self._logs(job_id), job_id in self._active


def _resources(extra: dict[str, Any] | None, task: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """A job's resources: the descriptor's, then the deployment's partition, then the task's (the task wins)."""
    declared = (extra or {}).get("resources")
    merged: dict[str, Any] = dict(declared) if isinstance(declared, dict) else {}
    if spec.get("partition"):
        merged["partition"] = spec["partition"]
    if task is not None:
        merged.update(task.model_dump(exclude_none=True))
    return merged


def _parse_resources(resources: dict[str, Any]) -> Limits:
    """A descriptor's or task's `resources` as limits (raises `InvalidInputError` for bad values)."""
    from pydantic import ValidationError

    try:
        parsed = Resources.model_validate(resources)
    except ValidationError as e:
        raise InvalidInputError(f"Invalid resources: {e.errors()[0]['msg']}", {"resources": resources}) from None
    memory = None
    if parsed.memory is not None:
        units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
        number, unit = (parsed.memory[:-1], parsed.memory[-1]) if parsed.memory[-1] in units else (parsed.memory, "M")
        memory = int(number) * units[unit]
    walltime = parsed.walltime_seconds()
    return Limits(memory=memory, cores=parsed.cores, walltime=float(walltime) if walltime else None)


def _half_the_memory() -> int:
    """Half of this machine's memory, in MiB (the default limit of a job)."""
    try:
        return max(64, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**21)
    except (ValueError, OSError):
        return 4096
