"""The job pipeline of the RTI: recovery, the queues, and each job's task, carrying out what the pure job core
(`saas.rti.jobs`) decides: `for instruction in jobs.handle(machine, event): await self._do(instruction)`.

`JobPipeline` is a base class of `RTIService` (which owns the processors, the board and the lifecycle). What callers
may rely on is documented in `saas.rti.service`; here: every transition is stored (or queued, for one a restart may
lose) before anything depends on it; a job holds one slot from its dispatch until its adapter ended (storing
outputs holds none); a job's task always ends with `TaskEnded` (slot, lease and log files released, a final job
finished)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas.core.errors import InsufficientStorageError
from saas.core.identity import Identity
from saas.dor.schemas import CDataObject
from saas.rti import board, inputs, jobs, limits, outputs, packages, process, records
from saas.rti import deploy as deployment
from saas.rti.admission import Submissions
from saas.rti.backends import JobContext
from saas.rti.jobs import JobFailedError, JobState, JobStateMachine
from saas.rti.messages import MessageLog
from saas.rti.processors import ProcessorBusyError
from saas.rti.records import ActiveJob, ProcessorRecord
from saas.rti.schemas import Job, JobStatus, Task

if TYPE_CHECKING:
    import sqlite3

    from saas.node import Node
    from saas.rti.bookings import BookingStore
    from saas.rti.cgroups import Limits
    from saas.rti.levels import LevelStore
    from saas.rti.sandbox import Sandbox
    from saas.rti.scheduler import Scheduler, SlotPool
    from saas.sqlite import Database

__all__ = ["JobPipeline"]

logger = logging.getLogger(__name__)


def _now() -> int:
    return int(time.time() * 1000)


class JobPipeline(Submissions):
    """The jobs of an `RTIService` (set up by its `__init__`)."""

    _node: Node
    db: Database
    scheduler: Scheduler
    bookings: BookingStore
    levels: LevelStore
    packages: dict[str, packages.Package]
    max_jobs: int
    on_finish: list[Callable[[ActiveJob], None]]
    _processors: dict[str, ProcessorRecord]
    _active: dict[str, ActiveJob]
    _stopping: bool
    _to_remove: list[Path]
    _remover: asyncio.Task[None] | None

    if TYPE_CHECKING:  # the processors' side, in `RTIService`

        @property
        def retain(self) -> bool: ...
        @property
        def _sandbox(self) -> Sandbox: ...
        def _processor(self, proc_id: str) -> ProcessorRecord: ...
        def _limits(self, resources: dict[str, Any] | None = None, walltime: bool = True) -> Limits: ...
        def _proc_root(self, proc_id: str) -> Path: ...
        def _wd(self, job_id: str) -> Path: ...
        def _logs(self, job_id: str) -> Path: ...
        def _job_network(self, descriptor: Any) -> bool: ...
        async def _job(self, job_id: str, caller: Identity) -> tuple[Job, ActiveJob | None, sqlite3.Row | None]: ...
        async def get_status(
            self, job_id: str, caller: Identity, wait: float = 0.0, until_final: bool = False
        ) -> JobStatus: ...

    # -- after a restart ----------------------------------------------------------------------------------------

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
        p = self._processors.get(job.proc_id)
        before = active.machine.state
        event = jobs.NodeRestarted(
            _now(),
            restartable=bool(p and (p.gpp.proc_descriptor.model_extra or {}).get("restartable")),
            agent=p is not None and p.is_agent,
            reattachable=bool(doc.get("remote") and p is not None and p.state == "ready" and p.backend.reattachable),
            pid=int(doc["pid"]) if doc.get("pid") else None,
        )
        instructions = jobs.handle(active.machine, event)
        if not active.machine.final:
            self._active[job.id] = active
        reattach = instructions == [jobs.StartTask(reattach=True)]
        if reattach:
            active.remote = doc["remote"]
            logger.info("job %s found running on the %s backend: re-attaching", job.id, p.backend.name if p else "")
        for instruction in instructions:
            if not reattach and isinstance(instruction, (jobs.Finish, jobs.StartTask, jobs.Enqueue)):
                logger.info("job %s found %s after restart: now %s", job.id, before.value, active.machine.state.value)
            await self._do(active, instruction)

    async def _recorded_consumes(self, job_id: str, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """What the recipes record about a job's inputs: in its row, or (older boards) `.store/consumes.json`."""
        if "consumes" in doc:
            return dict(doc["consumes"])
        path = self._wd(job_id) / ".store" / "consumes.json"
        text = await asyncio.to_thread(lambda: path.read_text() if path.is_file() else "{}")
        return dict(json.loads(text))

    # -- queues -------------------------------------------------------------------------------------------------

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
            await self._drive(active, jobs.Cancelled(_now(), self._stopping, finish=True))
            return
        active.task = None
        p = self._processors.get(active.job.proc_id)
        error = p.error if p is not None else "undeployed"
        await self._drive(
            active, jobs.Deployed(_now(), active.job.proc_id, p is not None and p.state == "ready", error)
        )

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

    def _release(self, job_id: str) -> None:
        if self.scheduler.release(job_id):
            self._dispatch()

    # -- a job's task -------------------------------------------------------------------------------------------

    async def _run(self, active: ActiveJob, resume: bool, reattach: bool = False) -> None:
        job = active.job
        try:
            processor = self._processors.get(job.proc_id)
            if processor is None or processor.state != "ready":
                raise JobFailedError(f"Processor {job.proc_id} is not deployed")
            if reattach:
                await self._drive(active, jobs.Reattached(_now()), processor)
            elif resume:
                await self._drive(active, jobs.Resumed(_now()), processor)
            else:  # an agent's job stays pending until admitted (fairly between users)
                await self._drive(active, jobs.Dispatched(_now(), processor.agent is not None), processor)
        except (JobFailedError, InsufficientStorageError) as e:  # a full disk (also the board's): its reason
            await self._drive(active, jobs.Failed(_now(), e.reason))
        except asyncio.CancelledError:
            await self._drive(active, jobs.Cancelled(_now(), self._stopping))
        except Exception as e:
            logger.exception("job %s failed unexpectedly", job.id)
            await self._drive(active, jobs.Failed(_now(), f"Internal error: {type(e).__name__}"))
        finally:
            await self._drive(active, jobs.TaskEnded(_now()))

    async def _drive(self, active: ActiveJob, event: jobs.Event, processor: ProcessorRecord | None = None) -> None:
        """Feed `event` to the core and carry out its instructions; an instruction's work ends with the next event."""
        events: list[jobs.Event] = [event]
        while events:
            for instruction in jobs.handle(active.machine, events.pop(0)):
                following = await self._do(active, instruction, processor)
                if following is not None:
                    events.append(following)

    async def _do(
        self, active: ActiveJob, instruction: jobs.Instruction, processor: ProcessorRecord | None = None
    ) -> jobs.Event | None:
        job = active.job
        if isinstance(instruction, jobs.Persist):
            await self._persist(active, instruction)
        elif isinstance(instruction, jobs.Enqueue):
            self._enqueue(active)
        elif isinstance(instruction, jobs.Unqueue):
            self.scheduler.remove(job.id)
        elif isinstance(instruction, (jobs.Release, jobs.Cleanup)):
            self._release(job.id)
            if isinstance(instruction, jobs.Cleanup):
                if active.lease is not None:
                    active.lease.release()  # unused (e.g. the inputs could not be prepared)
                for file in active.agent_logs or ():
                    file.close()  # opened with the folder, but the job never reached an instance
                active.agent_logs = None
        elif isinstance(instruction, jobs.Finish):
            await self._finish(active)
        elif isinstance(instruction, jobs.CancelTask):
            assert active.task is not None
            active.task.cancel()
            await asyncio.gather(active.task, return_exceptions=True)
        elif isinstance(instruction, jobs.KillLeftover):
            if await asyncio.to_thread(process.kill_leftover, instruction.pid, job.id):
                logger.info("job %s: killed the processes left from before the restart", job.id)
        elif isinstance(instruction, jobs.StartTask):
            self._start_task(active, resume=not instruction.reattach, reattach=instruction.reattach)
        elif processor is None:
            self._do_now(active, instruction)
        elif isinstance(instruction, jobs.Acquire):
            assert processor.agent is not None
            await self.bookings.admit_agent(processor, job.task.user_iid)  # bookings hold
            active.lease = await processor.agent.acquire(job.task.user_iid)
            return jobs.Admitted(_now())
        elif isinstance(instruction, jobs.PrepareInputs):
            await self._initialise(active, processor)
            return jobs.InputsReady(_now(), agent=active.lease is not None)
        elif isinstance(instruction, jobs.Execute):
            await self._execute(active, processor, reattach=instruction.reattach)
            return jobs.Finished(_now())
        elif isinstance(instruction, jobs.ExecuteOnAgent):
            await self._execute_on_agent(active, processor)
            return jobs.Finished(_now(), agent=True)
        elif isinstance(instruction, jobs.StoreOutputs):
            await self._postprocess(active, processor, active.consumes)
            return jobs.OutputsStored(_now())
        else:
            self._do_now(active, instruction)
        return None

    def _do_now(self, active: ActiveJob, instruction: jobs.Instruction) -> asyncio.Future[None] | None:
        """The instructions carried out without waiting (`PersistSoon` answers with the write's future)."""
        if isinstance(instruction, jobs.RecordError):
            active.errors.append(instruction.reason)
        elif isinstance(instruction, jobs.Audit):
            self._audit_job(active, instruction.event, **instruction.details)
        elif isinstance(instruction, jobs.Notify):
            active.notify()
        elif isinstance(instruction, jobs.PersistSoon):
            return self.db.submit(board.update_job, *self._row(active))
        else:
            raise TypeError(f"{instruction!r} cannot be carried out here")
        return None

    async def _persist(self, active: ActiveJob, instruction: jobs.Persist) -> None:
        """The job's transition recorded (see `jobs.Persist`)."""
        state, reason = active.machine.state, active.machine.timeline[-1]["reason"]
        try:
            if active.machine.final:
                self._audit_job(active, state.value, reason=reason)
            if state is not JobState.PENDING:
                self.scheduler.not_pending(active.job.id)
            if instruction.wait:
                await self._save(active)
            else:
                self._save_later(active)
        except InsufficientStorageError as e:  # a full disk: failed in memory; a restart resumes from the board
            if not instruction.lenient:
                raise
            logger.warning("job %s failed (%s); its state could not be recorded: %s", active.job.id, reason, e.reason)
        active.notify()

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

    def _audit_job(self, active: ActiveJob, event: str, **details: Any) -> None:
        job = active.job
        self._node.audit.record(f"job.{event}", owner=job.task.user_iid, job_id=job.id, proc_id=job.proc_id, **details)

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

    # -- the work of a job's instructions -----------------------------------------------------------------------

    async def _initialise(self, active: ActiveJob, processor: ProcessorRecord) -> dict[str, dict[str, Any]]:
        job_id = active.job.id
        wd, logs = self._wd(job_id), self._logs(job_id)
        return await inputs.prepare(
            self.dor, self.network, self._keys, self._audit, active, processor, self._sandbox, wd, logs
        )

    async def _execute(self, active: ActiveJob, processor: ProcessorRecord, reattach: bool = False) -> None:
        adapter = deployment.adapter_dir(self._proc_root(processor.proc_id), processor.gpp)

        async def on_start(handle: dict[str, Any]) -> None:
            if processor.backend.reattachable:
                active.remote = handle
            else:
                active.pid = handle.get("pid")
            await self._save(active)
            active.notify()

        descriptor = processor.gpp.proc_descriptor
        resources = limits.resources(descriptor.model_extra, active.job.task.resources, processor.spec)
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
                on_line=lambda line: records.apply_line(active, line),
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

    async def _execute_on_agent(self, active: ActiveJob, processor: ProcessorRecord) -> None:
        """Hand the job to a free instance of the agent; it ends the job with trigger:done or trigger:error."""
        assert processor.agent is not None and active.lease is not None

        def on_start(index: int) -> asyncio.Future[None]:
            """Recorded before the instance gets the job (which it does in the callback of this future)."""
            written = None
            for instruction in jobs.handle(active.machine, jobs.StartedOnAgent(_now(), index)):
                written = self._do_now(active, instruction) or written
            assert written is not None
            return written

        files, active.agent_logs = active.agent_logs, None
        await processor.agent.run_job(
            active.lease,
            active.job.id,
            self._wd(active.job.id),
            self._logs(active.job.id),
            lambda line: records.apply_line(active, line),
            on_start,
            files,
        )
        await packages.check_disk(self._wd(active.job.id), active.job.package)  # the folder is back from the agent

    async def _postprocess(
        self, active: ActiveJob, processor: ProcessorRecord, consumes: dict[str, dict[str, Any]]
    ) -> None:
        wd = self._wd(active.job.id)
        limit, stored = self._config.max_object_size, self._stored(active)
        await outputs.store(
            self.dor, self.network, self._keys, limit, self.db, active, processor, consumes, wd, _now(), stored
        )
        active.progress = 100

    def _stored(self, active: ActiveJob) -> Callable[[Task.Output, CDataObject], None]:
        def stored(out: Task.Output, obj: CDataObject) -> None:
            active.stored[out.name] = obj
            active.outputs[out.name] = obj.obj_id
            self.db.write_behind(board.output_stored, active.job.id, out.name, obj.obj_id)  # the job's row follows

        return stored

    # -- control ------------------------------------------------------------------------------------------------

    async def cancel(self, job_id: str, caller: Identity) -> JobStatus:
        _, active, _ = await self._job(job_id, caller)
        if active is None:
            raise ProcessorBusyError(f"Job {job_id} has already finished", {"job_id": job_id})
        self._node.audit.record("job.cancel", actor=caller.id, owner=active.job.task.user_iid, job_id=job_id)
        await self._cancel(active, "cancelled by the user")
        return await self.get_status(job_id, caller)

    async def _cancel(self, active: ActiveJob, reason: str) -> None:
        await self._drive(active, jobs.CancelRequested(_now(), reason, has_task=active.task is not None))

    def active_jobs(self) -> list[ActiveJob]:
        """The jobs that are not final yet (read only: for health and diagnostics)."""
        return list(self._active.values())

    def changed(self, job_id: str) -> asyncio.Event | None:
        active = self._active.get(job_id)
        return active.changed if active is not None else None


def _remove_folders(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
