"""`create_app(node)`: the FastAPI application of a node, with the one table that maps errors to responses.

Every error leaves as `{reason, id, details}` with a real status; a 500 means a bug (it is logged with its id).
Validation errors never echo the submitted values."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from saas import __version__
from saas.core import errors
from saas.rest.auth import RequestVerifier

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
    (errors.InvalidInputError, 400),
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
    if status >= 500:
        logger.error("error %s on %s %s: %s", exc.id, request.method, request.url.path, exc.reason)
    return JSONResponse(exc.to_envelope(), status_code=status)


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


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    error = errors.SaaSError("Internal error")
    logger.exception("error %s on %s %s", error.id, request.method, request.url.path)
    return JSONResponse(error.to_envelope(), status_code=500)


def create_app(node: Node) -> FastAPI:
    from saas.nodedb.api import router as nodedb_router

    app = FastAPI(
        title="saas-middleware node", version=__version__, openapi_url="/openapi.json", docs_url="/docs", redoc_url=None
    )
    app.state.node = node
    app.state.verifier = RequestVerifier(node.iid, node.nodedb.get_identity, node.config.request_window)
    app.add_exception_handler(errors.SaaSError, _saas_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(nodedb_router, prefix=API_PREFIX)
    if node.dor is not None:
        from saas.dor.api import router as dor_router

        app.include_router(dor_router, prefix=API_PREFIX)
    return app
