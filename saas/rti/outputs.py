"""The outputs of a job: checked (announced, present, valid against their data_schema, within the node's object size
and their owner's quota), their bytes and creation time fixed once (in the board and `<wd>/.store/`, encrypted when
asked), then stored in this node's DOR or uploaded to another. `store` does it all for a job and may be run again
after a restart: it stores exactly the same objects (a DOR answers a repeated add with the object it already has).
Everything that blocks runs in a worker thread; a problem fails the job (`JobFailedError`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas.core.errors import InsufficientStorageError, InvalidInputError, NotFoundError, SaaSError, StorageFullError
from saas.core.helpers import in_thread_to_the_end
from saas.core.identity import Identity
from saas.dor.schemas import (
    AddCDataObjectParameters,
    CDataObject,
    DataObjectRecipe,
    GitProcessorPointer,
    ProcessorIO,
    TaskProof,
)
from saas.rti.inputs import input_path
from saas.rti.jobs import JobFailedError
from saas.rti.schemas import Job, Task
from saas.rti.validation import schema_error

if TYPE_CHECKING:
    from saas.core.keystore import Keystore
    from saas.nodedb.schemas import NodeInfo
    from saas.rti.ports import LocalDOR, Network, NodeKeys
    from saas.rti.records import ActiveJob, ProcessorRecord
    from saas.sqlite import Database

__all__ = [
    "check_output_size",
    "check_outputs",
    "output_params",
    "output_target",
    "prepare_output",
    "recipe_for",
    "store",
    "storing",
    "upload_output",
]

UPLOAD_RETRIES = (0.5, 1.0, 2.0)  # seconds between attempts to store an output on an unreachable DOR


def check_outputs(descriptor_outputs: list[ProcessorIO], wd: Path, announced: set[str]) -> None:
    """Every declared output announced and present; JSON outputs valid against their data_schema. Blocks."""
    for spec in descriptor_outputs:
        if spec.name not in announced:
            raise JobFailedError(f"Output '{spec.name}' was not announced (trigger:output:{spec.name})")
        try:
            path = input_path(wd, spec.name)
        except InvalidInputError as e:
            raise JobFailedError(f"Output '{spec.name}': {e.reason}") from None
        if not path.is_file():
            raise JobFailedError(f"Output '{spec.name}' was announced but {spec.name} does not exist")
        if spec.data_schema is not None:
            try:
                problem = schema_error(json.loads(path.read_text(encoding="utf-8")), spec.data_schema)
            except (ValueError, UnicodeDecodeError):
                raise JobFailedError(f"Output '{spec.name}' is not valid JSON") from None
            if problem is not None:
                raise JobFailedError(f"Output '{spec.name}' does not match its data_schema: {problem}")


def check_output_size(name: str, path: Path, limit: int | None, room: int | None = None) -> int:
    """The size of the file of output `name`; `JobFailedError` if it is above the node's object size `limit`
    (`max_object_size`) or above `room` (what its owner may still store here). Blocks."""
    from saas.dor.quota import human_size

    size = path.stat().st_size
    if limit is not None and size > limit:
        raise JobFailedError(
            f"Output '{name}' is {human_size(size)} ({size} bytes), larger than this node's limit for data objects "
            f"of {human_size(limit)} ({limit} bytes, max_object_size)"
        )
    if room is not None and size > room:
        raise JobFailedError(
            f"Output '{name}' ({human_size(size)}) does not fit its owner's storage quota on this node: "
            f"{human_size(max(room, 0))} left"
        )
    return size


@contextlib.contextmanager
def storing(name: str) -> Iterator[None]:
    """Storing output `name`: a full disk or quota (507) fails the job with the reason."""
    try:
        yield
    except InsufficientStorageError as e:
        raise JobFailedError(f"Output '{name}' could not be stored: {e.reason}") from None
    except OSError as e:
        full = StorageFullError.from_error(e, f"output '{name}'")
        if full is None:
            raise
        raise JobFailedError(f"Output '{name}' could not be stored: {full.reason}") from None


def recipe_for(
    gpp: GitProcessorPointer, consumes: dict[str, dict[str, Any]], spec: ProcessorIO, job: Job
) -> DataObjectRecipe:
    return DataObjectRecipe(
        processor=gpp,
        consumes=consumes,
        product={"c_hash": None, "data_type": spec.data_type, "data_format": spec.data_format},
        name=spec.name,
        job_id=job.id,
    )


def prepare_output(wd: Path, name: str, encrypt_for: Any | None) -> tuple[Path, str | None]:
    """The file to store for an output (encrypted with a fresh key when asked), and the owner's key envelope.
    Written once to `<wd>/.store/<name>` so a retry stores the very same bytes. Blocks."""
    from saas.core.keys import encrypt_file, random_key

    folder = wd / ".store"
    folder.mkdir(exist_ok=True)
    final = folder / name
    envelope_file = folder / f"{name}.envelope"
    if final.is_file():
        return final, envelope_file.read_text() if envelope_file.is_file() else None
    source = input_path(wd, name)
    temp = folder / f".{name}.part"
    envelope = None
    if encrypt_for is not None:
        key = random_key()
        encrypt_file(source, temp, key)
        envelope = base64.b64encode(encrypt_for.wrap_key(key)).decode()
        envelope_file.write_text(envelope)
    else:
        temp.write_bytes(source.read_bytes()) if source.stat().st_size < 1 << 20 else _copy(source, temp)
    os.replace(temp, final)
    return final, envelope


def _copy(source: Path, target: Path) -> None:
    import shutil

    shutil.copyfile(source, target)


def output_params(
    job: Job,
    spec: ProcessorIO,
    out: Task.Output,
    envelope: str | None,
    recipe: DataObjectRecipe,
    proof: TaskProof | None = None,
) -> AddCDataObjectParameters:
    """An output's parameters: owned as the task says, created by the job's user, with its (signed) recipe and,
    for another node's DOR, the user's signed task (`proof`)."""
    return AddCDataObjectParameters(
        owner_iid=out.owner_iid,
        creators_iid=[job.task.user_iid],
        data_type=spec.data_type,
        data_format=spec.data_format,
        access_restricted=out.restricted_access,
        content_encrypted=out.content_encrypted,
        recipe=recipe,
        task_proof=proof,
        key_envelope=envelope,
    )


async def output_target(dor: LocalDOR | None, network: Network, out: Task.Output) -> NodeInfo | None:
    """The DOR an output goes to: None for this node's DOR (`dor`), else the node record of another node's DOR
    (`target_node_iid`, else the nearest DOR when this node has none). Raises `JobFailedError`."""
    try:
        target = await network.output_target(out)
    except (NotFoundError, InvalidInputError) as e:
        raise JobFailedError(e.reason) from None
    if target is None and dor is None:
        raise JobFailedError(f"Output '{out.name}': this node has no DOR")
    return target


async def upload_output(
    keystore: Keystore,
    identity_of: Callable[[str], Identity | None],
    target: NodeInfo,
    params: AddCDataObjectParameters,
    path: Path,
    created: int,
    name: str,
) -> CDataObject:
    """Store an output in another node's DOR (over HTTP, signed by this node's `keystore`), retried while it is
    unreachable; `identity_of` gives the owner's and creators' identities as this node knows them. Idempotent for
    the same file and `created`: the DOR returns the existing object. (`Network.upload` of `NodeNetwork`.)"""
    from saas.core.errors import RemoteError, UnreachableError
    from saas.core.identity import Identity
    from saas.dor.proxy import DORProxy

    owner = identity_of(params.owner_iid)
    creators = [identity_of(i) for i in params.creators_iid]
    if owner is None or None in creators:
        raise JobFailedError(f"Output '{name}': its owner or creator is not known to this node")

    def upload() -> CDataObject:
        with DORProxy(target.rest_address, keystore=keystore, node_iid=target.identity.id) as proxy:
            return proxy.add_data_object(
                path,
                owner,
                params.access_restricted,
                params.content_encrypted,
                params.data_type,
                params.data_format,
                creators=[c for c in creators if isinstance(c, Identity)],
                recipe=params.recipe,
                key_envelope=params.key_envelope,
                created=created,
                task_proof=params.task_proof,
            )

    where = f"node {target.identity.id[:8]}"
    for delay in (*UPLOAD_RETRIES, None):
        try:
            return await asyncio.to_thread(upload)
        except UnreachableError as e:
            if delay is None:
                raise JobFailedError(f"Output '{name}': {where} is unreachable: {e.reason}") from None
            await asyncio.sleep(delay)  # the same `created`: a retry never duplicates the object
        except (RemoteError, SaaSError) as e:
            raise JobFailedError(f"Output '{name}': storing on {where} failed: {e.reason}") from None
    raise AssertionError("unreachable")


# -- storing a job's outputs -----------------------------------------------------------------------------------


@dataclass
class _Plan:
    """The outputs still to store and where each goes (a target None: this node's DOR)."""

    todo: list[Task.Output]
    specs: dict[str, ProcessorIO]
    owners: dict[str, Identity | None]  # the owner to encrypt for
    targets: dict[str, NodeInfo | None]
    created: dict[str, tuple[int, str | None]]  # name -> (creation time fixed in the board, obj_id once stored)
    local: list[str] = field(default_factory=list)
    proof: TaskProof | None = None
    room: dict[str, int | None] = field(default_factory=dict)  # what each owner may still store here (None: any)


async def store(
    dor: LocalDOR | None,
    network: Network,
    keys: NodeKeys,
    max_object_size: int | None,
    db: Database,
    active: ActiveJob,
    processor: ProcessorRecord,
    consumes: dict[str, dict[str, Any]],
    wd: Path,
    at: int,
    on_stored: Callable[[Task.Output, CDataObject], None],
) -> None:
    """Check the outputs, fix each one's bytes and creation time (`at`, the first time), then store them: into this
    node's DOR in the same worker-thread hop that checks them, or uploaded to another DOR. `on_stored` hears of each
    stored output; an output stored before a restart is only noted in `active.outputs`. Outputs above
    `max_object_size` (bytes, None: no limit) fail the job."""
    plan = await _plan(dor, network, db, active, processor, at)
    if plan is None:
        return
    announced = set(active.announced)
    async with dor.local_adds() if dor is not None and plan.local else contextlib.nullcontext() as adds:

        def fix() -> dict[str, tuple[Path, AddCDataObjectParameters, str, int]]:
            return _fix_bytes(keys, max_object_size, plan, processor, consumes, active.job, wd, announced, adds)

        fixed = await in_thread_to_the_end(fix)  # what it put in the DOR is known even if cancelled
        for out in plan.todo:
            if adds is not None and out.name in plan.local:
                _, params, c_hash, size = fixed[out.name]
                with storing(out.name):  # the owner's quota, checked with the insert
                    stored = await adds.record(keys.iid, params, c_hash, size, plan.created[out.name][0])
                on_stored(out, stored)
    for out in plan.todo:  # other DORs: uploaded without holding this DOR's content guard
        if out.name not in plan.local:
            path, params, _, _ = fixed[out.name]
            target = plan.targets[out.name]
            assert target is not None
            stored = await network.upload(target, params, path, plan.created[out.name][0], out.name)
            if stored.custodian is not None and stored.custodian.identity.id != keys.iid:
                active.stored_elsewhere[out.name] = stored.model_dump(mode="json")
            on_stored(out, stored)


async def _plan(
    dor: LocalDOR | None, network: Network, db: Database, active: ActiveJob, processor: ProcessorRecord, at: int
) -> _Plan | None:
    """What is left to store (None: nothing), where, and what that needs (the user's proof for another DOR, the
    owners' room in this one)."""
    from saas.rti import board

    job = active.job
    pending = [o for o in job.task.output if o.name not in active.outputs]
    if not pending:
        return None
    owners: dict[str, Identity | None] = {}
    targets: dict[str, NodeInfo | None] = {}
    for out in pending:
        owners[out.name] = network.identity(out.owner_iid) if out.content_encrypted else None
        if out.content_encrypted and owners[out.name] is None:
            raise JobFailedError(f"The owner of output '{out.name}' is not known")
        targets[out.name] = await output_target(dor, network, out)
    created = await db.run(board.outputs_created, job.id, [o.name for o in pending], at)
    todo = [o for o in pending if created[o.name][1] is None]
    for out in pending:
        if out not in todo:  # stored before a restart
            active.outputs[out.name] = str(created[out.name][1])
    if not todo:
        return None
    specs = {s.name: s for s in processor.gpp.proc_descriptor.output}
    plan = _Plan(todo, specs, owners, targets, created, [o.name for o in todo if targets[o.name] is None])
    if len(plan.local) < len(todo):
        plan.proof = await db.run(board.get_proof, job.id)
        if plan.proof is None:
            raise JobFailedError(
                "This job was submitted before nodes kept the user's signed task, which another node's DOR needs "
                "to store its outputs: submit it again"
            )
    # What each owner may still store in this node's DOR (None: no quota): outputs are checked against it before
    # their bytes are copied (the insert checks again, exactly).
    for out in todo:
        if dor is not None and out.name in plan.local and out.owner_iid not in plan.room:
            with storing(out.name):
                plan.room[out.owner_iid] = await dor.room_for(out.owner_iid, 0)
    return plan


def _fix_bytes(
    keys: NodeKeys,
    limit: int | None,
    plan: _Plan,
    processor: ProcessorRecord,
    consumes: dict[str, dict[str, Any]],
    job: Job,
    wd: Path,
    announced: set[str],
    adds: Any,
) -> dict[str, tuple[Path, AddCDataObjectParameters, str, int]]:
    """Checked (also against `max_object_size` and the owner's quota); this node's DOR gets a plain output's content
    right away (`adds`), others are first written once to `.store/<name>` (encrypted when asked). Per output: the
    file, its parameters (with the signed recipe), c_hash and size. Blocks."""
    unfixed = [plan.specs[o.name] for o in plan.todo if not (wd / ".store" / o.name).is_file()]
    check_outputs(unfixed, wd, announced)
    left = dict(plan.room)
    result = {}
    for out in plan.todo:
        local = out.name in plan.local
        owner_room = left.get(out.owner_iid)
        with storing(out.name):
            if adds is not None and local and not out.content_encrypted:
                # Straight from the folder: a retry reads the same file (the adapter is done with it).
                path, envelope = input_path(wd, out.name), None
                try:
                    check_output_size(out.name, path, limit, owner_room)
                    c_hash, size = adds.put(path)
                except OSError as e:
                    raise JobFailedError(f"Output '{out.name}' cannot be read: {e.strerror}") from None
            else:  # fixed once in `.store/` (encrypted with a fresh key, or for an upload)
                if not (wd / ".store" / out.name).is_file():
                    check_output_size(out.name, input_path(wd, out.name), limit)
                path, envelope = prepare_output(wd, out.name, plan.owners[out.name])
                check_output_size(out.name, path, limit, owner_room if local else None)
                if adds is not None and local:
                    c_hash, size = adds.put(path)
                else:
                    c_hash, size = _sha256_file(path), 0
        if owner_room is not None and local:
            left[out.owner_iid] = owner_room - size
        proof = None if local else plan.proof
        params = _signed_params(keys, processor, consumes, plan.specs[out.name], out, job, envelope, c_hash, proof)
        result[out.name] = (path, params, c_hash, size)
    return result


def _signed_params(
    keys: NodeKeys,
    processor: ProcessorRecord,
    consumes: dict[str, dict[str, Any]],
    spec: ProcessorIO,
    out: Task.Output,
    job: Job,
    envelope: str | None,
    c_hash: str,
    proof: TaskProof | None,
) -> AddCDataObjectParameters:
    """The output's parameters, its recipe signed by this node (blocks: crypto)."""
    from saas.dor import claims

    recipe = recipe_for(processor.gpp, consumes, spec, job)
    recipe.product["c_hash"] = c_hash
    try:
        recipe = claims.sign_recipe(recipe, keys)
    except ValueError:  # canonical JSON holds no NaN or infinity (a by-value input may)
        raise JobFailedError(
            f"Output '{out.name}': its recipe cannot be signed (an input holds NaN or infinity)"
        ) from None
    return output_params(job, spec, out, envelope, recipe, proof)


def _sha256_file(path: Path) -> str:
    from saas.core.pipeline import hash_file

    with open(path, "rb") as f:
        return hash_file(f)[0]
