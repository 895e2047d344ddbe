"""Bulk content between a proxy and a node (issue 21), over the standard library's `http.client` (the proxies'
other requests use httpx, whose 64 KiB reads and per-chunk copies cost more than the disk's time).

- `receive`: a response body read straight into a few large buffers; a second thread hashes and writes each
  full buffer while the next one fills (`saas.core.pipeline`), so hashing overlaps the network, and a third
  writes while it hashes; a large body is written past the page cache (`saas.core.direct`). Memory stays
  constant.
- `send`: a request whose body is a short prefix and then a file, sent by the kernel from the file (`sendfile`).

Both map what goes wrong as `RESTProxy.request` does: the node's error envelope becomes the matching
`RemoteError`, a connection that fails or is cut off an `UnreachableError`. A caller may rely on `receive` having
written exactly the bytes it hashed, and on `send` refusing a file that changed size meanwhile."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
from collections.abc import Callable
from typing import Any, BinaryIO

from saas.core import errors
from saas.core.direct import DIRECT_MIN, Sink, aligned_buffer
from saas.core.pipeline import pump
from saas.rest.proxy import error_words

__all__ = ["Exchange", "receive", "send"]

SEND_SEGMENT = 16 * 1024 * 1024  # bytes per sendfile call (progress is reported between them)
MAX_ERROR_BODY = 1024 * 1024  # bytes of an error answer read
Progress = Callable[[int, int], None]


class Exchange:
    """One request to the node at `address` (a fresh connection, closed at the end)."""

    def __init__(self, address: tuple[str, int], timeout: float):
        self.address = address
        self._connection = http.client.HTTPConnection(address[0], address[1], timeout=timeout)

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *_: Any) -> None:
        self._connection.close()

    def where(self) -> str:
        return "{}:{}".format(*self.address)

    def unreachable(self, error: BaseException, during: str) -> errors.UnreachableError:
        """`error` of the connection, while connecting, sending or receiving, as an `UnreachableError`."""
        where = self.where()
        if isinstance(error, TimeoutError):
            reason = f"Node at {where} did not answer in time"
        elif during == "connecting":
            reason = f"Could not connect to {where}: {error_words(error)}"
        elif during == "receiving":
            reason = f"The answer of node at {where} was cut off: {error_words(error)}"
        else:
            reason = f"Sending to node at {where} failed: {error_words(error)}"
        return errors.UnreachableError(reason, {"address": where})

    def sock(self) -> socket.socket:
        """The connection's socket (after `start`)."""
        sock = self._connection.sock
        assert sock is not None
        return sock

    def start(self, method: str, target: str, headers: dict[str, str]) -> None:
        connection = self._connection
        try:
            connection.putrequest(method, target, skip_accept_encoding=True)
            for name, value in headers.items():
                connection.putheader(name, value)
            connection.endheaders()
        except OSError as e:
            raise self.unreachable(e, "connecting") from e

    def response(self, sending_error: BaseException | None = None) -> http.client.HTTPResponse:
        """The response's status and headers; an error answer is raised as its `RemoteError`. After a failed send,
        the answer the node may have given before it stopped reading (else the send's error)."""
        try:
            response = self._connection.getresponse()
        except (OSError, http.client.HTTPException) as e:
            raise self.unreachable(sending_error or e, "sending" if sending_error else "receiving") from e
        if response.status >= 400:
            import httpx

            from saas.rest.proxy import error_from_response

            try:
                body = response.read(MAX_ERROR_BODY)
            except (OSError, http.client.HTTPException):
                body = b""
            raise error_from_response(httpx.Response(response.status, headers=response.getheaders(), content=body))
        if sending_error is not None:
            raise self.unreachable(sending_error, "sending") from sending_error
        return response


def receive(
    exchange: Exchange, response: http.client.HTTPResponse, fd: int, progress: Progress | None = None
) -> tuple[str, int]:
    """Read the body of `response` into the file descriptor `fd`, hashed on the way by a second thread while the
    next buffer fills; (SHA-256 hex, bytes). Raises `UnreachableError` if the connection fails or the body ends
    before its Content-Length; an error writing to `fd` is raised as it is."""
    total = response.length  # None: chunked

    def fill(buffer: bytearray) -> int:
        view = memoryview(buffer)
        filled = 0
        try:
            while filled < len(buffer):
                n = response.readinto(view[filled:])
                if not n:
                    break
                filled += n
        except (OSError, http.client.HTTPException) as e:
            raise exchange.unreachable(e, "receiving") from e
        return filled

    digest = hashlib.sha256()
    direct = total is not None and total >= DIRECT_MIN
    with Sink(fd, digest, direct=direct) as sink:
        on_filled = None if progress is None else lambda n: progress(n, total or n)
        done = pump(fill, sink, on_filled, new_buffer=aligned_buffer if sink.direct else bytearray)
    if total is not None and done < total:
        where = exchange.where()
        raise errors.UnreachableError(
            f"The answer of node at {where} was cut off after {done} of {total} bytes", {"address": where}
        )
    return digest.hexdigest(), done


def send(exchange: Exchange, prefix: bytes, source: BinaryIO, size: int, progress: Progress | None = None) -> bytes:
    """Send the request body, `prefix` and then the first `size` bytes of the open file `source` (by the kernel),
    and return the body of the node's answer. A node that stops reading gets the rest of the body cut off and its
    answer (an error) is raised; a file that no longer has `size` bytes is refused (`InvalidInputError`)."""
    sock = exchange.sock()
    sent = 0
    try:
        if os.fstat(source.fileno()).st_size == size:
            sock.sendall(prefix)
            while sent < size:
                n = sock.sendfile(source, sent, min(SEND_SEGMENT, size - sent))
                if not n:
                    break
                sent += n
                if progress is not None:
                    progress(sent, size)
    except OSError as e:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        exchange.response(e)  # raises: the node's answer, else this error
    if sent != size:  # the node sees a body shorter than announced, and drops it
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        raise errors.InvalidInputError(f"'{source.name}' changed while it was being uploaded", {"path": source.name})
    response = exchange.response()
    try:
        return response.read()
    except (OSError, http.client.HTTPException) as e:
        raise exchange.unreachable(e, "receiving") from e
