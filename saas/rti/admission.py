"""Submission of jobs (`Submissions`, a base of `RTIService`) and admission of a submitted task before it becomes a
job: signed by its user, for a processor that is ready (or deploying), every input given exactly once and valid
(`saas.rti.validation.check_task`), exactly the declared outputs with owners this node knows and targets it can
reach, and every by-reference input found, visible to the user, of the declared type and format. A refusal is a
`JobValidationError` (400) with the reason, or an `AuthorisationError` (403)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from saas.core.errors import AuthorisationError, InvalidInputError, NotFoundError, RTIError
from saas.core.identity import Identity
from saas.dor.schemas import TaskProof
from saas.rti import board, limits, offers, packages, placement, validation
from saas.rti.jobs import JobStateMachine
from saas.rti.messages import MessageLog
from saas.rti.records import ActiveJob
from saas.rti.schemas import Job, JobStatus, Package, Task

if TYPE_CHECKING:
    from saas.audit.log import AuditLog
    from saas.config import NodeConfig
    from saas.rti.levels import LevelStore
    from saas.rti.ports import LocalDOR, Network, NodeKeys
    from saas.rti.records import ProcessorRecord
    from saas.rti.scheduler import Scheduler
    from saas.sqlite import Database

__all__ = ["JobValidationError", "Submissions", "check_keys", "check_references", "new_job_id", "validate"]

logger = logging.getLogger(__name__)


class JobValidationError(RTIError, InvalidInputError):
    pass


_ID_ALPHABET = string.ascii_letters + string.digits


def new_job_id() -> str:
    """An unguessable job ID (~131 bits); letters and digits only, so it never looks like a command-line option.
    One read of the OS random source, unbiased (bytes of 248 and above are dropped: 248 = 4 x 62)."""
    while True:
        picked = [b % 62 for b in secrets.token_bytes(32) if b < 248]
        if len(picked) >= 22:
            return "".join(_ID_ALPHABET[i] for i in picked[:22])


def validate(
    network: Network, proc_id: str, task: Task, caller: Identity, processor_of: Callable[[str], ProcessorRecord]
) -> ProcessorRecord:
    """The task's processor (`processor_of` raises for one not deployed), once the task may run on it."""
    if caller.id != task.user_iid:
        raise AuthorisationError("A task must be signed by its user (user_iid)")
    if task.proc_id != proc_id:
        raise JobValidationError(f"The task is for processor {task.proc_id}, not {proc_id}")
    processor = processor_of(proc_id)
    if processor.state not in ("ready", "deploying"):  # a deploying one queues the job
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
        if network.identity(out.owner_iid) is None:
            raise JobValidationError(f"The owner {out.owner_iid} of output '{out.name}' is not known to this node")
        try:
            network.check_target(out)
        except InvalidInputError as e:
            raise JobValidationError(e.reason) from None
    return processor


async def check_references(
    network: Network, processor: ProcessorRecord, task: Task, caller: Identity
) -> dict[str, placement.InputLocation]:
    """Every by-reference input exists (on this node or another), is visible to the user, and has the type and
    format the descriptor asks for. Returns where each is."""
    specs = {s.name: s for s in processor.gpp.proc_descriptor.input}
    references = [i for i in task.input if isinstance(i, Task.InputReference)]
    try:
        found = await asyncio.gather(*(network.find_input(i, caller.id) for i in references))
    except (NotFoundError, InvalidInputError) as e:
        raise JobValidationError(e.reason, e.details) from None  # details: the obj_id not found
    for item, location in zip(references, found, strict=True):
        meta, spec = location.meta, specs[item.name]
        if (meta.data_type, meta.data_format) != (spec.data_type, spec.data_format):
            raise JobValidationError(
                f"Input '{item.name}': expected {spec.data_type}/{spec.data_format}, "
                f"got {meta.data_type}/{meta.data_format}"
            )
    await check_keys(network, references, found, caller)
    return {item.name: location for item, location in zip(references, found, strict=True)}


async def check_keys(
    network: Network, references: list[Task.InputReference], found: list[placement.InputLocation], caller: Identity
) -> None:
    """An encrypted input is decrypted by this node only for a user who holds its key (owner, or an envelope of
    their own): refuse now (403) when its DOR says the user does not; when the DOR cannot tell now, the job asks
    again at initialisation (and fails if it still cannot tell)."""

    async def check(item: Task.InputReference, location: placement.InputLocation) -> None:
        try:
            await network.require_key(item.name, location, caller.id)
        except placement.KeyCheckError as e:
            logger.info("submission of a job of %s: %s (asked again at initialisation)", caller.id[:8], e.reason)

    encrypted = [(i, loc) for i, loc in zip(references, found, strict=True) if loc.meta.content_encrypted]
    await asyncio.gather(*(check(item, location) for item, location in encrypted))


class Submissions:
    """`submit`, `run` and `grant` of `RTIService`: a submitted task admitted becomes a job, stored and queued."""

    dor: LocalDOR | None
    network: Network
    _keys: NodeKeys
    _config: NodeConfig
    _audit: AuditLog
    db: Database
    scheduler: Scheduler
    levels: LevelStore
    packages: dict[str, packages.Package]
    _active: dict[str, ActiveJob]

    if TYPE_CHECKING:  # the rest of `RTIService`

        @property
        def retain(self) -> bool: ...
        def _processor(self, proc_id: str) -> ProcessorRecord: ...
        def _enqueue(self, active: ActiveJob) -> None: ...
        async def get_status(
            self, job_id: str, caller: Identity, wait: float = 0.0, until_final: bool = False
        ) -> JobStatus: ...

    async def submit(
        self, caller: Identity, proc_id: str, task: Task, answer_at_end: bool = False, proof: TaskProof | None = None
    ) -> Job:
        """Validate and queue a job. The job's row is stored before the answer; with `answer_at_end` (`run`: the
        caller hears of the job only once it is final) it is queued for storing instead, which still lands before
        anything the job does that a restart must know (its start on an instance is an awaited write). `proof`,
        the user's signed submission, is kept with the job until it is final: another node's DOR stores an output
        only with it (`saas.dor.claims`)."""
        processor = validate(self.network, proc_id, task, caller, self._processor)
        package = await self.grant(caller, processor, task)
        self.scheduler.admit(caller.id)  # 429 before the inputs are looked for
        located = await check_references(self.network, processor, task, caller)
        self.scheduler.admit(caller.id)  # and again: other submissions may have come meanwhile
        job = Job(
            id=new_job_id(),
            proc_id=proc_id,
            task=task,
            retain=self.retain,
            t_submitted=_now(),
            custodian_iid=self._keys.iid,
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
        self._audit.record(
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

    async def grant(self, caller: Identity, processor: ProcessorRecord, task: Task) -> Package | None:
        """The resource package a job gets (`saas.rti.packages`); 400 or 403 with the reason when none."""
        resources = limits.resources(processor.gpp.proc_descriptor.model_extra, task.resources, processor.spec)
        name = task.package if task.offer is None else await offers.honour(self._keys, caller, task)
        sized = processor.spec.get("name", "local") == "local" or self._config.packages_file is not None
        return packages.grant(
            self.packages, self.levels.allowed(caller.id), resources, name, sized, self._config.job_gpus
        )

    async def run(
        self, caller: Identity, proc_id: str, task: Task, wait: float, proof: TaskProof | None = None
    ) -> JobStatus:
        """Submit a job and answer with its status once it is final, or after `wait` seconds (whatever its state
        then): one request for a job that ends quickly, e.g. on a warm agent."""
        job = await self.submit(caller, proc_id, task, answer_at_end=True, proof=proof)
        return await self.get_status(job.id, caller, wait, until_final=True)

    @property
    def _message_limits(self) -> dict[str, int]:
        config = self._config
        return {
            "max_length": config.job_message_length,
            "max_count": config.job_messages,
            "max_bytes": config.job_messages_bytes,
        }

    def _new_active(self, job: Job, machine: JobStateMachine) -> ActiveJob:
        return ActiveJob(job, machine, messages=MessageLog(**self._message_limits))


def _now() -> int:
    return int(time.time() * 1000)
