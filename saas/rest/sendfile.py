"""Bulk bytes through the node's HTTP server (issue 21): uvicorn's httptools protocol, with the bounds of
`saas.rest.connections`, plus

- the ASGI zero-copy send extension (`http.response.zerocopy`: `file`, `offset`, `count`, `more_body`): the
  kernel moves the file's bytes to the socket (`os.sendfile`), in a worker thread of this module's own, so the
  event loop neither copies them nor waits for the disk. At most `Senders.limit` transfers run so at once; beyond that
  (and where sendfile does not apply) the bytes go through the loop in chunks read by a worker thread, as before.
- request bodies handed to the app in batches of up to `BODY_BATCH` bytes (uvicorn's own limit is 64 KiB), so a
  large upload costs the loop far fewer wake-ups.

Callers may rely on: a zero-copy send writes exactly `count` bytes from `offset` of `file` (or the connection is
closed), the file object stays theirs (the thread uses duplicates of both descriptors, so neither a closed file nor
a closed connection can make it send the wrong bytes or to the wrong peer), and a cancelled send stops promptly."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import select
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from saas.rest.connections import LimitedHttpToolsProtocol

__all__ = ["BODY_BATCH", "SENDERS", "ZEROCOPY", "Senders", "SendfileHttpToolsProtocol"]

ZEROCOPY = "http.response.zerocopy"
SENDERS = 16  # zero-copy transfers at once by default (each holds a thread while its client reads)
SENDFILE_CHUNK = 64 * 1024 * 1024  # bytes per sendfile call (the socket takes what fits)
READ_AHEAD = 64 * 1024 * 1024  # bytes of the file asked for ahead of what was sent (a cold file streams)
READ_STEP = 8 * 1024 * 1024  # bytes asked for per call
FALLBACK_CHUNK = 1024 * 1024  # bytes per chunk when the loop sends
BODY_BATCH = 1024 * 1024  # request body bytes buffered per connection before reading pauses
POLL_MS = 200  # how often a waiting sender looks whether it should stop


class Senders:
    """The worker threads of one server's zero-copy sends, at most `limit` busy at once (0: none)."""

    def __init__(self, limit: int = SENDERS) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self.limit = limit
        self.busy = 0

    def pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.limit, thread_name_prefix="saas-sendfile")
        return self._pool

    def close(self) -> None:
        """Let the threads end (sends still running were cancelled with their tasks, and stop within POLL_MS)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _sendfile(sock_fd: int, file_fd: int, offset: int, count: int, stop: threading.Event, closing: Any) -> int:
    """Send `count` bytes from `offset` of the file to the socket (both descriptors are this call's own, closed at
    the end); returns the bytes sent, fewer only when stopped or the peer went away."""
    try:
        with contextlib.suppress(OSError):
            os.posix_fadvise(file_fd, offset, count, os.POSIX_FADV_SEQUENTIAL)
        poller = select.poll()
        poller.register(sock_fd, select.POLLOUT)
        sent = 0
        ahead = 0  # bytes from offset asked to be read ahead
        while sent < count and not stop.is_set() and not closing():
            while ahead - sent < READ_AHEAD and ahead < count:  # keep the disk busy ahead of the socket
                with contextlib.suppress(OSError):  # (the kernel reads at most its read-ahead size per call)
                    os.posix_fadvise(file_fd, offset + ahead, min(READ_STEP, count - ahead), os.POSIX_FADV_WILLNEED)
                ahead += READ_STEP
            try:
                n = os.sendfile(sock_fd, file_fd, offset + sent, min(count - sent, SENDFILE_CHUNK))
            except BlockingIOError:
                events = poller.poll(POLL_MS)
                if any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events):
                    break
                continue
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN, errno.EBADF):
                    break
                raise
            if n == 0:  # the file ended early (it is never truncated in place: treat as the peer gone)
                break
            sent += n
        return sent
    finally:
        os.close(sock_fd)
        os.close(file_fd)


async def _through_loop(cycle: Any, plain_send: Any, file: Any, offset: int, count: int) -> None:
    """Send the bytes through the event loop (chunks read by a worker thread)."""
    fd = file.fileno()
    sent = 0
    while sent < count and not cycle.disconnected:
        chunk = await asyncio.to_thread(os.pread, fd, min(FALLBACK_CHUNK, count - sent), offset + sent)
        if not chunk:
            raise RuntimeError("File ended before the response's Content-Length")
        sent += len(chunk)
        await plain_send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _wait_written(cycle: Any) -> None:
    """Until everything the transport buffered (the response head) is in the kernel."""
    transport = cycle.transport
    if transport.get_write_buffer_size() == 0:
        return
    transport.set_write_buffer_limits(high=0)  # pause_writing now, resume_writing once empty
    try:
        while transport.get_write_buffer_size() and not cycle.disconnected and not transport.is_closing():
            await cycle.flow.drain()
    finally:
        transport.set_write_buffer_limits()


async def _send_zerocopy(cycle: Any, plain_send: Any, senders: Senders, message: dict[str, Any]) -> None:
    if not cycle.response_started or cycle.response_complete or cycle.chunked_encoding:
        raise RuntimeError("A zero-copy send needs a started response with a Content-Length")
    file = message["file"]
    offset = int(message.get("offset") or 0)
    count = message.get("count")
    if count is None:
        count = os.fstat(file.fileno()).st_size - offset
    if count > cycle.expected_content_length:
        raise RuntimeError("Response content longer than Content-Length")
    transport = cycle.transport
    sock = transport.get_extra_info("socket")
    if count and not cycle.disconnected:
        if sock is None or senders.busy >= senders.limit or transport.get_extra_info("sslcontext") is not None:
            await _through_loop(cycle, plain_send, file, offset, count)
        else:
            await _wait_written(cycle)
            if cycle.disconnected or transport.is_closing():
                return
            senders.busy += 1
            stop = threading.Event()
            try:
                sock_fd, file_fd = os.dup(sock.fileno()), os.dup(file.fileno())
                future = asyncio.get_running_loop().run_in_executor(
                    senders.pool(), _sendfile, sock_fd, file_fd, offset, count, stop, transport.is_closing
                )
                try:
                    sent = await asyncio.shield(future)
                except asyncio.CancelledError:
                    stop.set()  # the thread ends within POLL_MS and closes its descriptors
                    raise
            finally:
                senders.busy -= 1
            if sent < count:  # the peer went away (or the connection is closing): it gets no partial response
                cycle.disconnected = True
                transport.close()
                return
            cycle.expected_content_length -= count  # (the loop's sends counted theirs)
    if not message.get("more_body", False):
        await plain_send({"type": "http.response.body", "body": b"", "more_body": False})


class SendfileHttpToolsProtocol(LimitedHttpToolsProtocol):
    """`LimitedHttpToolsProtocol` with zero-copy sends and batched request bodies (create with
    `functools.partial(..., table=..., senders=...)`; one `Senders` per server)."""

    def __init__(self, *args: Any, senders: Senders, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._senders = senders

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.scope is not None:
            self.scope["extensions"] = {**self.scope.get("extensions", {}), ZEROCOPY: {}}

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle is previous:
            return
        plain_send = cycle.send
        senders = self._senders

        async def send(message: Any) -> None:
            if message["type"] == ZEROCOPY:
                await _send_zerocopy(cycle, plain_send, senders, message)
            else:
                await plain_send(message)

        # the ASGI task reads `cycle.send` when it starts, after this returns
        cycle.send = send  # type: ignore[method-assign]

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > BODY_BATCH:
            self.flow.pause_reading()
        cycle.message_event.set()
