"""`create_app(node)`: the FastAPI application of a node, with the one table that maps errors to responses.

Every error leaves as `{reason, id, details}` with a real status; a 500 means a bug (it is logged with its id).
Validation errors never echo the submitted values."""

from __future__ import annotations

import logging
import math
import sqlite3
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from saas import __version__
from saas.core import errors
from saas.rest.auth import RequestVerifier
from saas.rest.content import RangeNotSatisfiableError

if TYPE_CHECKING:
    from saas.node import Node

__all__ = ["API_PREFIX", "STATUS_BY_ERROR", "create_app", "status_for"]

logger = logging.getLogger(__name__)
API_PREFIX = "/api/v1"

# The first class an error is an instance of decides its status.
STATUS_BY_ERROR: list[tuple[type[errors.SaaSError], int]] = [
    (errors.AuthenticationError, 401),
    (errors.AuthorisationError, 403),
    (errors.NotFoundError, 404),
    (errors.ConflictError, 409),
    (errors.TooLargeError, 413),
    (RangeNotSatisfiableError, 416),
    (errors.LimitReachedError, 429),
    (errors.InvalidInputError, 400),
    (errors.InsufficientStorageError, 507),
    (errors.UnavailableError, 503),
    (errors.UnreachableError, 502),
    (errors.RemoteError, 502),
    (errors.SaaSError, 500),
]


def status_for(error: errors.SaaSError) -> int:
    return next(status for cls, status in STATUS_BY_ERROR if isinstance(error, cls))


def _envelope(
    status: int,
    reason: str,
    details: dict[str, Any] | None = None,
    error_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error = errors.SaaSError(reason, details, error_id)
    return JSONResponse(error.to_envelope(), status_code=status, headers=headers)


async def _saas_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.SaaSError)
    status = status_for(exc)
    if status == 507:  # the node is fine: an owner's quota or its disk is full
        logger.warning("error %s on %s %s: %s", exc.id, request.method, request.url.path, exc.reason)
    elif status >= 500:
        logger.error("error %s on %s %s: %s", exc.id, request.method, request.url.path, exc.reason)
    if status in (401, 403):
        _audit_refusal(request, exc, status)
    headers = {"content-range": f"bytes */{exc.details['size']}"} if status == 416 else None
    if status == 429 and "retry_after" in exc.details:
        headers = {"retry-after": str(math.ceil(exc.details["retry_after"]))}
    return JSONResponse(exc.to_envelope(), status_code=status, headers=headers)


def _audit_refusal(request: Request, exc: errors.SaaSError, status: int) -> None:
    """A refused request goes into the audit log: who claimed to ask (unverified on a 401), for what, and why —
    never its signature or other headers."""
    audit = request.app.state.node.audit
    audit.refused(
        request.client.host if request.client is not None else "unknown",
        request.headers.get("saas-iid", "")[:64] or None,
        method=request.method,
        path=request.url.path,
        status=status,
        reason=exc.reason,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
    ]
    return _envelope(
        422,
        "Invalid request: " + "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in problems[:3]),
        {"errors": problems},
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _envelope(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


async def _client_gone(request: Request, exc: Exception) -> Response:
    """A client that went away mid-request (say, mid-upload) is ordinary: one INFO line; nobody reads the answer."""
    logger.info("client %s went away during %s %s", _client(request), request.method, request.url.path)
    return Response(status_code=400)


def _client(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "?"


async def _storage_full(request: Request, exc: Exception) -> JSONResponse:
    """A full disk met anywhere (OSError ENOSPC/EDQUOT, SQLITE_FULL) is 507 with the reason; any other OSError or
    SQLite error goes on to `_unexpected` (a bug)."""
    full = errors.StorageFullError.from_error(exc, "the request's data")
    if full is None:
        raise exc
    logger.warning("error %s on %s %s: disk full (%s)", full.id, request.method, request.url.path, full.details)
    return JSONResponse(full.to_envelope(), status_code=507)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    error = errors.SaaSError("Internal error")
    logger.exception("error %s on %s %s", error.id, request.method, request.url.path)
    return JSONResponse(error.to_envelope(), status_code=500)


class BodyLimit:
    """Limits ordinary request bodies to `limit` bytes with a 413; streamed uploads (`unlimited` path suffixes)
    enforce their own limit while they stream. A body within the limit is read first and replayed to the app,
    so memory stays bounded by the limit."""

    def __init__(self, app: Any, limit: int, unlimited: tuple[str, ...]):
        self.app = app
        self.limit = limit
        self.unlimited = unlimited

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].endswith(self.unlimited):
            await self.app(scope, receive, send)
            return

        def too_large() -> JSONResponse:  # built only when needed (an envelope draws a random error id)
            return _envelope(413, f"Request body is larger than {self.limit} bytes", {"limit": self.limit})

        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await too_large()(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await too_large()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def routers(dor: bool, rti: bool) -> list[tuple[APIRouter, str]]:
    """Every router a node serves, with its prefix: the NodeDB, dashboard, operations and audit always, the DOR and
    the RTI when the node runs them. `create_app` mounts them; the README's REST reference lists them."""
    from saas.audit.api import router as audit_router
    from saas.dashboard.api import pages as dashboard_pages
    from saas.dashboard.api import router as dashboard_router
    from saas.nodedb.api import router as nodedb_router
    from saas.ops.api import metrics_router
    from saas.ops.api import router as ops_router

    mounted = [
        (nodedb_router, API_PREFIX),
        (dashboard_router, API_PREFIX),
        (dashboard_pages, ""),
        (ops_router, API_PREFIX),
        (metrics_router, ""),
        (audit_router, API_PREFIX),
    ]
    if dor:
        from saas.dor.api import router as dor_router

        mounted.append((dor_router, API_PREFIX))
    if rti:
        from saas.rti.api import router as rti_router
        from saas.rti.offers_api import router as offers_router

        mounted += [(rti_router, API_PREFIX), (offers_router, API_PREFIX)]
    return mounted


def create_app(node: Node) -> FastAPI:
    from saas.ops.metrics import MetricsMiddleware
    from saas.rest.docs import add_docs

    app = FastAPI(
        title="saas-middleware node", version=__version__, openapi_url="/openapi.json", docs_url=None, redoc_url=None
    )
    app.state.node = node
    app.state.verifier = RequestVerifier(
        node.iid, node.nodedb.get_identity, node.seen_requests, node.config.request_window, node.nodedb.touch_identity
    )
    app.state.sessions = node.sessions  # dashboard sign-in (saas.dashboard)
    app.add_exception_handler(errors.SaaSError, _saas_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(OSError, _storage_full)
    app.add_exception_handler(sqlite3.Error, _storage_full)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(BodyLimit, limit=node.config.max_json_body, unlimited=("/dor/add-c",))
    app.add_middleware(MetricsMiddleware, metrics=node.metrics)  # outermost: measures whole requests
    for router, prefix in routers(dor=node.dor is not None, rti=node.rti is not None):
        app.include_router(router, prefix=prefix)
    add_docs(app)  # /docs from the node's own assets; the signature headers in /openapi.json
    return app
