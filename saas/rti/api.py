"""RTI REST routes (`/rti/...`, DESIGN §11). Thin: parse, authenticate, call `RTIService`.

Anonymous: the list of deployed processors and each processor's state and descriptor (a failure's reason and log
tail only for the node owner, signed). Everything about jobs is signed and limited to the job's owner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path as FilePath
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, StreamingResponse

from saas.core.errors import InvalidInputError
from saas.core.identity import Identity
from saas.dor.schemas import TaskProof
from saas.rest.auth import OptionalIdentity, SignedIdentity, session_of, signed_fields
from saas.rti.jobs import FINAL_STATES
from saas.rti.runner import STDERR_LOG, STDOUT_LOG
from saas.rti.schemas import DeployParameters, Job, JobStatus, ListedJob, Processor, Task
from saas.rti.service import RTIService

__all__ = ["router"]

router = APIRouter(prefix="/rti", tags=["rti"])
FINAL = {s.value for s in FINAL_STATES}
ProcId = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="processor ID (the GPP's object ID)")]
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{8,64}$", description="job ID")]


def _rti(request: Request) -> RTIService:
    return request.app.state.node.rti


@router.get("", response_model=list[Processor])
async def get_deployed(request: Request, caller: OptionalIdentity) -> list[Processor]:
    """Processors on this node (deploying, ready or failed); why one failed and its log tail only for the node
    owner (signed)."""
    return _rti(request).get_deployed(caller)


@router.post("/proc/{proc_id}", response_model=Processor)
async def deploy(
    proc_id: ProcId, request: Request, caller: SignedIdentity, params: DeployParameters | None = None
) -> Processor:
    """Start deploying a processor; returns at once (state `deploying`)."""
    return await _rti(request).deploy(caller, proc_id, params or DeployParameters())


@router.get("/proc/{proc_id}", response_model=Processor)
async def get_processor(proc_id: ProcId, request: Request, caller: OptionalIdentity) -> Processor:
    """State and descriptor (anonymous); for an agent, its instances. Signed by the node owner: also why it failed,
    the log tail and the jobs agent instances hold."""
    return _rti(request).get_processor(proc_id, caller)


@router.delete("/proc/{proc_id}", response_model=Processor)
async def undeploy(proc_id: ProcId, request: Request, caller: SignedIdentity, force: bool = False) -> Processor:
    """Undeploy; refused (409) while jobs are unfinished unless `force` (which cancels them)."""
    return await _rti(request).undeploy(caller, proc_id, force)


async def _proof(request: Request, task: Task) -> TaskProof | None:
    """The signed submission as received (verified by `SignedIdentity`): kept with the job, it shows the DOR that
    stores an output that the user asked this node for it (`saas.dor.claims`). A submission from the dashboard
    (a session, no signature) has none, so its outputs can go to this node's DOR only."""
    if session_of(request) is not None:
        node = request.app.state.node
        elsewhere = [o.name for o in task.output if node.dor is None or o.target_node_iid not in (None, node.iid)]
        if elsewhere:
            raise InvalidInputError(
                "A job submitted from the dashboard stores its outputs on this node only, in its DOR (another "
                "node's DOR needs the user's signed task: submit it with saas-cli)",
                {"outputs": elsewhere[:10]},
            )
        return None
    try:
        body = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("A task must be JSON in UTF-8") from None
    return TaskProof(
        **signed_fields(request),
        body=body,
    )


@router.post("/proc/{proc_id}/jobs", response_model=Job)
async def submit(proc_id: ProcId, task: Task, request: Request, caller: SignedIdentity) -> Job:
    """Submit a job (the seed's task); validated at once (400 with the reason)."""
    return await _rti(request).submit(caller, proc_id, task, proof=await _proof(request, task))


@router.post("/proc/{proc_id}/run", response_model=JobStatus)
async def run(
    proc_id: ProcId,
    task: Task,
    request: Request,
    caller: SignedIdentity,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for the job to be final")] = 10.0,
) -> JobStatus:
    """Submit a job (validated as by `submit`) and answer with its status once it is final, or after `wait` seconds
    (then follow it with the status route): one round trip for a job that ends quickly."""
    return await _rti(request).run(caller, proc_id, task, wait, proof=await _proof(request, task))


@router.get("/job", response_model=list[ListedJob])
async def get_jobs(request: Request, caller: SignedIdentity) -> list[ListedJob]:
    """The caller's jobs with their states, newest first (one request for a job list)."""
    return await _rti(request).get_jobs(caller)


@router.get("/job/{job_id}/status", response_model=JobStatus)
async def get_status(
    job_id: JobId,
    request: Request,
    caller: SignedIdentity,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for the next change")] = 0.0,
    until: Annotated[
        Literal["change", "final"], Query(description="with wait: answer at the next change, or only once final")
    ] = "change",
) -> JobStatus:
    """A job's status: state, progress, messages, outputs (its user or the node owner)."""
    return await _rti(request).get_status(job_id, caller, wait, until == "final")


@router.get("/job/{job_id}/events", responses={200: {"content": {"text/event-stream": {}}}}, response_model=None)
async def get_events(job_id: JobId, request: Request, caller: SignedIdentity) -> StreamingResponse:
    """Server-sent events: the job's status (`event: status`, data: JobStatus JSON) now and at every change, until
    it is final; a comment line every 15 s keeps idle connections open."""
    rti = _rti(request)
    await rti.get_status(job_id, caller)  # the job exists and the caller may see it, before the stream starts
    return StreamingResponse(
        _events(rti, job_id, caller), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


async def _events(rti: RTIService, job_id: str, caller: Identity) -> AsyncIterator[str]:
    while True:
        event = rti.changed(job_id)  # taken before reading, so no change between read and wait is missed
        status = await rti.get_status(job_id, caller)
        yield f"event: status\ndata: {status.model_dump_json()}\n\n"
        if event is None or status.state in FINAL:
            return
        while True:
            try:
                await asyncio.wait_for(event.wait(), 15.0)
                break
            except TimeoutError:
                yield ": keep-alive\n\n"


@router.delete("/job/{job_id}", response_model=JobStatus)
async def cancel(job_id: JobId, request: Request, caller: SignedIdentity) -> JobStatus:
    """Cancel a job (its user or the node owner); a finished job stays as it ended."""
    return await _rti(request).cancel(job_id, caller)


def _pack(folder: FilePath) -> FilePath:
    fd, name = tempfile.mkstemp(suffix=".tar.gz")
    os.close(fd)
    with tarfile.open(name, "w:gz") as tar:
        for log in (STDOUT_LOG, STDERR_LOG):
            if (folder / log).is_file():
                tar.add(folder / log, arcname=log)
    return FilePath(name)


@router.get(
    "/job/{job_id}/logs",
    responses={200: {"content": {"application/gzip": {}, "text/plain": {}}}},
    response_model=None,
)
async def get_logs(
    job_id: JobId,
    request: Request,
    caller: SignedIdentity,
    follow: Annotated[bool, Query(description="stream log lines while the job runs")] = False,
) -> FileResponse | StreamingResponse:
    """The job's logs as tar.gz, or (follow) its stdout and stderr lines as they are written."""
    rti = _rti(request)
    folder, _ = await rti.logs_folder(job_id, caller)
    if not follow:
        archive = await asyncio.to_thread(_pack, folder)
        return FileResponse(
            archive,
            media_type="application/gzip",
            filename=f"{job_id}-logs.tar.gz",
            background=BackgroundTask(archive.unlink, missing_ok=True),
        )
    return StreamingResponse(_follow(rti, job_id, folder), media_type="text/plain; charset=utf-8")


async def _follow(rti: RTIService, job_id: str, folder: FilePath) -> AsyncIterator[bytes]:
    offsets = {STDOUT_LOG: 0, STDERR_LOG: 0}
    partial = {STDOUT_LOG: b"", STDERR_LOG: b""}

    def read_new() -> bytes:
        out = b""
        for name in offsets:
            path = folder / name
            if not path.is_file():
                continue
            with open(path, "rb") as f:
                f.seek(offsets[name])
                data = f.read(4 * 1024 * 1024)
            offsets[name] += len(data)
            data = partial[name] + data
            cut = data.rfind(b"\n") + 1
            out += data[:cut]
            partial[name] = data[cut:]
        return out

    while True:
        event = rti.changed(job_id)  # taken before reading, so no change between read and wait is missed
        data = await asyncio.to_thread(read_new)
        if data:
            yield data
        if event is None:
            rest = partial[STDOUT_LOG] + partial[STDERR_LOG]
            if rest:
                yield rest + b"\n"
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), 5.0)
