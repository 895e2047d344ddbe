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
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas.core.identity import Identity
from saas.dor.schemas import GitProcessorPointer
from saas.rti import board, bookings, levels, packages
from saas.rti import deploy as deployment
from saas.rti.admission import JobValidationError, new_job_id  # noqa: F401 (re-exported)
from saas.rti.agents import AgentPool
from saas.rti.backends import Backend
from saas.rti.cgroups import Limits
from saas.rti.limits import resources as _resources
from saas.rti.pipeline import JobPipeline, _remove_folders
from saas.rti.ports import LocalDOR, Network, NodeKeys, NodeNetwork, local_dor
from saas.rti.processors import ProcessorBusyError, ProcessorRegistry, UnknownProcessorError
from saas.rti.records import ActiveJob, ProcessorRecord
from saas.rti.sandbox import Sandbox
from saas.rti.scheduler import Scheduler
from saas.rti.schemas import DeployParameters, Job, JobStatus, ListedJob, Processor
from saas.rti.status import JobReader, UnknownJobError
from saas.sqlite import Database

if TYPE_CHECKING:
    import sqlite3

    from saas.node import Node

__all__ = [
    "JobValidationError",
    "ProcessorBusyError",
    "RTIService",
    "UnknownJobError",
    "UnknownProcessorError",
]

logger = logging.getLogger(__name__)


class RTIService(JobPipeline):
    def __init__(self, node: Node):
        self._node = node
        self.root = node.config.datastore / "rti"
        self._jobs_root, self._logs_root = self.root / "jobs", self.root / "logs"
        self.db = Database(self.root / "jobs.sqlite", board.SCHEMA + levels.SCHEMA + bookings.SCHEMA)
        self.max_jobs = node.config.max_jobs or os.cpu_count() or 1
        self.dor: LocalDOR | None = local_dor(node)
        self.network: Network = NodeNetwork(node)
        self._keys: NodeKeys = node.keystore
        self._config, self._audit = node.config, node.audit
        self.processors = ProcessorRegistry(
            node.config,
            self.root,
            self.db,
            iid=node.iid,
            keystore=node.keystore,
            audit=node.audit,
            network=self.network,
            new_pool=self._new_pool,
            restart_agent=self._restart_agent,
            jobs_of=lambda proc_id: [a for a in self._active.values() if a.job.proc_id == proc_id],
            cancel_job=self._cancel,
        )
        self._processors = self.processors.records  # the same dict: the job pipeline reads it
        self._active: dict[str, ActiveJob] = {}
        self.reader = JobReader(self.db, self._active, self._logs_root, self.dor)
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
        self.on_finish: list[Callable[[ActiveJob], None]] = []  # told of every job that became final (metrics)
        self.packages: dict[str, packages.Package] = {}  # set by `start` (issue 18)
        self.levels = levels.LevelStore(node, self.db)
        self.bookings = bookings.BookingStore(node, self.db, self.levels)

    @property
    def sandbox(self) -> Sandbox | None:
        """The sandbox adapter processes run in (None until `start`)."""
        return self.processors.sandbox

    @property
    def isolation(self) -> str | None:
        return self.processors.isolation

    def _limits(self, resources: dict[str, Any] | None = None, walltime: bool = True) -> Limits:
        return self.processors.limits(resources, walltime)

    @property
    def retain(self) -> bool:
        return self._node.config.retain_job_history

    def _proc_root(self, proc_id: str) -> Path:
        return self.processors.proc_root(proc_id)

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
            return self.db.call(board.processors), self.db.call(board.unfinished)

        await self.processors.start()
        self.packages = await asyncio.to_thread(packages.for_node, self._node.config)
        procs, unfinished = await asyncio.to_thread(open_all)
        await self.levels.load()
        await self.bookings.load()
        watch = asyncio.create_task(self.bookings.watch(self._dispatch, lambda: self._stopping))
        self._background.add(watch)
        await self.processors.load(procs)
        for row in unfinished:
            await self._recover(row)
        self._dispatch()

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
        await self.processors.close()
        await asyncio.to_thread(self.db.close)
        await self.processors.close_sandbox()

    # -- processors ---------------------------------------------------------------------------------------------

    async def locate_gpp(self, proc_id: str, custodian: str | None = None) -> GitProcessorPointer:
        """The GPP of a processor: from this node's DOR, else from any DOR of the network."""
        return await self.processors.locate_gpp(proc_id, custodian)

    def get_deployed(self, caller: Identity | None = None) -> list[Processor]:
        return self.processors.get_deployed(caller)

    def get_processor(self, proc_id: str, caller: Identity | None = None) -> Processor:
        """A processor's state; why it failed, its log tail and the jobs its agent instances hold are shown to the
        node owner only."""
        return self.processors.get_processor(proc_id, caller)

    def _processor(self, proc_id: str) -> ProcessorRecord:
        return self.processors.get(proc_id)

    async def deploy(self, caller: Identity, proc_id: str, params: DeployParameters) -> Processor:
        return await self.processors.deploy(caller, proc_id, params)

    async def _make_backend(self, processor: ProcessorRecord) -> Backend:
        return await self.processors.make_backend(processor)

    @property
    def _sandbox(self) -> Sandbox:
        return self.processors.require_sandbox

    async def undeploy(self, caller: Identity, proc_id: str, force: bool = False) -> Processor:
        return await self.processors.undeploy(caller, proc_id, force)

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
        return self.processors.job_network(descriptor)

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
        return await self.reader.job(job_id, caller)

    async def get_status(
        self, job_id: str, caller: Identity, wait: float = 0.0, until_final: bool = False
    ) -> JobStatus:
        """With `wait`: answer at the job's next change (or, `until_final`, once it is final), at most `wait` s."""
        return await self.reader.get_status(job_id, caller, wait, until_final)

    async def identities_in_use(self, iids: list[str]) -> set[str]:
        """Which of `iids` have jobs, bookings or an account level here (NodeDB keeps their records)."""

        def query(conn: sqlite3.Connection) -> set[str]:
            marks = ",".join("?" * len(iids))
            found = set()
            for table in ("jobs", "bookings", "levels"):
                column = "iid" if table == "levels" else "user_iid"
                rows = conn.execute(f"SELECT DISTINCT {column} FROM {table} WHERE {column} IN ({marks})", iids)
                found |= {r[0] for r in rows}
            return found

        return await self.db.run(query) if iids else set()

    async def get_jobs(self, caller: Identity, limit: int = 1000) -> list[ListedJob]:
        return await self.reader.get_jobs(caller, limit)

    async def logs_folder(self, job_id: str, caller: Identity) -> tuple[Path, bool]:
        """The job's log folder and whether the job is still running (for follow)."""
        return await self.reader.logs_folder(job_id, caller)
