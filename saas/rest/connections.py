"""What one HTTP connection may cost the node before the app sees a request (DESIGN §12): uvicorn's httptools
protocol with bounds, one `ConnectionTable` per server.

- The request line and headers are at most `max_header_size` bytes: 431. Bytes are counted as they arrive, so a
  half-sent header never makes the node hold more than that plus one socket read.
- The complete headers arrive within `header_timeout` seconds of the connection (or of the first byte of the next
  request on a keep-alive connection): 408. Idle keep-alive connections close after uvicorn's `timeout_keep_alive`.
- A request body never stalls for more than `body_timeout` seconds (no byte while the node waits for one; time
  the node itself paused reading does not count): 408, and the handler sees the client gone.
- At most `max_connections` connections are open (503), and `max_connections_per_client` from one address (429),
  except from the `trusted_proxies` (reverse proxies carry many clients' connections); never more than the
  process's open-file limit allows (`fit_open_files`).

Every refusal is the node's JSON error envelope `{reason, id, details}` with `connection: close`. The node then
half-closes and discards what the client still sends for `LINGER` seconds (so the client reads the answer rather
than a reset) and closes; refused connections waiting so are bounded too (beyond `max_connections`, dropped)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from saas.core.errors import SaaSError

__all__ = ["LINGER", "ConnectionTable", "HTTPLimits", "LimitedHttpToolsProtocol", "fit_open_files"]

LINGER = 1.0  # seconds a refused connection is drained before it is closed


@dataclass(frozen=True)
class HTTPLimits:
    max_header_size: int = 32 * 1024  # bytes of request line and headers
    header_timeout: float = 10.0  # seconds to deliver complete headers
    body_timeout: float = 30.0  # seconds a request body may go without a byte while the node waits for one
    keepalive_timeout: float = 5.0  # seconds an idle keep-alive connection stays open
    max_connections: int = 1024
    max_connections_per_client: int = 128
    trusted_proxies: tuple[str, ...] = ()  # networks whose X-Forwarded-For is believed (`NodeConfig`)

    def is_proxy(self, host: str) -> bool:
        """Whether `host` (a connection's peer address) is one of the trusted reverse proxies."""
        if not self.trusted_proxies:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in ipaddress.ip_network(n) for n in self.trusted_proxies)


RESERVED_FILES = 256  # open files the node keeps for everything but HTTP connections (SQLite, P2P, pipes, content)


def fit_open_files(limits: HTTPLimits) -> HTTPLimits:
    """`limits` with at most as many connections as the process's open-file limit allows (open and draining ones
    each take a file descriptor; beyond it, accept() would fail), with a warning when they are lowered."""
    import dataclasses
    import logging
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    fit = max(16, (soft - RESERVED_FILES) // 2)
    if soft == resource.RLIM_INFINITY or limits.max_connections <= fit:
        return limits
    logging.getLogger(__name__).warning(
        "HTTP connections limited to %d (not %d): the open-file limit is %d (ulimit -n)",
        fit,
        limits.max_connections,
        soft,
    )
    return dataclasses.replace(
        limits, max_connections=fit, max_connections_per_client=min(limits.max_connections_per_client, fit)
    )


@dataclass
class ConnectionTable:
    """The open connections of one server, in total and per client address, and the refused ones draining."""

    limits: HTTPLimits
    total: int = 0
    per_client: Counter[str] = field(default_factory=Counter)
    draining: int = 0

    def admit(self, client: str) -> tuple[int, str, dict[str, Any]] | None:
        """Count a new connection from `client`, or return the refusal (status, reason, details)."""
        limits = self.limits
        if self.per_client[client] >= limits.max_connections_per_client and not limits.is_proxy(client):
            return (
                429,
                f"Too many open connections from your address (at most {limits.max_connections_per_client})",
                {"limit": limits.max_connections_per_client},
            )
        if self.total >= limits.max_connections:
            return 503, "The node has too many open connections; try again later", {"limit": limits.max_connections}
        self.total += 1
        self.per_client[client] += 1
        return None

    def release(self, client: str) -> None:
        self.total -= 1
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds of `table.limits` (create with `functools.partial`)."""

    def __init__(self, *args: Any, table: ConnectionTable, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._table = table
        self._limits = table.limits
        self._address = ""
        self._counted = False
        self._refused = False
        self._headers_pending = True  # between the start of a request and the end of its headers
        self._header_bytes = 0  # received in earlier reads while the headers were pending
        self._reading = 0  # bytes of the read being parsed
        self._header_started = self.loop.time()
        # One timer per connection, re-armed lazily (a timer per request costs a quarter of a small request's time)
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_pending = False  # between the end of the headers and the end of the body
        self._body_last = 0.0  # when the last body byte arrived (or the node resumed reading)
        self._body_timer: asyncio.TimerHandle | None = None
        self._drain_timer: asyncio.TimerHandle | None = None

    # -- connection --------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._address = self.client[0] if self.client else ""
        refusal = self._table.admit(self._address)
        if refusal is not None:
            self._refuse(*refusal, headers={"retry-after": "1"})
            return
        self._counted = True
        self._arm_header_timer(self._limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        self._cancel_body_timer()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
            self._table.draining -= 1
        if self._counted:
            self._counted = False
            self._table.release(self._address)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:  # draining: discard
            return
        self._reading = len(data)
        self._body_last = self.loop.time()  # any byte is progress (one clock read per socket read, not per chunk)
        super().data_received(data)
        if self._headers_pending and not self._refused and not self.transport.is_closing():
            self._header_bytes += len(data)  # what the parser holds of the unfinished head
            if self._header_bytes > self._limits.max_header_size:
                self._refuse_headers_too_large()

    # -- parser callbacks (after a refusal in the middle of a read, the rest of that read is ignored) ------------

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._headers_pending = True
        self._header_bytes = 0
        self._header_started = self.loop.time()
        if self._header_timer is None:
            self._arm_header_timer(self._limits.header_timeout)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._headers_pending = False
        limit = self._limits.max_header_size
        if self._header_bytes + self._reading > limit and self._head_size() > limit:  # complete within one read
            self._refuse_headers_too_large()
            return
        super().on_headers_complete()
        self._body_pending = True  # until on_message_complete, which follows at once when there is no body
        self._body_last = self.loop.time()
        if self._body_timer is None:
            self._arm_body_timer(self._limits.body_timeout)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            self._body_pending = False
            super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # the rest of a refused read may not parse: it is answered already
            super().send_400_response(msg)

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    # -- refusals ----------------------------------------------------------------------------------------------

    def _arm_header_timer(self, delay: float) -> None:
        self._header_timer = self.loop.call_later(delay, self._header_timeout)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self._headers_pending or self._refused or self.transport.is_closing():
            return  # armed again when the next request begins
        timeout = self._limits.header_timeout
        left = self._header_started + timeout - self.loop.time()
        if left > 0:  # this request began after the timer was armed
            self._arm_header_timer(left)
            return
        self._refuse(408, f"Request headers not received within {timeout:g} s", {"timeout": timeout})

    def _arm_body_timer(self, delay: float) -> None:
        self._body_timer = self.loop.call_later(delay, self._body_timeout)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_timeout(self) -> None:
        """Armed once per connection and re-armed lazily; a stalled body is answered 408 while no response began."""
        self._body_timer = None
        cycle = self.cycle
        if not self._body_pending or self._refused or self.transport.is_closing() or cycle is None:
            return  # armed again when the next request's headers are complete
        if cycle.response_started:
            return  # the handler answered without the rest of the body; keep-alive rules close the connection
        timeout = self._limits.body_timeout
        now = self.loop.time()
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            self._body_last = now  # the node is not reading (or not asked for the body yet): not the client's stall
        left = self._body_last + timeout - now
        if left > 0:
            self._arm_body_timer(left)
            return
        self._refuse(408, f"Request body stalled: no data for {timeout:g} s", {"timeout": timeout}, body=True)

    def _refuse_headers_too_large(self) -> None:
        limit = self._limits.max_header_size
        self._refuse(431, f"Request line and headers are larger than {limit} bytes", {"limit": limit})

    def _refuse(
        self,
        status: int,
        reason: str,
        details: dict[str, Any],
        headers: dict[str, str] | None = None,
        body: bool = False,
    ) -> None:
        """Answer with the error envelope, half-close, drain for `LINGER` seconds, close. With `body`, the refused
        request's handler is waiting for its body: it is told the client is gone (and answers nothing)."""
        self._refused = True
        self._headers_pending = False
        self._body_pending = False
        self.parser = None  # type: ignore[assignment]  # drops what it holds of the head (callbacks are guarded)
        self._cancel_header_timer()
        self._cancel_body_timer()
        self._unset_keepalive_if_required()
        transport = self.transport
        cycle = self.cycle
        if body and cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        elif cycle is not None and not cycle.response_complete:  # an earlier response is being written
            transport.close()
            return
        if self._table.draining >= self._limits.max_connections:
            transport.abort()
            return
        envelope = json.dumps(SaaSError(reason, details).to_envelope()).encode()
        head = [STATUS_LINE[status]]
        for name, value in {
            "content-type": "application/json",
            "content-length": str(len(envelope)),
            "connection": "close",
            **(headers or {}),
        }.items():
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        transport.write(b"".join(head) + b"\r\n" + envelope)
        if transport.can_write_eof():
            transport.write_eof()
        self._table.draining += 1
        self._drain_timer = self.loop.call_later(LINGER, transport.close)
