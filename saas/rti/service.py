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
import hashlib
import json
import logging
import os
import secrets
import shutil
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from saas.core.errors import (
    AuthorisationError,
    InsufficientStorageError,
    InvalidInputError,
    NotFoundError,
    RTIError,
)
from saas.core.helpers import in_thread_to_the_end
from saas.core.identity import Identity
from saas.dor import claims
from saas.dor.schemas import AddCDataObjectParameters, CDataObject, GitProcessorPointer, ProcessorIO, TaskProof
from saas.rti import board, bookings, levels, offers, packages, placement, process, runner, validation
from saas.rti import deploy as deployment
from saas.rti.agents import AgentPool, open_job_logs
from saas.rti.backends import Backend, JobContext
from saas.rti.board import ActiveJob, ProcessorRecord
from saas.rti.cgroups import Limits
from saas.rti.jobs import FINAL_STATES, JobState, JobStateMachine, recover
from saas.rti.limits import resources as _resources
from saas.rti.messages import MessageLog
from saas.rti.ports import LocalDOR, Network, NodeNetwork, local_dor
from saas.rti.processors import ProcessorBusyError, ProcessorRegistry, UnknownProcessorError
from saas.rti.sandbox import Sandbox
from saas.rti.scheduler import Scheduler, SlotPool
from saas.rti.schemas import DeployParameters, Job, JobStatus, Processor, Task
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


class JobValidationError(RTIError, InvalidInputError):
    pass


_ID_ALPHABET = string.ascii_letters + string.digits
LOCATION_FRESH_S = 1.0  # a job initialised this soon after its submission uses the inputs' locations found then


def new_job_id() -> str:
    """An unguessable job ID (~131 bits); letters and digits only, so it never looks like a command-line option.
    One read of the OS random source, unbiased (bytes of 248 and above are dropped: 248 = 4 x 62)."""
    while True:
        picked = [b % 62 for b in secrets.token_bytes(32) if b < 248]
        if len(picked) >= 22:
            return "".join(_ID_ALPHABET[i] for i in picked[:22])


def _now() -> int:
    return int(time.time() * 1000)


class RTIService:
    def __init__(self, node: Node):
        self._node = node
        self.root = node.config.datastore / "rti"
        self._jobs_root, self._logs_root = self.root / "jobs", self.root / "logs"
        self.db = Database(self.root / "jobs.sqlite", board.SCHEMA + levels.SCHEMA + bookings.SCHEMA)
        self.max_jobs = node.config.max_jobs or os.cpu_count() or 1
        self.dor: LocalDOR | None = local_dor(node)
        self.network: Network = NodeNetwork(node)
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

    async def _recover(self, row: sqlite3.Row) -> None:
        job = Job.model_validate_json(row["job"])
        doc = json.loads(row["status"])
        active = ActiveJob(
            job,
            JobStateMachine.restore(row["state"], doc["timeline"]),
            doc["progress"],
            MessageLog.restore(doc["messages"], **self._message_limits),
            doc["errors"],
            set(doc["announced"]),
            doc["outputs"],
            doc.get("stored_elsewhere") or {},
            await self._recorded_consumes(job.id, doc),
        )
        processor = self._processors.get(job.proc_id)
        restartable = bool(processor and (processor.gpp.proc_descriptor.model_extra or {}).get("restartable"))
        before = active.machine.state
        if processor is not None and processor.is_agent and before is JobState.INITIALISING:
            restartable = True  # it was waiting for an instance: no agent has seen it
        if (
            before is JobState.RUNNING
            and doc.get("remote")
            and processor is not None
            and processor.state == "ready"
            and processor.backend.reattachable
        ):
            active.remote = doc["remote"]
            self._active[job.id] = active
            logger.info("job %s found running on the %s backend: re-attaching", job.id, processor.backend.name)
            self._start_task(active, reattach=True)
            return
        if before is JobState.RUNNING and doc.get("pid"):
            killed = await asyncio.to_thread(process.kill_leftover, int(doc["pid"]), job.id)
            if killed:
                logger.info("job %s: killed the processes left from before the restart", job.id)
        state = recover(active.machine, restartable)
        if state is JobState.FAILED:
            active.errors.append("node restarted")
        if state is not before:
            await self._save(active)
            if state in FINAL_STATES:
                self._audit_job(active, state.value, reason="node restarted")
        logger.info("job %s found %s after restart: now %s", job.id, before.value, state.value)
        if state in FINAL_STATES:
            await self._finish(active)
            return
        self._active[job.id] = active
        if state is JobState.POSTPROCESSING:
            self._start_task(active, resume=True)
        else:
            self._enqueue(active)

    @property
    def _message_limits(self) -> dict[str, int]:
        config = self._node.config
        return {
            "max_length": config.job_message_length,
            "max_count": config.job_messages,
            "max_bytes": config.job_messages_bytes,
        }

    def _new_active(self, job: Job, machine: JobStateMachine) -> ActiveJob:
        return ActiveJob(job, machine, messages=MessageLog(**self._message_limits))

    async def _recorded_consumes(self, job_id: str, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """What the recipes record about a job's inputs: in its row, or (older boards) `.store/consumes.json`."""
        if "consumes" in doc:
            return dict(doc["consumes"])
        path = self._wd(job_id) / ".store" / "consumes.json"
        text = await asyncio.to_thread(lambda: path.read_text() if path.is_file() else "{}")
        return dict(json.loads(text))

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

    # -- submitting ---------------------------------------------------------------------------------------------

    def _validate(self, proc_id: str, task: Task, caller: Identity) -> ProcessorRecord:
        if caller.id != task.user_iid:
            raise AuthorisationError("A task must be signed by its user (user_iid)")
        if task.proc_id != proc_id:
            raise JobValidationError(f"The task is for processor {task.proc_id}, not {proc_id}")
        processor = self._processor(proc_id)
        if processor.state not in ("ready", "deploying"):  # a deploying one queues the job (_enqueue)
            raise JobValidationError(f"Processor {proc_id} is not ready (state: {processor.state})")
        descriptor = processor.gpp.proc_descriptor
        try:
            validation.check_task(descriptor, validation.task_pairs(task.input))
        except InvalidInputError as e:
            raise JobValidationError(e.reason) from None
        outputs = {s.name for s in descriptor.output}
        given = [o.name for o in task.output]
        if sorted(given) != sorted(outputs):
            raise JobValidationError(
                f"Outputs must be exactly {', '.join(sorted(outputs)) or 'none'} (given: {', '.join(given) or 'none'})"
            )
        for out in task.output:
            if self._node.nodedb.get_identity(out.owner_iid) is None:
                raise JobValidationError(f"The owner {out.owner_iid} of output '{out.name}' is not known to this node")
            try:
                placement.check_target(self._node, out)
            except InvalidInputError as e:
                raise JobValidationError(e.reason) from None
        return processor

    async def _check_references(
        self, processor: ProcessorRecord, task: Task, caller: Identity
    ) -> dict[str, placement.InputLocation]:
        """Every by-reference input exists (on this node or another), is visible to the user, and has the type and
        format the descriptor asks for. Returns where each is."""
        specs = {s.name: s for s in processor.gpp.proc_descriptor.input}
        references = [i for i in task.input if isinstance(i, Task.InputReference)]
        try:
            found = await asyncio.gather(*(placement.find_input(self._node, i, caller.id) for i in references))
        except (NotFoundError, InvalidInputError) as e:
            raise JobValidationError(e.reason, e.details) from None  # details: the obj_id not found
        for item, location in zip(references, found, strict=True):
            meta, spec = location.meta, specs[item.name]
            if (meta.data_type, meta.data_format) != (spec.data_type, spec.data_format):
                raise JobValidationError(
                    f"Input '{item.name}': expected {spec.data_type}/{spec.data_format}, "
                    f"got {meta.data_type}/{meta.data_format}"
                )
        await self._check_keys(references, found, caller)
        return {item.name: location for item, location in zip(references, found, strict=True)}

    async def _check_keys(
        self, references: list[Task.InputReference], found: list[placement.InputLocation], caller: Identity
    ) -> None:
        """An encrypted input is decrypted by this node only for a user who holds its key (owner, or an envelope of
        their own): refuse now (403) when its DOR says the user does not; when the DOR cannot tell now, the job
        asks again at initialisation (and fails if it still cannot tell)."""

        async def check(item: Task.InputReference, location: placement.InputLocation) -> None:
            try:
                await placement.require_key(self._node, item.name, location, caller.id)
            except placement.KeyCheckError as e:
                logger.info("submission of a job of %s: %s (asked again at initialisation)", caller.id[:8], e.reason)

        encrypted = [(i, loc) for i, loc in zip(references, found, strict=True) if loc.meta.content_encrypted]
        await asyncio.gather(*(check(item, location) for item, location in encrypted))

    async def submit(
        self, caller: Identity, proc_id: str, task: Task, answer_at_end: bool = False, proof: TaskProof | None = None
    ) -> Job:
        """Validate and queue a job. The job's row is stored before the answer; with `answer_at_end` (`run`: the
        caller hears of the job only once it is final) it is queued for storing instead, which still lands before
        anything the job does that a restart must know (its start on an instance is an awaited write). `proof`,
        the user's signed submission, is kept with the job until it is final: another node's DOR stores an output
        only with it (`saas.dor.claims`)."""
        processor = self._validate(proc_id, task, caller)
        package = await self.grant(caller, processor, task)
        self.scheduler.admit(caller.id)  # 429 before the inputs are looked for
        located = await self._check_references(processor, task, caller)
        self.scheduler.admit(caller.id)  # and again: other submissions may have come meanwhile
        job = Job(
            id=new_job_id(),
            proc_id=proc_id,
            task=task,
            retain=self.retain,
            t_submitted=_now(),
            custodian_iid=self._node.iid,
            package=package,
        )
        active = self._new_active(job, JobStateMachine())
        active.located, active.located_at = located, time.monotonic()
        self.scheduler.pending(caller.id, job.id)  # counted from now on (the row is stored meanwhile)
        try:
            if answer_at_end:
                self.db.write_behind(board.insert_job, active, proof)
            else:
                await self.db.run(board.insert_job, active, proof)
        except BaseException:
            self.scheduler.not_pending(job.id)
            raise
        self._node.audit.record(
            "job.submitted",
            actor=caller.id,
            owner=task.user_iid,
            job_id=job.id,
            proc_id=proc_id,
            inputs={i.name: i.obj_id for i in task.input if isinstance(i, Task.InputReference)},  # never values
            outputs={o.name: o.owner_iid for o in task.output},
        )
        self._active[job.id] = active
        self._enqueue(active)
        return job

    async def grant(self, caller: Identity, processor: ProcessorRecord, task: Task) -> packages.Package | None:
        """The resource package a job gets (`saas.rti.packages`); 400 or 403 with the reason when none."""
        resources = _resources(processor.gpp.proc_descriptor.model_extra, task.resources, processor.spec)
        name = task.package if task.offer is None else await offers.honour(self._node, caller, task)
        sized = processor.spec.get("name", "local") == "local" or self._node.config.packages_file is not None
        return packages.grant(
            self.packages, self.levels.allowed(caller.id), resources, name, sized, self._node.config.job_gpus
        )

    async def run(
        self, caller: Identity, proc_id: str, task: Task, wait: float, proof: TaskProof | None = None
    ) -> JobStatus:
        """Submit a job and answer with its status once it is final, or after `wait` seconds (whatever its state
        then): one request for a job that ends quickly, e.g. on a warm agent."""
        job = await self.submit(caller, proc_id, task, answer_at_end=True, proof=proof)
        return await self.get_status(job.id, caller, wait, until_final=True)

    # -- running ------------------------------------------------------------------------------------------------

    def _is_remote(self, active: ActiveJob) -> bool:
        processor = self._processors.get(active.job.proc_id)
        return processor is not None and processor.backend.reattachable

    def _enqueue(self, active: ActiveJob) -> None:
        """A processor's job waits for one of `max_jobs` slots (`max_remote_jobs` on an ssh or slurm backend); an
        agent's job waits in its agent (`acquire`, fair between users too)."""
        self.scheduler.pending(active.job.task.user_iid, active.job.id)
        processor = self._processors.get(active.job.proc_id)
        if processor is not None and processor.state == "deploying" and processor.task is not None:
            if not self._stopping:
                active.task = asyncio.create_task(self._enqueue_when_deployed(active, processor.task))
            return
        if processor is not None and processor.is_agent:
            if not self._stopping:
                active.task = asyncio.create_task(self._run(active, False))
            return
        self._pool(active).add(active.job.task.user_iid, active.job.id)
        self._dispatch()

    async def _enqueue_when_deployed(self, active: ActiveJob, deploying: asyncio.Task[None]) -> None:
        """A job submitted while its processor deploys waits for the deployment, holding no slot (as in the original
        middleware), then queues as usual; it fails with the reason if the deployment failed."""
        try:
            await asyncio.wait({deploying})
        except asyncio.CancelledError:
            if not self._stopping and not active.machine.final:
                await self._to(active, JobState.CANCELLED, "cancelled by the user")
                await self._finish(active)
            return
        active.task = None
        processor = self._processors.get(active.job.proc_id)
        if processor is not None and processor.state == "ready":
            self._enqueue(active)
            return
        error = processor.error if processor is not None else "undeployed"
        await self._fail(active, f"Processor {active.job.proc_id} could not be deployed: {error}")
        await self._finish(active)

    def _pool(self, active: ActiveJob) -> SlotPool:
        return self.scheduler.remote if self._is_remote(active) else self.scheduler.local

    def _dispatch(self) -> None:
        self.scheduler.reserve(self.bookings.shares())
        for pool in (self.scheduler.local, self.scheduler.remote):
            while not self._stopping and (job_id := pool.next()) is not None:
                active = self._active.get(job_id)
                if active is None or active.machine.state is not JobState.PENDING:
                    pool.release(job_id)
                    continue
                active.task = asyncio.create_task(self._run(active, False))

    def _start_task(self, active: ActiveJob, resume: bool = False, reattach: bool = False) -> None:
        """A job resumed or re-attached after a restart: it holds a slot without waiting for one."""
        self._pool(active).hold(active.job.task.user_iid, active.job.id)
        active.task = asyncio.create_task(self._run(active, resume, reattach))

    @staticmethod
    def _row(active: ActiveJob) -> tuple[str, str, str]:
        """`board.update_job`'s arguments for the job's current state and status."""
        return active.job.id, active.machine.state.value, json.dumps(active.status_doc())

    async def _save(self, active: ActiveJob) -> None:
        await self.db.run(board.update_job, *self._row(active))

    def _save_later(self, active: ActiveJob) -> None:
        """Queue the job's row without waiting: it lands before any later write of the board, so it needs no wait
        when nothing depends on it before the job's next awaited write."""
        self.db.write_behind(board.update_job, *self._row(active))

    async def _to(self, active: ActiveJob, state: JobState, reason: str = "", wait: bool = True) -> None:
        """Record a transition; with `wait=False` it is queued (`_save_later`): for a transition a restart may lose
        because the job's next awaited write follows (initialising, postprocessing)."""
        active.machine.transition(state, reason)
        if active.machine.final:
            self._audit_job(active, state.value, reason=reason)
        if state is not JobState.PENDING:
            self.scheduler.not_pending(active.job.id)
        if wait:
            await self._save(active)
        else:
            self._save_later(active)
        active.notify()

    def _audit_job(self, active: ActiveJob, event: str, **details: Any) -> None:
        job = active.job
        self._node.audit.record(f"job.{event}", owner=job.task.user_iid, job_id=job.id, proc_id=job.proc_id, **details)

    async def _run(self, active: ActiveJob, resume: bool, reattach: bool = False) -> None:
        job = active.job
        try:
            processor = self._processors.get(job.proc_id)
            if processor is None or processor.state != "ready":
                raise runner.JobFailedError(f"Processor {job.proc_id} is not deployed")
            consumes: dict[str, dict[str, Any]] = {}
            if reattach:
                consumes = active.consumes
                await self._execute(active, processor, reattach=True)
                self._release(job.id)
            elif not resume:
                if processor.agent is not None:
                    # the job stays pending until admitted (fairly between users)
                    await self.bookings.admit_agent(processor, job.task.user_iid)  # bookings hold
                    active.lease = await processor.agent.acquire(job.task.user_iid)
                consumes = await self._initialise(active, processor)
                await self._execute(active, processor)
                # The limit is on running adapters: storing outputs does not hold a slot.
                self._release(job.id)
            else:
                consumes = active.consumes
            await self._postprocess(active, processor, consumes)
            await self._to(active, JobState.SUCCESSFUL, "all outputs stored")
        except (runner.JobFailedError, InsufficientStorageError) as e:  # a full disk (also the board's): its reason
            await self._fail(active, e.reason)
        except asyncio.CancelledError:
            if not self._stopping and not active.machine.final:
                await self._to(active, JobState.CANCELLED, "cancelled by the user")
        except Exception as e:
            logger.exception("job %s failed unexpectedly", job.id)
            await self._fail(active, f"Internal error: {type(e).__name__}")
        finally:
            self._release(job.id)
            if active.lease is not None:
                active.lease.release()  # unused (e.g. the inputs could not be prepared)
            for file in active.agent_logs or ():
                file.close()  # opened with the folder, but the job never reached an instance
            active.agent_logs = None
            if active.machine.final:
                await self._finish(active)

    def _release(self, job_id: str) -> None:
        if self.scheduler.release(job_id):
            self._dispatch()

    async def _fail(self, active: ActiveJob, reason: str) -> None:
        if active.machine.final:
            return
        active.errors.append(reason)
        try:
            await self._to(active, JobState.FAILED, reason)
        except InsufficientStorageError as e:  # a full disk: failed in memory; a restart resumes from the board
            logger.warning("job %s failed (%s); its state could not be recorded: %s", active.job.id, reason, e.reason)
            active.notify()

    async def _finish(self, active: ActiveJob) -> None:
        self._active.pop(active.job.id, None)
        for listener in self.on_finish:
            try:
                listener(active)
            except Exception:  # an observer must not break the job's end
                logger.exception("job %s: a listener of finished jobs failed", active.job.id)
        self.scheduler.not_pending(active.job.id)
        active.notify()
        self.db.write_behind(board.forget_proof, active.job.id)
        if not active.job.retain:
            self._remove_later(self._wd(active.job.id))

    def _remove_later(self, folder: Path) -> None:
        """Remove a finished job's working folder in the background, together with the others finished meanwhile
        (one worker-thread hop for many folders on a busy node)."""
        self._to_remove.append(folder)
        if self._remover is None or self._remover.done():
            self._remover = asyncio.create_task(self._remove_folders())

    async def _remove_folders(self) -> None:
        while self._to_remove:
            folders, self._to_remove = self._to_remove, []
            await asyncio.to_thread(_remove_folders, folders)

    async def _initialise(self, active: ActiveJob, processor: ProcessorRecord) -> dict[str, dict[str, Any]]:
        """Locate the by-reference inputs, then create the working folder with the by-value inputs and the plain
        inputs of this node's DOR in one go; other inputs are fetched after. What the recipe records about the
        inputs is kept in the job's row (stored with the next awaited write, before the adapter starts)."""
        # Queued, not awaited: a restart before it lands finds the job pending (queued again: nothing ran yet).
        await self._to(active, JobState.INITIALISING, "preparing inputs", wait=False)
        job, wd, logs = active.job, self._wd(active.job.id), self._logs(active.job.id)
        specs = {s.name: s for s in processor.gpp.proc_descriptor.input}
        consumes: dict[str, dict[str, Any]] = {}
        located: dict[str, Any] = {}
        for item in job.task.input:
            spec = specs[item.name]
            if isinstance(item, Task.InputValue):
                consumes[item.name] = {
                    "c_hash": hashlib.sha256(json.dumps(item.value).encode()).hexdigest(),
                    "data_type": spec.data_type,
                    "data_format": spec.data_format,
                    "content": item.value,
                }
            else:
                fresh = time.monotonic() - active.located_at < LOCATION_FRESH_S and item.name in active.located
                if fresh:  # checked at submission a moment ago
                    located[item.name] = active.located[item.name]
                    if located[item.name].custodian is None and self._node.dor is not None:
                        self._node.dor.touch_later(located[item.name].meta.obj_id)
                else:
                    located[item.name] = await runner.locate_input(self._node, job, item, spec)
                consumes[item.name] = placement.describe(located[item.name])
        active.located = {}
        local = [name for name, location in located.items() if runner.copies_locally(location)]
        agent = active.lease is not None
        sandbox = self._sandbox
        fetched = [i for i in job.task.input if isinstance(i, Task.InputReference) and i.name not in local]

        def make_folder() -> tuple[BinaryIO, BinaryIO] | None:
            try:
                wd.mkdir()
            except FileExistsError:  # left by an earlier attempt (the job was queued again after a restart)
                shutil.rmtree(wd)
                wd.mkdir()
            for item in job.task.input:
                if isinstance(item, Task.InputValue):
                    runner.write_value(wd, item.name, item.value)
            for name, location in located.items():
                runner.write_meta(wd, name, location.meta)
            for name in local:
                runner.copy_local(self._node, name, located[name], wd)
            if sandbox.uid is not None and not fetched:
                sandbox.own(wd, recursive=True)  # the sandboxed job's to read and write
            if agent:
                return open_job_logs(logs)  # (it makes the log folder)
            logs.mkdir(parents=True, exist_ok=True)
            return None

        active.agent_logs = await asyncio.to_thread(make_folder)
        for name in local:
            meta = located[name].meta
            self._node.audit.record(
                "object.read", actor=job.task.user_iid, owner=meta.owner_iid, obj_id=meta.obj_id, job_id=job.id
            )
        for item in fetched:
            await runner.fetch_input(self._node, item, located[item.name], wd, job.task.user_iid)
        if fetched and sandbox.uid is not None:
            await asyncio.to_thread(sandbox.own, wd, True)
        active.consumes = consumes
        return consumes

    async def _execute(self, active: ActiveJob, processor: ProcessorRecord, reattach: bool = False) -> None:
        if active.lease is not None:
            await self._execute_on_agent(active, processor)
            return
        if not reattach:
            active.machine.transition(JobState.RUNNING, "execute.sh started")  # stored with the handle once started
            self._audit_job(active, "running")
        adapter = deployment.adapter_dir(self._proc_root(processor.proc_id), processor.gpp)

        async def on_start(handle: dict[str, Any]) -> None:
            if processor.backend.reattachable:
                active.remote = handle
            else:
                active.pid = handle.get("pid")
            await self._save(active)
            active.notify()

        descriptor = processor.gpp.proc_descriptor
        task_resources = active.job.task.resources
        resources = _resources(descriptor.model_extra, task_resources, processor.spec)
        resources = packages.fill(resources, active.job.package)
        await processor.backend.execute(
            JobContext(
                job_id=active.job.id,
                proc_id=processor.proc_id,
                config=processor.gpp.proc_config,
                adapter=adapter,
                wd=self._wd(active.job.id),
                logs=self._logs(active.job.id),
                outputs=[s.name for s in descriptor.output],
                on_line=lambda line: board.apply_line(active, line),
                on_handle=on_start,
                detaching=lambda: self._stopping,
                resources=resources,
                limits=self._limits(resources),
                network=self._job_network(descriptor),
                visible=self._proc_root(processor.proc_id) / "repo",
                handle=active.remote if reattach else None,
            )
        )
        active.pid = None
        active.remote = None
        await packages.check_disk(self._wd(active.job.id), active.job.package)
        await self._to(active, JobState.POSTPROCESSING, "execute.sh finished", wait=False)

    async def _execute_on_agent(self, active: ActiveJob, processor: ProcessorRecord) -> None:
        """Hand the job to a free instance of the agent; it ends the job with trigger:done or trigger:error."""
        assert processor.agent is not None and active.lease is not None

        def on_start(index: int) -> asyncio.Future[None]:
            """Recorded before the instance gets the job (which it does in the callback of this future)."""
            active.machine.transition(JobState.RUNNING, f"sent to agent instance {index}")
            self._audit_job(active, "running", instance=index)
            active.notify()
            return self.db.submit(board.update_job, *self._row(active))

        files, active.agent_logs = active.agent_logs, None
        await processor.agent.run_job(
            active.lease,
            active.job.id,
            self._wd(active.job.id),
            self._logs(active.job.id),
            lambda line: board.apply_line(active, line),
            on_start,
            files,
        )
        await self._to(active, JobState.POSTPROCESSING, "the agent finished the job", wait=False)

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

    async def _postprocess(
        self, active: ActiveJob, processor: ProcessorRecord, consumes: dict[str, dict[str, Any]]
    ) -> None:
        """Check the outputs, fix each one's bytes and creation time, then store them: into this node's DOR in the
        same worker-thread hop that checks them, or uploaded to another DOR. A restart resumes here and stores
        exactly the same objects (the DOR answers a repeated add with the object it already has)."""
        job, wd, dor = active.job, self._wd(active.job.id), self._node.dor
        specs: dict[str, ProcessorIO] = {s.name: s for s in processor.gpp.proc_descriptor.output}
        pending = [o for o in job.task.output if o.name not in active.outputs]
        if not pending:
            active.progress = 100
            return
        owners: dict[str, Identity | None] = {}
        targets: dict[str, Any] = {}
        for out in pending:
            owners[out.name] = self._node.nodedb.get_identity(out.owner_iid) if out.content_encrypted else None
            if out.content_encrypted and owners[out.name] is None:
                raise runner.JobFailedError(f"The owner of output '{out.name}' is not known")
            targets[out.name] = await runner.output_target(self._node, out)
        created = await self.db.run(board.outputs_created, job.id, [o.name for o in pending], _now())
        todo = [o for o in pending if created[o.name][1] is None]
        for out in pending:
            if out not in todo:  # stored before a restart
                active.outputs[out.name] = str(created[out.name][1])
        if not todo:
            active.progress = 100
            return
        local = [o.name for o in todo if targets[o.name] is None]
        announced = set(active.announced)
        proof = await self.db.run(board.get_proof, job.id) if len(local) < len(todo) else None
        if len(local) < len(todo) and proof is None:
            raise runner.JobFailedError(
                "This job was submitted before nodes kept the user's signed task, which another node's DOR needs "
                "to store its outputs: submit it again"
            )

        def params_for(out: Task.Output, envelope: str | None, c_hash: str) -> AddCDataObjectParameters:
            """The output's parameters, its recipe signed by this node (blocks: crypto)."""
            recipe = runner.recipe_for(processor.gpp, consumes, specs[out.name], job)
            recipe.product["c_hash"] = c_hash
            try:
                recipe = claims.sign_recipe(recipe, self._node.keystore)
            except ValueError:  # canonical JSON holds no NaN or infinity (a by-value input may)
                raise runner.JobFailedError(
                    f"Output '{out.name}': its recipe cannot be signed (an input holds NaN or infinity)"
                ) from None
            return runner.output_params(
                job, specs[out.name], out, envelope, recipe, None if out.name in local else proof
            )

        limit = self._node.config.max_object_size
        # What each owner may still store in this node's DOR (None: no quota): outputs are checked against it
        # before their bytes are copied (the insert checks again, exactly).
        room: dict[str, int | None] = {}
        for out in todo:
            if dor is not None and out.name in local and out.owner_iid not in room:
                with runner.storing(out.name):
                    room[out.owner_iid] = await dor.room_for(out.owner_iid, 0)

        async with dor.local_adds() if dor is not None and local else contextlib.nullcontext() as adds:

            def fix_bytes() -> dict[str, tuple[Path, AddCDataObjectParameters, str, int]]:
                """Checked (also against `max_object_size` and the owner's quota); this node's DOR gets a plain
                output's content right away, others are first written once to `.store/<name>` (encrypted when
                asked). Per output: the file, its parameters (with the signed recipe), c_hash and size."""
                unfixed = [specs[o.name] for o in todo if not (wd / ".store" / o.name).is_file()]
                runner.check_outputs(unfixed, wd, announced)
                left = dict(room)
                result = {}
                for out in todo:
                    owner_room = left.get(out.owner_iid)
                    with runner.storing(out.name):
                        if adds is not None and out.name in local and not out.content_encrypted:
                            # Straight from the folder: a retry reads the same file (the adapter is done with it).
                            path, envelope = runner.input_path(wd, out.name), None
                            try:
                                runner.check_output_size(out.name, path, limit, owner_room)
                                c_hash, size = adds.put(path)
                            except OSError as e:
                                raise runner.JobFailedError(
                                    f"Output '{out.name}' cannot be read: {e.strerror}"
                                ) from None
                        else:  # fixed once in `.store/` (encrypted with a fresh key, or for an upload)
                            source = wd / ".store" / out.name
                            if not source.is_file():
                                runner.check_output_size(out.name, runner.input_path(wd, out.name), limit)
                            path, envelope = runner.prepare_output(wd, out.name, owners[out.name])
                            runner.check_output_size(out.name, path, limit, owner_room if out.name in local else None)
                            if adds is not None and out.name in local:
                                c_hash, size = adds.put(path)
                            else:
                                c_hash, size = _sha256_file(path), 0
                    if owner_room is not None and out.name in local:
                        left[out.owner_iid] = owner_room - size
                    result[out.name] = (path, params_for(out, envelope, c_hash), c_hash, size)
                return result

            fixed = await in_thread_to_the_end(fix_bytes)  # what it put in the DOR is known even if cancelled
            for out in todo:
                if adds is not None and out.name in local:
                    _, params, c_hash, size = fixed[out.name]
                    when = created[out.name][0]
                    with runner.storing(out.name):  # the owner's quota, checked with the insert
                        stored = await adds.record(self._node.iid, params, c_hash, size, when)
                    self._stored(active, out, stored)
        for out in todo:  # other DORs: uploaded without holding this DOR's content guard
            if out.name not in local:
                path, params, _, _ = fixed[out.name]
                stored = await runner.upload_output(
                    self._node, targets[out.name], params, path, created[out.name][0], out.name
                )
                if stored.custodian is not None and stored.custodian.identity.id != self._node.iid:
                    active.stored_elsewhere[out.name] = stored.model_dump(mode="json")
                self._stored(active, out, stored)
        active.progress = 100

    def _stored(self, active: ActiveJob, out: Task.Output, stored: CDataObject) -> None:
        active.stored[out.name] = stored
        active.outputs[out.name] = stored.obj_id
        self.db.write_behind(board.output_stored, active.job.id, out.name, stored.obj_id)  # the job's row follows

    # -- control ------------------------------------------------------------------------------------------------

    async def _job(self, job_id: str, caller: Identity) -> tuple[Job, ActiveJob | None, sqlite3.Row | None]:
        return await self.reader.job(job_id, caller)

    async def get_status(
        self, job_id: str, caller: Identity, wait: float = 0.0, until_final: bool = False
    ) -> JobStatus:
        """With `wait`: answer at the job's next change (or, `until_final`, once it is final), at most `wait` s."""
        return await self.reader.get_status(job_id, caller, wait, until_final)

    async def get_jobs(self, caller: Identity, limit: int = 1000) -> list[Job]:
        return await self.reader.get_jobs(caller, limit)

    async def cancel(self, job_id: str, caller: Identity) -> JobStatus:
        _, active, _ = await self._job(job_id, caller)
        if active is None:
            raise ProcessorBusyError(f"Job {job_id} has already finished", {"job_id": job_id})
        self._node.audit.record("job.cancel", actor=caller.id, owner=active.job.task.user_iid, job_id=job_id)
        await self._cancel(active, "cancelled by the user")
        return await self.get_status(job_id, caller)

    async def _cancel(self, active: ActiveJob, reason: str) -> None:
        if active.machine.final:
            return
        if active.task is not None:
            active.task.cancel()
            await asyncio.gather(active.task, return_exceptions=True)
            return
        self.scheduler.remove(active.job.id)
        await self._to(active, JobState.CANCELLED, reason)
        await self._finish(active)

    async def logs_folder(self, job_id: str, caller: Identity) -> tuple[Path, bool]:
        """The job's log folder and whether the job is still running (for follow)."""
        return await self.reader.logs_folder(job_id, caller)

    def active_jobs(self) -> list[ActiveJob]:
        """The jobs that are not final yet (read only: for health and diagnostics)."""
        return list(self._active.values())

    def changed(self, job_id: str) -> asyncio.Event | None:
        active = self._active.get(job_id)
        return active.changed if active is not None else None


def _remove_folders(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _sha256_file(path: Path) -> str:
    from saas.core.pipeline import hash_file

    with open(path, "rb") as f:
        return hash_file(f)[0]
