"""The inputs of a job: its working folder (`<rti>/jobs/<job id>`) with the by-value inputs written, the plain inputs
of this node's DOR copied (checked against their c_hash) and the others fetched from whichever DOR holds them (and
decrypted with this node's key envelope when encrypted, only for a user who holds the key too). `prepare` does it all
for a job; the functions below it are its parts (the SDK's local runs and the backends use some). Everything that
blocks runs in a worker thread; a problem fails the job (`JobFailedError`)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from saas.core.errors import InvalidInputError, NotFoundError, SaaSError
from saas.core.triggers import NAME
from saas.dor.schemas import CDataObject, ProcessorIO
from saas.rti.jobs import JobFailedError
from saas.rti.schemas import Job, Task

if TYPE_CHECKING:
    from saas.audit.log import AuditLog
    from saas.rti.placement import InputLocation
    from saas.rti.ports import LocalDOR, Network, NodeKeys
    from saas.rti.records import ActiveJob, ProcessorRecord
    from saas.rti.sandbox import Sandbox

__all__ = [
    "copies_locally",
    "copy_local",
    "fetch_input",
    "input_path",
    "locate_input",
    "prepare",
    "write_meta",
    "write_value",
]

LOCATION_FRESH_S = 1.0  # a job initialised this soon after its submission uses the inputs' locations found then


async def prepare(
    dor: LocalDOR | None,
    network: Network,
    keys: NodeKeys,
    audit: AuditLog,
    active: ActiveJob,
    processor: ProcessorRecord,
    sandbox: Sandbox,
    wd: Path,
    logs: Path,
) -> dict[str, dict[str, Any]]:
    """Locate the by-reference inputs, then create the working folder with the by-value inputs and the plain
    inputs of this node's DOR in one go; other inputs are fetched after. Returns what the recipes record about the
    inputs (also kept in `active.consumes`, stored with the job's next awaited write, before the adapter starts).
    An agent's job (`active.lease`) gets its log files opened with the folder (`active.agent_logs`)."""
    job = active.job
    specs = {s.name: s for s in processor.gpp.proc_descriptor.input}
    consumes, located = await _locate_all(dor, network, active, specs)
    local = [name for name, location in located.items() if copies_locally(location)]
    agent = active.lease is not None
    fetched = [i for i in job.task.input if isinstance(i, Task.InputReference) and i.name not in local]

    def make_folder() -> tuple[BinaryIO, BinaryIO] | None:
        from saas.rti.agents import open_job_logs

        try:
            wd.mkdir()
        except FileExistsError:  # left by an earlier attempt (the job was queued again after a restart)
            shutil.rmtree(wd)
            wd.mkdir()
        for item in job.task.input:
            if isinstance(item, Task.InputValue):
                write_value(wd, item.name, item.value)
        for name, location in located.items():
            write_meta(wd, name, location.meta)
        for name in local:
            copy_local(dor, name, located[name], wd)
        if sandbox.uid is not None and not fetched:
            sandbox.own(wd, recursive=True)  # the sandboxed job's to read and write
        if agent:
            return open_job_logs(logs)  # (it makes the log folder)
        logs.mkdir(parents=True, exist_ok=True)
        return None

    active.agent_logs = await asyncio.to_thread(make_folder)
    for name in local:
        meta = located[name].meta
        audit.record("object.read", actor=job.task.user_iid, owner=meta.owner_iid, obj_id=meta.obj_id, job_id=job.id)
    for item in fetched:
        await fetch_input(dor, network, keys, item, located[item.name], wd, job.task.user_iid)
    if fetched and sandbox.uid is not None:
        await asyncio.to_thread(sandbox.own, wd, True)
    active.consumes = consumes
    return consumes


async def _locate_all(
    dor: LocalDOR | None, network: Network, active: ActiveJob, specs: dict[str, ProcessorIO]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """What the recipes record about each input, and where each by-reference input is (found at submission a
    moment ago, else looked up now)."""
    from saas.rti import placement

    job = active.job
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
                if located[item.name].custodian is None and dor is not None:
                    dor.touch_later(located[item.name].meta.obj_id)
            else:
                located[item.name] = await locate_input(network, job, item, spec)
            consumes[item.name] = placement.describe(located[item.name])
    active.located = {}
    return consumes, located


def input_path(wd: Path, name: str) -> Path:
    """`<wd>/<name>` for a validated name: never a path outside the working folder."""
    if not NAME.match(name) or name in (".", ".."):
        raise InvalidInputError(f"Invalid input/output name '{name}'")
    path = wd / name
    # The name has no separator, so only a symlink (an adapter's, pointing at the node's own files) could lead
    # outside the folder: one lstat, where resolving both paths cost a syscall per path component.
    if path.is_symlink():
        raise InvalidInputError(f"Invalid input/output name '{name}': a symbolic link")
    return path


def write_value(wd: Path, name: str, value: Any) -> None:
    _write_file(input_path(wd, name), json.dumps(value).encode())


def write_meta(wd: Path, name: str, meta: CDataObject) -> None:
    """`<wd>/<name>.meta`: a by-reference input's metadata as JSON, next to it (as the original middleware wrote)."""
    _write_file(wd / f"{input_path(wd, name).name}.meta", meta.model_dump_json(indent=2).encode())


def _write_file(path: Path, data: bytes) -> None:
    """Write a small file with plain system calls (no buffered file object: fewer calls on a busy node)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def locate_input(network: Network, job: Job, item: Task.InputReference, spec: ProcessorIO) -> Any:
    """Where a by-reference input is (`placement.InputLocation`), checked against the type and format the
    processor expects; raises `JobFailedError`."""
    try:
        location = await network.find_input(item, job.task.user_iid, touch=True)
    except (NotFoundError, InvalidInputError) as e:
        raise JobFailedError(e.reason) from None
    meta = location.meta
    if (meta.data_type, meta.data_format) != (spec.data_type, spec.data_format):
        raise JobFailedError(
            f"Input '{item.name}': expected {spec.data_type}/{spec.data_format}, "
            f"got {meta.data_type}/{meta.data_format}"
        )
    return location


def copies_locally(location: Any) -> bool:
    """Whether `copy_local` can fetch the input (a plain object in this node's DOR), with no other work."""
    return location.custodian is None and not location.meta.content_encrypted


def copy_local(dor: LocalDOR | None, name: str, location: Any, wd: Path) -> None:
    """Copy a plain input from this node's DOR into `<wd>/<name>`, checked against its c_hash. Blocks."""
    _copy_checked(dor, name, location.meta, input_path(wd, name))


def _copy_checked(dor: LocalDOR | None, name: str, meta: CDataObject, target: Path) -> None:
    """Copy an object's content from this node's DOR to `target`, checked against its c_hash. Blocks."""
    assert dor is not None
    try:
        c_hash = _copy_hashed(dor.content_path(meta.c_hash), target)
    except FileNotFoundError:  # deleted since its record was read
        raise JobFailedError(f"Input '{name}': data object {meta.obj_id} not found") from None
    if c_hash != meta.c_hash:
        raise JobFailedError(f"Input '{name}': content does not match its c_hash")


async def fetch_input(
    dor: LocalDOR | None,
    network: Network,
    keys: NodeKeys,
    item: Task.InputReference,
    location: InputLocation,
    wd: Path,
    user_iid: str,
) -> None:
    """Fetch a by-reference input into `<wd>/<name>` from whichever DOR holds it (another node's over HTTP with
    the user's delegation), checked against c_hash, and decrypted with this node's key envelope when encrypted —
    only if the job's user `user_iid` holds the key too (owner or an envelope of their own), as that DOR says now:
    otherwise nothing is copied and the job fails with the reason. Content from another node that does not match
    the verified c_hash counts as that node's lie: the input is looked up once more, without that node, and
    fetched from the holder found then."""
    from saas.dor.proxy import ContentMismatchError

    target = input_path(wd, item.name)
    for attempt in (1, 2):
        try:
            await network.require_key(item.name, location, user_iid)
        except SaaSError as e:  # AuthorisationError (no key) or KeyCheckError (undecided): never decrypt
            raise JobFailedError(e.reason) from None
        if location.custodian is None:
            await _copy_local(dor, keys, item, location.meta, target)
            return
        try:
            await _fetch_remote(network, keys, item, location, target)
            return
        except ContentMismatchError as e:
            liar = location.custodian.identity.id
            failed = f"Input '{item.name}': fetching from node {liar[:8]} failed: {e.reason}"
            if attempt == 2:
                raise JobFailedError(failed) from None
        try:  # the same obj_id: the same c_hash, type and format (bound to it), perhaps another holder
            location = await network.find_input(item, user_iid, skip=liar)
        except (NotFoundError, InvalidInputError):
            raise JobFailedError(f"{failed}, and no other node holds it") from None


def _copy_hashed(source: Path, target: Path) -> str:
    """Copy a file, returning the SHA-256 of what was copied (hashed and written by a second thread while the next
    buffer is read: `saas.core.pipeline`)."""
    from saas.core.pipeline import copy_hashed

    digest = hashlib.sha256()
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            copy_hashed(src, dst, digest)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return digest.hexdigest()


async def _copy_local(
    dor: LocalDOR | None, keys: NodeKeys, item: Task.InputReference, meta: CDataObject, target: Path
) -> None:
    """Copy an input from this node's DOR (`meta` was read as the job's user), checked against its c_hash, and
    decrypted with this node's key envelope when encrypted."""
    assert dor is not None
    key: bytes | None = None
    if meta.content_encrypted:
        envelope = await dor.envelope_for(meta.obj_id, keys.iid)
        key = await _unwrap(keys, item.name, envelope)
    encrypted = target.with_name(f".{item.name}.encrypted") if key else target

    def copy() -> None:
        _copy_checked(dor, item.name, meta, encrypted)
        if key is not None:
            _decrypt(encrypted, target, key)

    await asyncio.to_thread(copy)


async def _fetch_remote(
    network: Network, keys: NodeKeys, item: Task.InputReference, location: InputLocation, target: Path
) -> None:
    """Fetch an input from another node's DOR (checked against its verified c_hash by `fetch_remote`)."""
    from saas.dor.proxy import ContentMismatchError

    meta, custodian = location.meta, location.custodian
    assert custodian is not None
    download = target.with_name(f".{item.name}.download")
    try:
        await network.fetch(
            item.obj_id, custodian, download, delegation=location.delegation, expected_c_hash=meta.c_hash
        )
    except ContentMismatchError:
        raise  # the custodian lied (counted): `fetch_input` looks for another holder
    except SaaSError as e:
        node_id = custodian.identity.id[:8]
        raise JobFailedError(f"Input '{item.name}': fetching from node {node_id} failed: {e.reason}") from None
    if not meta.content_encrypted:
        await asyncio.to_thread(download.replace, target)
        return

    try:
        wrapped: str | None = await network.envelope(custodian, item.obj_id)
    except SaaSError:
        wrapped = None
    key = await _unwrap(keys, item.name, wrapped)
    await asyncio.to_thread(_decrypt, download, target, key)


async def _unwrap(keys: NodeKeys, name: str, envelope: str | None) -> bytes:
    if envelope is None:
        raise JobFailedError(f"Input '{name}' is encrypted and this node has no key envelope for it")
    return await asyncio.to_thread(keys.unwrap_key, base64.b64decode(envelope))


def _decrypt(encrypted: Path, target: Path, key: bytes) -> None:
    """Decrypt into `target`, removing the encrypted copy; a failure (wrong key, tampering) fails the job."""
    from saas.core.keys import decrypt_file

    try:
        decrypt_file(encrypted, target, key)
    except SaaSError as e:
        target.unlink(missing_ok=True)
        raise JobFailedError(f"Input '{target.name}' could not be decrypted: {e.reason}") from None
    finally:
        encrypted.unlink(missing_ok=True)
