"""Admission of a submitted task (before it becomes a job): signed by its user, for a processor that is ready (or
deploying), every input given exactly once and valid (`saas.rti.validation.check_task`), exactly the declared
outputs with owners this node knows and targets it can reach, and every by-reference input found, visible to the
user, of the declared type and format. A refusal is a `JobValidationError` (400) with the reason, or an
`AuthorisationError` (403)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from saas.core.errors import AuthorisationError, InvalidInputError, NotFoundError, RTIError
from saas.core.identity import Identity
from saas.rti import placement, validation
from saas.rti.schemas import Task

if TYPE_CHECKING:
    from saas.node import Node
    from saas.rti.board import ProcessorRecord

__all__ = ["JobValidationError", "check_keys", "check_references", "validate"]

logger = logging.getLogger(__name__)


class JobValidationError(RTIError, InvalidInputError):
    pass


def validate(
    node: Node, proc_id: str, task: Task, caller: Identity, processor_of: Callable[[str], ProcessorRecord]
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
        if node.nodedb.get_identity(out.owner_iid) is None:
            raise JobValidationError(f"The owner {out.owner_iid} of output '{out.name}' is not known to this node")
        try:
            placement.check_target(node, out)
        except InvalidInputError as e:
            raise JobValidationError(e.reason) from None
    return processor


async def check_references(
    node: Node, processor: ProcessorRecord, task: Task, caller: Identity
) -> dict[str, placement.InputLocation]:
    """Every by-reference input exists (on this node or another), is visible to the user, and has the type and
    format the descriptor asks for. Returns where each is."""
    specs = {s.name: s for s in processor.gpp.proc_descriptor.input}
    references = [i for i in task.input if isinstance(i, Task.InputReference)]
    try:
        found = await asyncio.gather(*(placement.find_input(node, i, caller.id) for i in references))
    except (NotFoundError, InvalidInputError) as e:
        raise JobValidationError(e.reason, e.details) from None  # details: the obj_id not found
    for item, location in zip(references, found, strict=True):
        meta, spec = location.meta, specs[item.name]
        if (meta.data_type, meta.data_format) != (spec.data_type, spec.data_format):
            raise JobValidationError(
                f"Input '{item.name}': expected {spec.data_type}/{spec.data_format}, "
                f"got {meta.data_type}/{meta.data_format}"
            )
    await check_keys(node, references, found, caller)
    return {item.name: location for item, location in zip(references, found, strict=True)}


async def check_keys(
    node: Node, references: list[Task.InputReference], found: list[placement.InputLocation], caller: Identity
) -> None:
    """An encrypted input is decrypted by this node only for a user who holds its key (owner, or an envelope of
    their own): refuse now (403) when its DOR says the user does not; when the DOR cannot tell now, the job asks
    again at initialisation (and fails if it still cannot tell)."""

    async def check(item: Task.InputReference, location: placement.InputLocation) -> None:
        try:
            await placement.require_key(node, item.name, location, caller.id)
        except placement.KeyCheckError as e:
            logger.info("submission of a job of %s: %s (asked again at initialisation)", caller.id[:8], e.reason)

    encrypted = [(i, loc) for i, loc in zip(references, found, strict=True) if loc.meta.content_encrypted]
    await asyncio.gather(*(check(item, location) for item, location in encrypted))
