"""The node's HTTP server: uvicorn on a socket we bind ourselves (so a busy port is a clear error, not an exit),
without uvicorn's own signal handling (only the outermost runner handles signals). The HTTP implementation is
pinned to httptools, with the connection bounds of `saas.rest.connections` and the zero-copy sends of
`saas.rest.sendfile`. Requests in flight when it stops get `stop_grace` seconds, then 503 "Node is stopping"
(`saas.rest.stopping`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from saas.core.errors import ConfigError
from saas.rest.connections import ConnectionTable, HTTPLimits, fit_open_files
from saas.rest.sendfile import SENDERS, Senders, SendfileHttpToolsProtocol
from saas.rest.stopping import InFlight

__all__ = ["RESTServer"]

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class RESTServer:
    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        log_level: str = "warning",
        limits: HTTPLimits | None = None,
        stop_grace: float = 2.0,
        sendfile_threads: int = SENDERS,
    ):
        self._app = InFlight(app)
        self._stop_grace = stop_grace
        self._limits = fit_open_files(limits or HTTPLimits())
        self._host = host
        self._port = port
        self._log_level = log_level.lower()
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self._senders = Senders(sendfile_threads)

    @property
    def senders(self) -> Senders:
        """The zero-copy senders of this server (how many are busy)."""
        return self._senders

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        # proto IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY on accepted connections only for such sockets;
        # without it, uvicorn's separate header and body writes wait ~40 ms for a delayed ACK on keep-alive.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as e:
            sock.close()
            raise ConfigError(
                f"Cannot listen on {self._host}:{self._port}: {e.strerror}", {"address": f"{self._host}:{self._port}"}
            ) from None
        sock.listen(1024)
        sock.setblocking(False)
        self._socket = sock
        config = uvicorn.Config(
            self._app,
            log_level=self._log_level,
            lifespan="off",
            access_log=False,
            # a backstop: `InFlight.stop` ends requests first (uvicorn hints int, waits with asyncio.wait_for)
            timeout_graceful_shutdown=self._stop_grace + 5,  # type: ignore[arg-type]
            http=functools.partial(  # type: ignore[arg-type]
                SendfileHttpToolsProtocol, table=ConnectionTable(self._limits), senders=self._senders
            ),
            timeout_keep_alive=self._limits.keepalive_timeout,  # type: ignore[arg-type]
            loop="none",
            # X-Forwarded-For is believed from the node owner's reverse proxies only (none by default)
            proxy_headers=bool(self._limits.trusted_proxies),
            forwarded_allow_ips=list(self._limits.trusted_proxies) or None,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="rest-server")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise ConfigError(f"The REST server on {self._host}:{self._port} did not start")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._app.stop(self._stop_grace)
            await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
        except TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        finally:
            self._app.close()
        self._server = self._task = None
        self._senders.close()
