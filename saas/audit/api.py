"""Audit REST routes (`/audit`). Thin: authenticate, decide what the caller may see, call `AuditLog`.

- `GET /audit` (signed): entries about the caller's objects and jobs on this node, or done by the caller; the node
  owner sees every entry. Filters: object, job, event, time (`since`/`until`, ms) and paging (`after_seq`, `limit`).
- `GET /audit/export` (signed, node owner): the whole log as JSON lines, for `saas.audit.chain` to verify offline.
- `GET /audit/verify` (signed, node owner): the node verifies its stored log and reports (200 either way)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import StreamingResponse

from saas.audit.chain import AuditEntry
from saas.audit.log import AuditLog
from saas.core.errors import AuthorisationError
from saas.core.identity import Identity
from saas.rest.auth import SignedIdentity

__all__ = ["router"]

router = APIRouter(prefix="/audit", tags=["audit"])
MAX_TIME = 2**53  # ms, far beyond any date, well inside SQLite's integers


def _audit(request: Request) -> AuditLog:
    return request.app.state.node.audit


def _node_owner(request: Request, caller: Identity) -> None:
    if caller.id != request.app.state.node.iid:
        raise AuthorisationError("Only the node owner may export or verify the node's whole audit log")


@router.get("", response_model=list[AuditEntry])
async def show(
    request: Request,
    caller: SignedIdentity,
    obj_id: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$")] = None,
    job_id: Annotated[str | None, Query(max_length=64)] = None,
    event: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[int | None, Query(ge=0, le=MAX_TIME, description="ms since the epoch")] = None,
    until: Annotated[int | None, Query(ge=0, le=MAX_TIME, description="ms since the epoch")] = None,
    after_seq: Annotated[int, Query(ge=0, le=MAX_TIME)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[AuditEntry]:
    """Audit entries the caller may see, in order: about its objects and jobs, or its own actions."""
    visible_to = None if caller.id == request.app.state.node.iid else caller.id
    return await _audit(request).query(
        visible_to,
        obj_id=obj_id,
        job_id=job_id,
        event=event,
        since=since,
        until=until,
        after_seq=after_seq,
        limit=limit,
    )


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def export(request: Request, caller: SignedIdentity) -> StreamingResponse:
    """The whole log as JSON lines (header with the node identity and signed head, then the entries)."""
    _node_owner(request, caller)
    return StreamingResponse(_audit(request).export(), media_type="application/x-ndjson")


@router.get("/verify")
async def verify(
    request: Request,
    caller: SignedIdentity,
    anchor_seq: Annotated[int | None, Query(ge=1, le=MAX_TIME)] = None,
    anchor_hash: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$")] = None,
) -> dict[str, Any]:
    """Verify the stored log: every entry's hash, signature and link, its start, and its signed head."""
    _node_owner(request, caller)
    anchor = (anchor_seq, anchor_hash) if anchor_seq is not None and anchor_hash is not None else None
    return (await _audit(request).verify(anchor)).to_dict()
