"""DOR REST routes (`/dor/...`, DESIGN §11). Thin: parse, authenticate, call `DORService`.

`POST /dor/add-c` body: one line of JSON (`AddCDataObjectParameters`), a newline, then the raw content bytes.
The whole body is covered by `saas-body-sha256`, checked while the content streams to disk. A streamed upload
signs `streamed:<SHA-256 of the head line>` instead (`saas.core.signing.streamed_body_sha256`): the head is checked
against it before any content is read, the content is stored but kept pending (202, `PendingUpload`), and
`POST /dor/add-c/{pending_id}/commit` with the signer's word on the content's hash publishes it (`saas.dor.pending`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import JSONResponse, Response, StreamingResponse

from saas.core.errors import AuthorisationError, InvalidInputError, TooLargeError
from saas.core.signing import HEADER_BODY_SHA256, sha256_hex, streamed_head_sha256
from saas.dor.catalog import SearchQuery
from saas.dor.schemas import (
    AddCDataObjectParameters,
    AddGPPDataObjectParameters,
    AnyDataObject,
    CDataObject,
    DataObject,
    DataObjectProvenance,
    DORStatistics,
    GPPDataObject,
    GrantParameters,
    KeyEnvelope,
    KeyHolder,
    PendingUpload,
    StorageUsage,
    UploadCommit,
)
from saas.dor.service import DORService
from saas.rest.auth import OptionalIdentity, SignedIdentity, StreamIdentity, acting_as, delegation_of, session_of
from saas.rest.content import content_response

__all__ = ["MAX_HEAD", "router"]

router = APIRouter(prefix="/dor", tags=["dor"])
MAX_HEAD = 1024 * 1024
MAX_OFFSET = 2**31  # far beyond any catalog, well inside SQLite's 64-bit integers
MAX_FILTERS = 100  # patterns / tags per search (each adds to one SQL expression, whose depth SQLite limits)
ObjId = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="data object ID")]
PendingId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="pending upload ID")]
IidPath = Annotated[str, Path(pattern=r"^[0-9a-z]{64}$", description="identity ID")]


def _dor(request: Request) -> DORService:
    return request.app.state.node.dor


async def _read_head(stream: AsyncIterator[bytes]) -> tuple[bytes, bytes]:
    """The parameter line and whatever content arrived with it."""
    buffer = bytearray()
    async for chunk in stream:
        buffer += chunk
        newline = buffer.find(b"\n")
        if newline >= 0:
            if newline > MAX_HEAD:
                break
            return bytes(buffer[:newline]), bytes(buffer[newline + 1 :])
        if len(buffer) > MAX_HEAD:
            break
    if len(buffer) > MAX_HEAD:
        raise TooLargeError("The parameter line of an upload is limited to 1 MiB")
    raise InvalidInputError("Upload body must start with a line of JSON parameters followed by a newline")


@router.get("", response_model=list[AnyDataObject])
async def search(
    request: Request,
    reader: OptionalIdentity,
    patterns: Annotated[
        list[str] | None, Query(max_length=MAX_FILTERS, description="substrings of type, format or tags (any)")
    ] = None,
    owner_iid: str | None = None,
    data_type: str | None = None,
    data_format: str | None = None,
    c_hashes: Annotated[list[str] | None, Query()] = None,
    tag: Annotated[
        list[str] | None,
        Query(max_length=MAX_FILTERS, description="'key' (has the tag) or 'key=value' (JSON or text)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> list[CDataObject | GPPDataObject]:
    """Objects visible to the caller (unrestricted ones when anonymous), newest first."""
    tags: dict[str, Any] = {}
    for item in tag or []:
        key, sep, raw = item.partition("=")
        if not sep:
            tags[key] = None
            continue
        try:
            tags[key] = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON (or nested too deep to be a stored value): text
            tags[key] = raw
    query = SearchQuery(
        patterns=patterns or [],
        owner_iid=owner_iid,
        data_type=data_type,
        data_format=data_format,
        c_hashes=c_hashes or [],
        tags=tags,
        limit=limit,
        offset=offset,
    )
    return await _dor(request).search(query, reader)


@router.get("/statistics", response_model=DORStatistics)
async def statistics(request: Request, reader: OptionalIdentity) -> DORStatistics:
    """Counts and distinct types, formats and tag keys of the objects the caller may see."""
    return await _dor(request).statistics(reader)


@router.get("/usage", response_model=StorageUsage)
async def usage(request: Request, caller: SignedIdentity) -> StorageUsage:
    """What the caller's data objects take on this node (each counted with its full size) and their quota."""
    return await _dor(request).usage(caller)


@router.post(
    "/add-c",
    response_model=CDataObject,
    responses={
        202: {
            "model": PendingUpload,
            "description": "a streamed upload (signed body hash `streamed:<SHA-256 of the head line>`): received, "
            "waiting for its commit",
        }
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {
                    "schema": {
                        "type": "string",
                        "format": "binary",
                        "description": "a line of JSON (AddCDataObjectParameters), a newline, then the content",
                    }
                }
            },
        }
    },
)
async def add_c(request: Request, signer: StreamIdentity) -> CDataObject | Response:
    """Add a content object (streamed). Signed over its head line only, it is kept pending until committed (202)."""
    dor = _dor(request)
    length = request.headers.get("content-length")
    announced = int(length) if length and length.isdigit() and len(length) < 20 else None
    if announced is not None and dor.max_object_size is not None and announced > dor.max_object_size + MAX_HEAD:
        raise TooLargeError(
            f"Content is larger than this node's limit of {dor.max_object_size} bytes", {"limit": dor.max_object_size}
        )
    claimed = None if session_of(request) is not None else request.headers[HEADER_BODY_SHA256]  # dashboard: none
    head_sha256 = None if claimed is None else streamed_head_sha256(claimed)
    stream = request.stream()
    head, first = await _read_head(stream)
    if head_sha256 is not None and sha256_hex(head + b"\n") != head_sha256:
        raise InvalidInputError(
            f"The parameter line does not match the head hash signed in {HEADER_BODY_SHA256}: upload refused"
        )
    try:
        params = AddCDataObjectParameters.model_validate_json(head)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_input=False, include_context=False)) from None
    size = None if announced is None else max(0, announced - len(head) - 1)  # the content's size: checked early
    if head_sha256 is not None:
        pending = await dor.add_pending(signer, params, head + b"\n", first, stream, size_hint=size)
        return JSONResponse(pending.model_dump(mode="json"), status_code=202)
    return await dor.add_content(signer, params, head + b"\n", first, stream, claimed, size_hint=size)


@router.post("/add-c/{pending_id}/commit", response_model=CDataObject)
async def commit_upload(
    pending_id: PendingId, commit: UploadCommit, request: Request, signer: SignedIdentity
) -> CDataObject:
    """Publish the signer's pending upload if `c_hash` is the SHA-256 of the content received; else discard it."""
    return await _dor(request).commit_upload(signer, pending_id, commit.c_hash)


@router.post("/add-gpp", response_model=GPPDataObject)
async def add_gpp(params: AddGPPDataObjectParameters, request: Request, signer: SignedIdentity) -> GPPDataObject:
    """Add a Git-Processor-Pointer: the node clones the repository at the commit and validates the descriptor."""
    return await _dor(request).add_gpp(signer, params)


@router.get("/{obj_id}/meta", response_model=AnyDataObject)
async def get_meta(obj_id: ObjId, request: Request, reader: OptionalIdentity) -> CDataObject | GPPDataObject:
    """An object's metadata (a restricted object's only to those with access)."""
    dor = _dor(request)
    meta = await dor.get_meta(obj_id, reader)
    if meta.access_restricted and reader is not None:  # who looked at a restricted object: for its owner's audit
        dor.audit.record("object.meta_read", actor=reader.id, owner=meta.owner_iid, obj_id=obj_id)
    return meta


@router.get(
    "/{obj_id}/content",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "partial content (Range)"},
        416: {"description": "range not satisfiable"},
    },
)
async def get_content(obj_id: ObjId, request: Request, reader: SignedIdentity) -> Response:
    """The content; a single `Range` (with `If-Range` on the ETag, which is the c_hash) resumes a download. A node
    fetching for a user signs as itself and sends the user's delegation in `saas-delegation`."""
    signer = reader
    reader = await acting_as(request, signer, obj_id)
    f, size, row = await _dor(request).open_content(obj_id, reader, via=signer.id if signer is not reader else None)
    return content_response(
        f,
        size,
        row.c_hash,
        request.headers.get("range"),
        request.headers.get("if-range"),
        {"saas-c-hash": row.c_hash, "saas-content-encrypted": str(row.content_encrypted)},
    )


@router.get("/{obj_id}/envelope", response_model=KeyEnvelope)
async def get_envelope(obj_id: ObjId, request: Request, reader: SignedIdentity) -> KeyEnvelope:
    """The caller's key envelope for an encrypted object."""
    return await _dor(request).get_envelope(obj_id, reader)


@router.get("/{obj_id}/key-holders/{iid}", response_model=KeyHolder)
async def holds_key(obj_id: ObjId, iid: IidPath, request: Request, caller: SignedIdentity) -> KeyHolder:
    """Whether identity `iid` holds the content key of an encrypted object (owns it or has a key envelope of its
    own). Answered to a reader of the object that is its owner, `iid` itself or a holder of the key: an RTI node
    given an envelope asks this before it decrypts the object for a job of `iid`."""
    return KeyHolder(obj_id=obj_id, iid=iid, holds_key=await _dor(request).holds_key(obj_id, iid, caller))


@router.get("/{obj_id}/provenance", response_model=DataObjectProvenance)
async def get_provenance(obj_id: ObjId, request: Request, reader: OptionalIdentity) -> DataObjectProvenance:
    """The recipe graph, followed into other nodes' DORs; ancestors found nowhere are listed in `missing`. With
    a `saas-delegation` header (the caller's own, naming this node as delegate, scope `provenance`) restricted
    ancestors that the caller may read on the nodes the delegation names as servers are included too."""
    delegation = delegation_of(request)
    if delegation is not None:
        if reader is None or delegation.issuer_iid != reader.id:
            raise AuthorisationError("A delegation must be sent by the identity that issued it")
        node_iid = request.app.state.node.iid
        await asyncio.to_thread(delegation.check, reader, node_iid, None, "provenance")
    return await _dor(request).provenance(obj_id, reader, delegation)


@router.delete("/{obj_id}", response_model=AnyDataObject)
async def delete(obj_id: ObjId, request: Request, caller: SignedIdentity) -> CDataObject | GPPDataObject:
    """Delete an object (owner only); returns its last metadata."""
    return await _dor(request).delete(obj_id, caller)


@router.post("/{obj_id}/access/{iid}", response_model=AnyDataObject)
async def grant_access(
    obj_id: ObjId,
    iid: IidPath,
    request: Request,
    caller: SignedIdentity,
    params: Annotated[GrantParameters | None, Body()] = None,
) -> DataObject:
    """Grant identity `iid` access to a restricted object (owner only)."""
    return await _dor(request).grant_access(obj_id, caller, iid, params.key_envelope if params else None)


@router.delete("/{obj_id}/access/{iid}", response_model=AnyDataObject)
async def revoke_access(obj_id: ObjId, iid: IidPath, request: Request, caller: SignedIdentity) -> DataObject:
    """Revoke identity `iid`'s access (owner only)."""
    return await _dor(request).revoke_access(obj_id, caller, iid)


@router.put("/{obj_id}/owner/{iid}", response_model=AnyDataObject)
async def transfer_ownership(obj_id: ObjId, iid: IidPath, request: Request, caller: SignedIdentity) -> DataObject:
    """Make identity `iid` the owner (owner only)."""
    return await _dor(request).transfer_ownership(obj_id, caller, iid)


@router.put("/{obj_id}/tags", response_model=AnyDataObject)
async def update_tags(
    obj_id: ObjId,
    tags: Annotated[list[DataObject.Tag], Body(max_length=1000)],
    request: Request,
    caller: SignedIdentity,
) -> DataObject:
    """Add or replace tags (owner only)."""
    return await _dor(request).update_tags(obj_id, caller, tags)


@router.delete("/{obj_id}/tags", response_model=AnyDataObject)
async def remove_tags(
    obj_id: ObjId, keys: Annotated[list[str], Body(max_length=1000)], request: Request, caller: SignedIdentity
) -> DataObject:
    """Remove tags by key (owner only)."""
    return await _dor(request).remove_tags(obj_id, caller, keys)
