"""`RTIService`: processors and the job board of a node (DESIGN §8).

What callers may rely on:
- deployment is asynchronous: `deploy` returns at once with state `deploying`; the processor becomes `ready` or
  `failed` (with the install log tail). Processors survive a restart (they are not reinstalled).
- the job board is SQLite (`<datastore>/rti/jobs.sqlite`); every state transition is stored with its time and reason
  before anything depends on it. At most `max_jobs` jobs run at once (`max_remote_jobs` on ssh and slurm backends,
  which run on other machines); the rest wait in submission order.
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
from collections import deque
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
from saas.dor.schemas import CDataObject, GitProcessorPointer, ProcessorIO
from saas.rti import board, placement, runner
from saas.rti import deploy as deployment
from saas.rti.agents import AgentPool
from saas.rti.backends import Backend, JobContext, make_backend
from saas.rti.board import ActiveJob, ProcessorRecord
from saas.rti.jobs import FINAL_STATES, JobState, JobStateMachine, recover
from saas.rti.schemas import DeployParameters, Job, JobStatus, Processor, Task
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


class UnknownProcessorError(RTIError, NotFoundError):
    pass


class UnknownJobError(RTIError, NotFoundError):
    pass


class JobValidationError(RTIError, InvalidInputError):
    pass


class ProcessorBusyError(RTIError, ConflictError):
    pass


_ID_ALPHABET = string.ascii_letters + string.digits


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
        self.db = Database(self.root / "jobs.sqlite", board.SCHEMA)
        self.max_jobs = node.config.max_jobs or os.cpu_count() or 1
        self.install_timeout = node.config.install_timeout
        self._processors: dict[str, ProcessorRecord] = {}
        self._active: dict[str, ActiveJob] = {}
        self._queue: deque[str] = deque()
        # Jobs on ssh/slurm backends run on other machines: they have their own queue and limit.
        self._queue_remote: deque[str] = deque()
        self._running_remote: set[str] = set()
        self.max_remote_jobs = node.config.max_remote_jobs
        self._running: set[str] = set()
        self._stopping = False
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def retain(self) -> bool:
        return self._node.config.retain_job_history

    def _proc_root(self, proc_id: str) -> Path:
        return self.root / "procs" / proc_id

    def _wd(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def _logs(self, job_id: str) -> Path:
        return self.root / "logs" / job_id

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        def open_all() -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            for sub in ("procs", "jobs", "logs"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            self.db.open()
            self.db.call(board.migrate)
            procs = self.db.call(lambda c: c.execute("SELECT * FROM processors").fetchall())
            return procs, self.db.call(board.unfinished)

        procs, unfinished = await asyncio.to_thread(open_all)
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
                p.state, p.error = "failed", "node restarted during deployment"
                await self.db.run(board.put_processor, p)
            self._processors[p.proc_id] = p
            if p.state == "ready" and p.is_agent:
                p.agent = self._new_pool(p)
                p.task = asyncio.create_task(self._restart_agent(p))
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
            doc["messages"],
            doc["errors"],
            doc["announced"],
            doc["outputs"],
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
            killed = await asyncio.to_thread(runner.kill_leftover, int(doc["pid"]), job.id)
            if killed:
                logger.info("job %s: killed the processes left from before the restart", job.id)
        state = recover(active.machine, restartable)
        if state is JobState.FAILED:
            active.errors.append("node restarted")
        if state is not before:
            await self._save(active)
        logger.info("job %s found %s after restart: now %s", job.id, before.value, state.value)
        if state in FINAL_STATES:
            await self._finish(active)
            return
        self._active[job.id] = active
        if state is JobState.POSTPROCESSING:
            self._start_task(active, resume=True)
        else:
            self._enqueue(active)

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
        for processor in self._processors.values():
            with contextlib.suppress(Exception):
                await processor.backend.close()
        await asyncio.to_thread(self.db.close)

    # -- processors ---------------------------------------------------------------------------------------------

    def _may_deploy(self, caller: Identity) -> None:
        if self._node.config.strict_deployment and caller.id != self._node.iid:
            raise AuthorisationError("Strict deployment: only the node owner may deploy or undeploy processors")

    async def locate_gpp(self, proc_id: str, custodian: str | None = None) -> GitProcessorPointer:
        """The GPP of a processor: from this node's DOR, else from any DOR of the network."""
        from saas.rti import placement

        try:
            return await placement.find_gpp(self._node, proc_id, custodian)
        except NotFoundError as e:
            raise UnknownProcessorError(e.reason, {"proc_id": proc_id}) from None

    def get_deployed(self) -> list[Processor]:
        return [p.model() for p in self._processors.values()]

    def get_processor(self, proc_id: str, caller: Identity | None = None) -> Processor:
        """A processor's state; the jobs its agent instances hold are shown to the node owner only."""
        return self._processor(proc_id).model(show_jobs=caller is not None and caller.id == self._node.iid)

    def _processor(self, proc_id: str) -> ProcessorRecord:
        if proc_id not in self._processors:
            raise UnknownProcessorError(f"Processor {proc_id} is not deployed on this node", {"proc_id": proc_id})
        return self._processors[proc_id]

    async def deploy(self, caller: Identity, proc_id: str, params: DeployParameters) -> Processor:
        self._may_deploy(caller)
        existing = self._processors.get(proc_id)
        if existing is not None and existing.state in ("deploying", "ready"):
            return existing.model()
        if existing is not None and existing.agent is not None:
            await existing.agent.stop()  # a failed agent: nothing of it may keep running
        credentials = None
        if params.github_credentials is not None:
            credentials = await decrypt_credentials(
                GithubCredentials, params.github_credentials, self._node.keystore.decrypt, "GitHub credentials"
            )
        spec = self._backend_spec(params)
        gpp = await self.locate_gpp(proc_id, params.gpp_custodian)
        if gpp.proc_descriptor.kind == "agent" and spec["name"] != "local":
            raise InvalidInputError("Agents run on this node only (the local backend), not over SSH or SLURM")
        if existing is not None:  # a failed deployment is replaced
            await existing.backend.close()
        processor = ProcessorRecord(proc_id, "deploying", gpp, spec=spec)
        processor.backend = await self._make_backend(processor)
        self._processors[proc_id] = processor
        await self.db.run(board.put_processor, processor)
        processor.task = asyncio.create_task(self._install(processor, credentials))
        return processor.model()

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
        )

    async def _install(self, processor: ProcessorRecord, credentials: Any) -> None:
        root = self._proc_root(processor.proc_id)
        started = time.monotonic()
        try:
            await processor.backend.install(root, processor.gpp, credentials, self.install_timeout)
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
        return processor.model()

    # -- submitting ---------------------------------------------------------------------------------------------

    def _validate(self, proc_id: str, task: Task, caller: Identity) -> ProcessorRecord:
        if caller.id != task.user_iid:
            raise AuthorisationError("A task must be signed by its user (user_iid)")
        if task.proc_id != proc_id:
            raise JobValidationError(f"The task is for processor {task.proc_id}, not {proc_id}")
        processor = self._processor(proc_id)
        if processor.state != "ready":
            raise JobValidationError(f"Processor {proc_id} is not ready (state: {processor.state})")
        descriptor = processor.gpp.proc_descriptor
        specs = {s.name: s for s in descriptor.input}
        names = [i.name for i in task.input]
        for name in names:
            if name not in specs:
                raise JobValidationError(f"Input '{name}' is not an input of {descriptor.name}")
            if names.count(name) > 1:
                raise JobValidationError(f"Input '{name}' is given more than once")
        missing = [n for n in specs if n not in names]
        if missing:
            raise JobValidationError(f"Missing input(s): {', '.join(missing)}")
        for item in task.input:
            schema = specs[item.name].data_schema
            if isinstance(item, Task.InputValue) and schema is not None:
                problem = runner.schema_error(item.value, schema)
                if problem is not None:
                    raise JobValidationError(f"Input '{item.name}' does not match its data_schema: {problem}")
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

    async def _check_references(self, processor: ProcessorRecord, task: Task, caller: Identity) -> None:
        """Every by-reference input exists (on this node or another), is visible to the user, and has the type and
        format the descriptor asks for."""
        specs = {s.name: s for s in processor.gpp.proc_descriptor.input}
        references = [i for i in task.input if isinstance(i, Task.InputReference)]
        try:
            found = await asyncio.gather(*(placement.find_input(self._node, i, caller.id) for i in references))
        except (NotFoundError, InvalidInputError) as e:
            raise JobValidationError(e.reason) from None
        for item, location in zip(references, found, strict=True):
            meta, spec = location.meta, specs[item.name]
            if (meta.data_type, meta.data_format) != (spec.data_type, spec.data_format):
                raise JobValidationError(
                    f"Input '{item.name}': expected {spec.data_type}/{spec.data_format}, "
                    f"got {meta.data_type}/{meta.data_format}"
                )

    async def submit(self, caller: Identity, proc_id: str, task: Task) -> Job:
        processor = self._validate(proc_id, task, caller)
        await self._check_references(processor, task, caller)
        job = Job(
            id=new_job_id(),
            proc_id=proc_id,
            task=task,
            retain=self.retain,
            t_submitted=_now(),
            custodian_iid=self._node.iid,
        )
        active = ActiveJob(job, JobStateMachine())
        await self.db.run(board.insert_job, active)
        self._active[job.id] = active
        self._enqueue(active)
        return job

    # -- running ------------------------------------------------------------------------------------------------

    def _is_remote(self, active: ActiveJob) -> bool:
        processor = self._processors.get(active.job.proc_id)
        return processor is not None and processor.backend.reattachable

    def _enqueue(self, active: ActiveJob) -> None:
        """A processor's job waits for one of `max_jobs` slots (`max_remote_jobs` on an ssh or slurm backend); an
        agent's job waits in its agent (`acquire`)."""
        processor = self._processors.get(active.job.proc_id)
        if processor is not None and processor.is_agent:
            if not self._stopping:
                active.task = asyncio.create_task(self._run(active, False))
            return
        (self._queue_remote if self._is_remote(active) else self._queue).append(active.job.id)
        self._dispatch()

    def _dispatch(self) -> None:
        for queue, running, limit in (
            (self._queue, self._running, self.max_jobs),
            (self._queue_remote, self._running_remote, self.max_remote_jobs),
        ):
            while queue and len(running) < limit and not self._stopping:
                active = self._active.get(queue.popleft())
                if active is None or active.machine.state is not JobState.PENDING:
                    continue
                self._start_task(active)

    def _start_task(self, active: ActiveJob, resume: bool = False, reattach: bool = False) -> None:
        (self._running_remote if self._is_remote(active) else self._running).add(active.job.id)
        active.task = asyncio.create_task(self._run(active, resume, reattach))

    async def _save(self, active: ActiveJob) -> None:
        await self.db.run(board.update_job, active.job.id, active.machine.state.value, json.dumps(active.status_doc()))

    async def _to(self, active: ActiveJob, state: JobState, reason: str = "") -> None:
        active.machine.transition(state, reason)
        await self._save(active)
        active.notify()

    async def _run(self, active: ActiveJob, resume: bool, reattach: bool = False) -> None:
        job = active.job
        try:
            processor = self._processors.get(job.proc_id)
            if processor is None or processor.state != "ready":
                raise runner.JobFailedError(f"Processor {job.proc_id} is not deployed")
            consumes: dict[str, dict[str, Any]] = {}
            if reattach:
                consumes = self._consumes_from_task(active, processor)
                await self._execute(active, processor, reattach=True)
                self._release(job.id)
            elif not resume:
                if processor.agent is not None:
                    active.lease = await processor.agent.acquire()  # the job stays pending until admitted
                consumes = await self._initialise(active, processor)
                await self._execute(active, processor)
                # The limit is on running adapters: storing outputs does not hold a slot.
                self._release(job.id)
            else:
                consumes = self._consumes_from_task(active, processor)
            await self._postprocess(active, processor, consumes)
            await self._to(active, JobState.SUCCESSFUL, "all outputs stored")
        except runner.JobFailedError as e:
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
            if active.machine.final:
                await self._finish(active)

    def _release(self, job_id: str) -> None:
        if job_id in self._running or job_id in self._running_remote:
            self._running.discard(job_id)
            self._running_remote.discard(job_id)
            self._dispatch()

    async def _fail(self, active: ActiveJob, reason: str) -> None:
        if active.machine.final:
            return
        active.errors.append(reason)
        await self._to(active, JobState.FAILED, reason)

    async def _finish(self, active: ActiveJob) -> None:
        self._active.pop(active.job.id, None)
        active.notify()
        if not active.job.retain:
            await asyncio.to_thread(shutil.rmtree, self._wd(active.job.id), True)

    def _consumes_from_task(self, active: ActiveJob, processor: ProcessorRecord) -> dict[str, dict[str, Any]]:
        path = self._wd(active.job.id) / ".store" / "consumes.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    async def _initialise(self, active: ActiveJob, processor: ProcessorRecord) -> dict[str, dict[str, Any]]:
        await self._to(active, JobState.INITIALISING, "preparing inputs")
        wd, logs = self._wd(active.job.id), self._logs(active.job.id)
        specs = {s.name: s for s in processor.gpp.proc_descriptor.input}

        def make_dirs() -> None:
            shutil.rmtree(wd, ignore_errors=True)
            wd.mkdir(parents=True)
            (wd / ".store").mkdir()
            logs.mkdir(parents=True, exist_ok=True)

        await asyncio.to_thread(make_dirs)
        consumes: dict[str, dict[str, Any]] = {}
        for item in active.job.task.input:
            spec = specs[item.name]
            if isinstance(item, Task.InputValue):
                await asyncio.to_thread(runner.write_value, wd, item.name, item.value)
                raw = json.dumps(item.value).encode()
                consumes[item.name] = {
                    "c_hash": hashlib.sha256(raw).hexdigest(),
                    "data_type": spec.data_type,
                    "data_format": spec.data_format,
                    "content": item.value,
                }
            else:
                consumes[item.name] = await runner.fetch_input(self._node, active.job, item, spec, wd)
        await asyncio.to_thread((wd / ".store" / "consumes.json").write_text, json.dumps(consumes))
        return consumes

    async def _execute(self, active: ActiveJob, processor: ProcessorRecord, reattach: bool = False) -> None:
        if active.lease is not None:
            await self._execute_on_agent(active, processor)
            return
        if not reattach:
            active.machine.transition(JobState.RUNNING, "execute.sh started")  # stored with the handle once started
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
                resources=_resources(descriptor.model_extra, task_resources, processor.spec),
                handle=active.remote if reattach else None,
            )
        )
        active.pid = None
        active.remote = None
        await self._to(active, JobState.POSTPROCESSING, "execute.sh finished")

    async def _execute_on_agent(self, active: ActiveJob, processor: ProcessorRecord) -> None:
        """Hand the job to a free instance of the agent; it ends the job with trigger:done or trigger:error."""
        assert processor.agent is not None and active.lease is not None

        async def on_start(index: int) -> None:
            active.machine.transition(JobState.RUNNING, f"sent to agent instance {index}")
            await self._save(active)
            active.notify()

        await processor.agent.run_job(
            active.lease,
            active.job.id,
            self._wd(active.job.id),
            self._logs(active.job.id),
            lambda line: board.apply_line(active, line),
            on_start,
        )
        await self._to(active, JobState.POSTPROCESSING, "the agent finished the job")

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
        )

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
        job, wd = active.job, self._wd(active.job.id)
        descriptor = processor.gpp.proc_descriptor
        specs: dict[str, ProcessorIO] = {s.name: s for s in descriptor.output}
        pending = [o for o in job.task.output if o.name not in active.outputs]
        if pending:
            missing = [o.name for o in pending if not (wd / ".store" / o.name).is_file()]
            if missing:
                await asyncio.to_thread(runner.check_outputs, [specs[n] for n in missing], wd, set(active.announced))
        for out in pending:
            spec = specs[out.name]
            created, obj_id = await self.db.run(board.output_created, job.id, out.name, _now())
            if obj_id is None:
                owner = self._node.nodedb.get_identity(out.owner_iid) if out.content_encrypted else None
                if out.content_encrypted and owner is None:
                    raise runner.JobFailedError(f"The owner of output '{out.name}' is not known")
                path, envelope = await asyncio.to_thread(runner.prepare_output, wd, out.name, owner)
                recipe = runner.recipe_for(processor.gpp, consumes, spec, job)
                recipe.product["c_hash"] = await asyncio.to_thread(_sha256_file, path)
                stored = await runner.store_output(self._node, job, spec, out, path, envelope, recipe, created)
                obj_id = stored.obj_id
                if stored.custodian is not None and stored.custodian.identity.id != self._node.iid:
                    active.stored_elsewhere[out.name] = stored.model_dump(mode="json")
                await self.db.run(board.output_stored, job.id, out.name, obj_id)
            active.outputs[out.name] = obj_id
            await self._save(active)
        active.progress = 100

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
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(active.changed.wait(), max(0.0, deadline - loop.time()))
                if job_id not in self._active:  # finished while we waited
                    row = await self.db.run(board.get_job, job_id)
                    active = None
                    break
                if not until_final or active.machine.final or loop.time() >= deadline:
                    break
        if active is not None:
            state, doc = active.machine.state.value, active.status_doc()
        else:
            assert row is not None
            state, doc = row["state"], json.loads(row["status"])
        return JobStatus(
            state=state,
            progress=doc["progress"],
            output=await self._output_meta(doc["outputs"], doc.get("stored_elsewhere") or {}),
            messages=doc["messages"],
            errors=doc["errors"],
            timeline=doc["timeline"],
            job=job,
        )

    async def _output_meta(
        self, outputs: dict[str, str], elsewhere: dict[str, dict[str, Any]]
    ) -> dict[str, CDataObject]:
        """Metadata of a job's outputs: from this node's DOR, or as stored on another node's DOR."""
        from saas.dor import catalog

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

    async def cancel(self, job_id: str, caller: Identity) -> JobStatus:
        _, active, _ = await self._job(job_id, caller)
        if active is None:
            raise ProcessorBusyError(f"Job {job_id} has already finished", {"job_id": job_id})
        await self._cancel(active, "cancelled by the user")
        return await self.get_status(job_id, caller)

    async def _cancel(self, active: ActiveJob, reason: str) -> None:
        if active.machine.final:
            return
        if active.task is not None:
            active.task.cancel()
            await asyncio.gather(active.task, return_exceptions=True)
            return
        for queue in (self._queue, self._queue_remote):
            with contextlib.suppress(ValueError):
                queue.remove(active.job.id)
        await self._to(active, JobState.CANCELLED, reason)
        await self._finish(active)

    async def logs_folder(self, job_id: str, caller: Identity) -> tuple[Path, bool]:
        """The job's log folder and whether the job is still running (for follow)."""
        await self._job(job_id, caller)
        return self._logs(job_id), job_id in self._active

    def changed(self, job_id: str) -> asyncio.Event | None:
        active = self._active.get(job_id)
        return active.changed if active is not None else None


def _resources(extra: dict[str, Any] | None, task: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """A job's resources: the descriptor's, then the deployment's partition, then the task's (the task wins)."""
    declared = (extra or {}).get("resources")
    merged: dict[str, Any] = dict(declared) if isinstance(declared, dict) else {}
    if spec.get("partition"):
        merged["partition"] = spec["partition"]
    if task is not None:
        merged.update(task.model_dump(exclude_none=True))
    return merged


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
