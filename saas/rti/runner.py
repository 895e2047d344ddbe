"""The runner: does the I/O of one job. Inputs into a working folder, `execute.sh <config> <wd>` in its own process
group with stdout/stderr streamed to log files and parsed live for triggers, outputs checked and stored.

A by-reference input is located first (`locate_input`), then copied from this node's DOR (`copy_local`, in the
caller's worker thread) or fetched (`fetch_input`: another node's DOR, or encrypted). An output goes to this
node's DOR (`DORService.local_adds`) or another (`upload_output`). Everything that blocks runs in a worker thread
or as an asyncio subprocess."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas._compat import timeout
from saas.core.errors import (
    InsufficientStorageError,
    InvalidInputError,
    NotFoundError,
    RTIError,
    SaaSError,
    StorageFullError,
)
from saas.core.triggers import NAME, parse_trigger
from saas.dor.schemas import (
    AddCDataObjectParameters,
    CDataObject,
    DataObjectRecipe,
    GitProcessorPointer,
    ProcessorIO,
    TaskProof,
)
from saas.rti import process
from saas.rti.cgroups import Limits
from saas.rti.sandbox import Sandbox
from saas.rti.schemas import Job, Task
from saas.rti.validation import schema_error

if TYPE_CHECKING:
    from saas.node import Node

__all__ = [
    "JobFailedError",
    "check_output_size",
    "check_outputs",
    "copies_locally",
    "copy_local",
    "execute",
    "fetch_input",
    "input_path",
    "locate_input",
    "output_params",
    "output_target",
    "parse_trigger",
    "storing",
    "upload_output",
    "write_meta",
    "write_value",
]

KILL_GRACE = 2.0
UPLOAD_RETRIES = (0.5, 1.0, 2.0)  # seconds between attempts to store an output on an unreachable DOR
STDOUT_LOG = "execute_stdout.log"
STDERR_LOG = "execute_stderr.log"


class JobFailedError(RTIError):
    """The job cannot finish: `reason` says why (it becomes the job's error and timeline reason)."""


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


# -- inputs ----------------------------------------------------------------------------------------------------


async def locate_input(node: Node, job: Job, item: Task.InputReference, spec: ProcessorIO) -> Any:
    """Where a by-reference input is (`placement.InputLocation`), checked against the type and format the
    processor expects; raises `JobFailedError`."""
    from saas.rti import placement

    try:
        location = await placement.find_input(node, item, job.task.user_iid, touch=True)
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


def copy_local(node: Node, name: str, location: Any, wd: Path) -> None:
    """Copy a plain input from this node's DOR into `<wd>/<name>`, checked against its c_hash. Blocks."""
    _copy_checked(node, name, location.meta, input_path(wd, name))


def _copy_checked(node: Node, name: str, meta: CDataObject, target: Path) -> None:
    """Copy an object's content from this node's DOR to `target`, checked against its c_hash. Blocks."""
    assert node.dor is not None
    try:
        c_hash = _copy_hashed(node.dor.content_path(meta.c_hash), target)
    except FileNotFoundError:  # deleted since its record was read
        raise JobFailedError(f"Input '{name}': data object {meta.obj_id} not found") from None
    if c_hash != meta.c_hash:
        raise JobFailedError(f"Input '{name}': content does not match its c_hash")


async def fetch_input(node: Node, item: Task.InputReference, location: Any, wd: Path, user_iid: str) -> None:
    """Fetch a by-reference input into `<wd>/<name>` from whichever DOR holds it (another node's over HTTP with
    the user's delegation), checked against c_hash, and decrypted with this node's key envelope when encrypted —
    only if the job's user `user_iid` holds the key too (owner or an envelope of their own), as that DOR says now:
    otherwise nothing is copied and the job fails with the reason. Content from another node that does not match
    the verified c_hash counts as that node's lie: the input is looked up once more, without that node, and
    fetched from the holder found then."""
    from saas.dor.proxy import ContentMismatchError
    from saas.rti import placement

    target = input_path(wd, item.name)
    for attempt in (1, 2):
        try:
            await placement.require_key(node, item.name, location, user_iid)
        except SaaSError as e:  # AuthorisationError (no key) or KeyCheckError (undecided): never decrypt
            raise JobFailedError(e.reason) from None
        if location.custodian is None:
            await _copy_local(node, item, location.meta, target)
            return
        try:
            await _fetch_remote(node, item, location, target)
            return
        except ContentMismatchError as e:
            liar = location.custodian.identity.id
            failed = f"Input '{item.name}': fetching from node {liar[:8]} failed: {e.reason}"
            if attempt == 2:
                raise JobFailedError(failed) from None
        try:  # the same obj_id: the same c_hash, type and format (bound to it), perhaps another holder
            location = await placement.find_input(node, item, user_iid, skip=liar)
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


async def _copy_local(node: Node, item: Task.InputReference, meta: CDataObject, target: Path) -> None:
    """Copy an input from this node's DOR (`meta` was read as the job's user), checked against its c_hash, and
    decrypted with this node's key envelope when encrypted."""
    from saas.dor import catalog

    dor = node.dor
    assert dor is not None
    key: bytes | None = None
    if meta.content_encrypted:
        envelope = await dor.db.run(catalog.get_envelope, meta.obj_id, node.iid)
        key = await _unwrap(node, item.name, envelope)
    encrypted = target.with_name(f".{item.name}.encrypted") if key else target

    def copy() -> None:
        _copy_checked(node, item.name, meta, encrypted)
        if key is not None:
            _decrypt(encrypted, target, key)

    await asyncio.to_thread(copy)


async def _fetch_remote(node: Node, item: Task.InputReference, location: Any, target: Path) -> None:
    """Fetch an input from another node's DOR (checked against its verified c_hash by `fetch_remote`)."""
    from saas.dor import remote
    from saas.dor.proxy import ContentMismatchError, DORProxy

    meta, custodian = location.meta, location.custodian
    download = target.with_name(f".{item.name}.download")
    try:
        await remote.fetch_remote(
            node, item.obj_id, custodian, download, delegation=location.delegation, expected_c_hash=meta.c_hash
        )
    except ContentMismatchError:
        raise  # the custodian lied (counted): `fetch_input` looks for another holder
    except SaaSError as e:
        node_id = custodian.identity.id[:8]
        raise JobFailedError(f"Input '{item.name}': fetching from node {node_id} failed: {e.reason}") from None
    if not meta.content_encrypted:
        await asyncio.to_thread(download.replace, target)
        return

    def envelope() -> str:
        with DORProxy(custodian.rest_address, keystore=node.keystore, node_iid=custodian.identity.id) as proxy:
            return base64.b64encode(proxy.get_envelope(item.obj_id, node.keystore)).decode()

    try:
        wrapped = await asyncio.to_thread(envelope)
    except SaaSError:
        wrapped = None
    key = await _unwrap(node, item.name, wrapped)
    await asyncio.to_thread(_decrypt, download, target, key)


async def _unwrap(node: Node, name: str, envelope: str | None) -> bytes:
    if envelope is None:
        raise JobFailedError(f"Input '{name}' is encrypted and this node has no key envelope for it")
    return await asyncio.to_thread(node.keystore.unwrap_key, base64.b64decode(envelope))


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


# -- execution -------------------------------------------------------------------------------------------------


async def execute(
    sandbox: Sandbox | None,
    adapter: Path,
    config: str,
    wd: Path,
    logs: Path,
    on_line: Callable[[str], None],
    on_start: Callable[[int], Awaitable[None]] | None = None,
    job_id: str = "",
    limits: Limits | None = None,
    network: bool = True,
    visible: Path | None = None,
) -> None:
    """Run `execute.sh <config> <wd>` in the sandbox (the adapter folder, or `visible` around it, read-only; `wd`
    read-write); raise `JobFailedError` on a non-zero exit, a limit exceeded or the walltime passed. Cancelling this
    coroutine kills every process of the job (SIGTERM, then SIGKILL after a grace period) before it propagates."""
    limits = limits or Limits()
    child = await process.spawn(
        sandbox,
        ["bash", "execute.sh", config, str(wd)],
        cwd=adapter,
        name=f"job-{job_id}" if job_id else "",
        ro=[visible or adapter],
        rw=[wd],
        network=network,
        limits=limits,
        env=process.child_env(visible or adapter, {"SAAS_JOB_ID": job_id}),  # the id finds leftovers
    )
    assert child.stdout is not None and child.stderr is not None
    try:
        if on_start is not None:
            await on_start(child.pid)
        with open(logs / STDOUT_LOG, "ab", buffering=0) as out, open(logs / STDERR_LOG, "ab", buffering=0) as err:
            async with timeout(limits.walltime):
                _, err_tail = await asyncio.gather(
                    process.pump(child.stdout, out, on_line), process.pump(child.stderr, err, on_line)
                )
                code = await child.wait()
    except TimeoutError:
        exceeded = await child.close()
        also = f"; before that {exceeded}" if exceeded else ""
        raise JobFailedError(f"The job exceeded its walltime of {limits.walltime:g} s and was killed{also}") from None
    except BaseException:
        await child.stop(KILL_GRACE)
        await child.close()
        raise
    exceeded = await child.close()  # no process of the job survives it
    if exceeded is not None:
        raise JobFailedError(f"execute.sh was stopped: {exceeded}")
    if code != 0:
        text = err_tail.decode("utf-8", "replace").strip()
        raise JobFailedError(f"execute.sh exited with code {code}" + (f": {text[-500:]}" if text else ""))


# -- outputs ---------------------------------------------------------------------------------------------------


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


async def output_target(node: Node, out: Task.Output) -> Any | None:
    """The DOR an output goes to: None for this node's DOR, else the node record of another node's DOR
    (`target_node_iid`, else the nearest DOR when this node has none). Raises `JobFailedError`."""
    from saas.rti import placement

    try:
        target = await placement.output_dor(node, out)
    except (NotFoundError, InvalidInputError) as e:
        raise JobFailedError(e.reason) from None
    if target is None and node.dor is None:
        raise JobFailedError(f"Output '{out.name}': this node has no DOR")
    return target


async def upload_output(
    node: Node, target: Any, params: AddCDataObjectParameters, path: Path, created: int, name: str
) -> CDataObject:
    """Store an output in another node's DOR (over HTTP, signed by this node), retried while it is unreachable.
    Idempotent for the same file and `created`: the DOR returns the existing object."""
    from saas.core.errors import RemoteError, UnreachableError
    from saas.core.identity import Identity
    from saas.dor.proxy import DORProxy

    owner = node.nodedb.get_identity(params.owner_iid)
    creators = [node.nodedb.get_identity(i) for i in params.creators_iid]
    if owner is None or None in creators:
        raise JobFailedError(f"Output '{name}': its owner or creator is not known to this node")

    def upload() -> CDataObject:
        with DORProxy(target.rest_address, keystore=node.keystore, node_iid=target.identity.id) as proxy:
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
