"""The runner: does the I/O of one job. Inputs into a working folder, `execute.sh <config> <wd>` in its own process
group with stdout/stderr streamed to log files and parsed live for triggers, outputs checked and stored.

Seams for the network (later): `fetch_input` reads a by-reference input and `store_output` stores an output; both
use this node's DOR today. Everything that blocks runs in a worker thread or as an asyncio subprocess."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import os
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from saas.core.errors import InvalidInputError, NotFoundError, RTIError
from saas.dor.schemas import AddCDataObjectParameters, CDataObject, DataObjectRecipe, GitProcessorPointer, ProcessorIO
from saas.rti.schemas import Job, Task

if TYPE_CHECKING:
    from saas.node import Node

__all__ = [
    "JobFailedError",
    "check_outputs",
    "execute",
    "fetch_input",
    "input_path",
    "parse_trigger",
    "store_output",
    "write_value",
]

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
TRIGGER = re.compile(r"^trigger:(progress|output|message):(.*)$")
KILL_GRACE = 2.0
STDOUT_LOG = "execute_stdout.log"
STDERR_LOG = "execute_stderr.log"


class JobFailedError(RTIError):
    """The job cannot finish: `reason` says why (it becomes the job's error and timeline reason)."""


def input_path(wd: Path, name: str) -> Path:
    """`<wd>/<name>` for a validated name: never a path outside the working folder."""
    if not NAME.match(name) or name in (".", ".."):
        raise InvalidInputError(f"Invalid input/output name '{name}'")
    path = wd / name
    if path.resolve().parent != wd.resolve():
        raise InvalidInputError(f"Invalid input/output name '{name}'")
    return path


def write_value(wd: Path, name: str, value: Any) -> None:
    input_path(wd, name).write_text(json.dumps(value), encoding="utf-8")


def parse_trigger(line: str) -> tuple[str, Any] | None:
    """('progress', int) | ('output', name) | ('message', (severity, text)) | None for an ordinary line."""
    match = TRIGGER.match(line.rstrip("\r\n"))
    if match is None:
        return None
    kind, value = match.groups()
    if kind == "progress":
        try:
            return "progress", max(0, min(100, int(float(value))))
        except (ValueError, OverflowError):  # not a number, NaN or infinite: an ordinary line
            return None
    if kind == "output":
        return ("output", value) if NAME.match(value) else None
    severity, _, text = value.partition(":")
    return "message", (severity or "info", text)


# -- inputs ----------------------------------------------------------------------------------------------------


async def fetch_input(node: Node, job: Job, item: Task.InputReference, spec: ProcessorIO, wd: Path) -> dict[str, Any]:
    """Copy a by-reference input into `<wd>/<name>`, checked against c_hash, type and format, decrypted if needed.
    Returns what the recipe records about it. Today: this node's DOR (the seam for remote DORs)."""
    dor = node.dor
    if dor is None:
        raise JobFailedError(f"Input '{item.name}': this node has no DOR (remote inputs are not supported yet)")
    user = node.nodedb.get_identity(job.task.user_iid)
    try:
        source, _, row = await dor.open_content(item.obj_id, user) if user else (None, 0, None)
    except NotFoundError:
        source, row = None, None
    if source is None or row is None:
        raise JobFailedError(f"Input '{item.name}': data object {item.obj_id} not found")
    try:
        await _copy_checked(source, row, item.name, spec, target=input_path(wd, item.name), node=node)
    finally:
        source.close()
    return {"c_hash": row.c_hash, "data_type": row.data_type, "data_format": row.data_format, "obj_id": row.obj_id}


async def _copy_checked(source: BinaryIO, row: Any, name: str, spec: ProcessorIO, target: Path, node: Node) -> None:
    """Copy an opened input into place: type and format as the descriptor says, bytes matching the c_hash,
    decrypted with this node's key envelope when encrypted."""
    from saas.core.keys import decrypt_file
    from saas.dor import catalog

    dor = node.dor
    assert dor is not None
    if (row.data_type, row.data_format) != (spec.data_type, spec.data_format):
        raise JobFailedError(
            f"Input '{name}': expected {spec.data_type}/{spec.data_format}, got {row.data_type}/{row.data_format}"
        )
    key: bytes | None = None
    if row.content_encrypted:
        envelope = await dor.db.run(catalog.get_envelope, row.obj_id, node.iid)
        if envelope is None:
            raise JobFailedError(f"Input '{name}' is encrypted and this node has no key envelope for it")
        key = await asyncio.to_thread(node.keystore.unwrap_key, base64.b64decode(envelope))

    def copy() -> str:
        digest = hashlib.sha256()
        encrypted = target.with_name(f".{name}.encrypted") if key else target
        with open(encrypted, "wb") as dst:
            while chunk := source.read(1024 * 1024):
                digest.update(chunk)
                dst.write(chunk)
        if key is not None:
            decrypt_file(encrypted, target, key)
            encrypted.unlink()
        return digest.hexdigest()

    c_hash = await asyncio.to_thread(copy)
    if c_hash != row.c_hash:
        raise JobFailedError(f"Input '{name}': content does not match its c_hash")


# -- execution -------------------------------------------------------------------------------------------------


async def _pump(stream: asyncio.StreamReader, log: Path, on_line: Callable[[str], None]) -> bytes:
    """Copy a stream to its log file line by line, calling `on_line` for each; returns the last bytes (tail)."""
    tail = b""
    with open(log, "ab", buffering=0) as out:
        while True:
            line = await stream.readline()
            if not line:
                return tail
            out.write(line)
            tail = (tail + line)[-2000:]
            on_line(line.decode("utf-8", "replace"))


def kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def execute(
    adapter: Path,
    config: str,
    wd: Path,
    logs: Path,
    on_line: Callable[[str], None],
    on_start: Callable[[int], Awaitable[None]] | None = None,
    job_id: str = "",
) -> None:
    """Run `execute.sh <config> <wd>`; raise `JobFailedError` on a non-zero exit. Cancelling this coroutine kills
    the whole process group (SIGTERM, then SIGKILL after a grace period) before it propagates."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAAS_")}
    env["PYTHONUNBUFFERED"] = "1"
    env["SAAS_JOB_ID"] = job_id  # lets a restarted node recognise this job's leftover processes
    process = await asyncio.create_subprocess_exec(
        "bash",
        "execute.sh",
        config,
        str(wd),
        cwd=adapter,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
        limit=1024 * 1024,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        if on_start is not None:
            await on_start(process.pid)
        _, err_tail = await asyncio.gather(
            _pump(process.stdout, logs / STDOUT_LOG, on_line), _pump(process.stderr, logs / STDERR_LOG, on_line)
        )
        code = await process.wait()
    except BaseException:
        kill_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(process.wait()), KILL_GRACE)
        kill_group(process.pid, signal.SIGKILL)  # whatever the adapter left behind in its group
        await process.wait()
        raise
    kill_group(process.pid, signal.SIGKILL)  # no orphan survives a finished job either
    if code != 0:
        text = err_tail.decode("utf-8", "replace").strip()
        raise JobFailedError(f"execute.sh exited with code {code}" + (f": {text[-500:]}" if text else ""))


def kill_leftover(pgid: int, job_id: str) -> bool:
    """After a crash of the node: kill what is left of a job's process group (the leader may be gone, e.g. killed
    by a broken stdout pipe, while its children live on). Only a group with a member whose environment carries
    SAAS_JOB_ID=<job_id> is killed, so a reused id is left alone. Linux (/proc) only; elsewhere nothing happens."""
    marker = f"SAAS_JOB_ID={job_id}".encode()
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return False
    for entry in entries:
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            if int(stat[stat.rindex(b")") + 2 :].split()[2]) != pgid:  # fields after "(comm)": state ppid pgrp
                continue
            if marker in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                kill_group(pgid, signal.SIGKILL)
                return True
        except (OSError, ValueError, IndexError):
            continue
    return False


# -- outputs ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_error(value: Any, schema: dict[str, Any]) -> str | None:
    """What is wrong with `value` under a JSON schema (the message `jsonschema.validate` would raise), or None.
    The checked validator is cached per schema: checking a schema costs far more than validating a small value."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(value))
    return None if error is None else str(error.message)


def check_outputs(descriptor_outputs: list[ProcessorIO], wd: Path, announced: set[str]) -> None:
    """Every declared output announced and present; JSON outputs valid against their data_schema. Blocks."""
    for spec in descriptor_outputs:
        if spec.name not in announced:
            raise JobFailedError(f"Output '{spec.name}' was not announced (trigger:output:{spec.name})")
        path = input_path(wd, spec.name)
        if not path.is_file():
            raise JobFailedError(f"Output '{spec.name}' was announced but {spec.name} does not exist")
        if spec.data_schema is not None:
            try:
                problem = schema_error(json.loads(path.read_text(encoding="utf-8")), spec.data_schema)
            except (ValueError, UnicodeDecodeError):
                raise JobFailedError(f"Output '{spec.name}' is not valid JSON") from None
            if problem is not None:
                raise JobFailedError(f"Output '{spec.name}' does not match its data_schema: {problem}")


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


async def store_output(
    node: Node,
    job: Job,
    spec: ProcessorIO,
    out: Task.Output,
    path: Path,
    envelope: str | None,
    recipe: DataObjectRecipe,
    created: int,
) -> CDataObject:
    """Store an output in the target DOR: today this node's DOR (the seam for `target_node_iid`). Idempotent for
    the same file and `created` (the DOR returns the existing object)."""
    dor = node.dor
    if dor is None:
        raise JobFailedError("This node has no DOR to store outputs in (remote targets are not supported yet)")
    params = AddCDataObjectParameters(
        owner_iid=out.owner_iid,
        creators_iid=[job.task.user_iid],
        data_type=spec.data_type,
        data_format=spec.data_format,
        access_restricted=out.restricted_access,
        content_encrypted=out.content_encrypted,
        recipe=recipe,
        key_envelope=envelope,
    )
    return await dor.add_file(node.iid, params, path, created)
