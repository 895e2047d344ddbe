"""Requests in flight when the node stops (issue 15): each ends with a clear answer, never uvicorn's bare 500.

`InFlight` is an ASGI middleware that runs every HTTP request in a task of its own and knows them all. `stop(grace)`
(called by `RESTServer.stop`) refuses new requests with 503 "Node is stopping", lets those in flight finish for
`grace` seconds, then cancels the rest: one whose response has not started (a streaming upload, a long poll) is
answered 503 "Node is stopping" as a `{reason, id, details}` envelope; one whose response has started (a download)
is cut off (uvicorn's ERROR about the incomplete response is filtered out until `close`). Each is logged in one
INFO line; the handlers' own cleanup (an upload's temp file) runs on the cancellation. uvicorn's graceful-shutdown
timeout stays as the backstop and is never reached."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.responses import JSONResponse

from saas.core.errors import UnavailableError

__all__ = ["STOPPING", "InFlight"]

logger = logging.getLogger(__name__)

STOPPING = "Node is stopping"
_CUT_OFF = "ASGI callable returned without completing response."


class _CutOffFilter(logging.Filter):
    """Drops uvicorn's ERROR about a response left incomplete: while stopping, that is a download cut off on
    purpose (logged by `InFlight` at INFO)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _CUT_OFF


class InFlight:
    def __init__(self, app: Any):
        self.app = app
        self.stopping = False
        self._filter = _CutOffFilter()
        self._tasks: dict[asyncio.Task[None], str] = {}  # request task -> "METHOD path"
        self._aborted: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        what = f"{scope['method']} {scope['path']}"
        if self.stopping:
            await _unavailable()(scope, receive, send)
            return
        started = False

        async def tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, tracked))
        self._tasks[task] = what
        try:
            await task  # cancelling this (uvicorn's) task cancels the request's too
        except asyncio.CancelledError:
            if task not in self._aborted or not task.cancelled():
                raise
            if started:
                logger.info("%s cut off: node is stopping", what)
            else:
                logger.info("%s answered 503: node is stopping", what)
                await _unavailable()(scope, receive, send)
        finally:
            self._tasks.pop(task, None)
            self._aborted.discard(task)

    async def stop(self, grace: float) -> None:
        """Refuse new requests; after `grace` seconds cancel those still in flight (see the module's docstring) and
        wait until they have answered."""
        self.stopping = True
        logging.getLogger("uvicorn.error").addFilter(self._filter)
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        left = [t for t in self._tasks if not t.done()]
        for task in left:
            self._aborted.add(task)
            task.cancel()
        if left:
            await asyncio.wait(left)

    def close(self) -> None:
        """The server has stopped: uvicorn's log is left as it was."""
        logging.getLogger("uvicorn.error").removeFilter(self._filter)


def _unavailable() -> JSONResponse:
    return JSONResponse(UnavailableError(STOPPING).to_envelope(), status_code=503, headers={"connection": "close"})
