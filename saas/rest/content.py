"""Sending a stored file as an HTTP response, with single-range requests (RFC 9110 §14).

The caller hands over a file it already opened, so a concurrent delete of the path cannot break a download that
has begun. Where the server offers the ASGI zero-copy extension (`saas.rest.sendfile`) the kernel moves the
bytes; elsewhere they stream in chunks read by a worker thread. `ETag` is the content hash, so `If-Range` works for
resuming. Several ranges, or another unit than bytes, get the whole content (a server may ignore `Range`); a
malformed byte range, or one that starts past the end, is a 416 envelope with the reason. Numbers are never parsed
beyond 18 digits (more than any size)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import BinaryIO

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from saas.core.errors import InvalidInputError
from saas.rest.sendfile import ZEROCOPY

__all__ = ["CHUNK_SIZE", "ContentResponse", "RangeNotSatisfiableError", "content_response", "parse_range"]

CHUNK_SIZE = 1024 * 1024
_SPEC = re.compile(r"^\s*(\d*)-(\d*)\s*$")
_DIGITS = 18  # a longer number is larger than any content (and is not parsed: int() of 5,000 digits raises)
_FORM = "expected bytes=<first>-<last>, bytes=<first>- or bytes=-<length>"


class RangeNotSatisfiableError(InvalidInputError):
    """The requested range starts past the end of the content (HTTP 416)."""


def _number(digits: str) -> int:
    return int(digits) if len(digits) <= _DIGITS else 10**_DIGITS


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """`(start, end)` (end inclusive) of a single byte range, or None to send everything (no `Range`, another unit,
    several ranges). Raises `RangeNotSatisfiableError` for a malformed or unsatisfiable byte range."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _SPEC.match(spec)
    if not match or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiableError(f"Invalid Range header: {_FORM}", {"size": size})
    first, last = match.groups()
    if first == "":  # suffix range: the last N bytes
        length = _number(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiableError("Requested range is empty", {"size": size})
        return max(size - length, 0), size - 1
    start = _number(first)
    if last and _number(last) < start:
        raise RangeNotSatisfiableError(
            f"Invalid Range header: the last byte is before the first ({_FORM})", {"size": size}
        )
    if start >= size:
        raise RangeNotSatisfiableError(f"Requested range starts past the end ({size} bytes)", {"size": size})
    end = min(_number(last), size - 1) if last else size - 1
    return start, end


async def _stream(f: BinaryIO, start: int, length: int) -> AsyncIterator[bytes]:
    try:
        await asyncio.to_thread(f.seek, start)
        remaining = length
        while remaining > 0:
            chunk = await asyncio.to_thread(f.read, min(CHUNK_SIZE, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        f.close()


class ContentResponse(Response):
    """`length` bytes from `start` of an open file (closed once sent, or when sending fails)."""

    def __init__(self, f: BinaryIO, start: int, length: int, status_code: int, headers: dict[str, str]):
        super().__init__(None, status_code, {**headers, "content-length": str(length)}, "application/octet-stream")
        self._file = f
        self._start = start
        self._length = length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if ZEROCOPY not in scope.get("extensions", {}):
            streaming = StreamingResponse(
                _stream(self._file, self._start, self._length), self.status_code, media_type=self.media_type
            )
            streaming.raw_headers = self.raw_headers
            await streaming(scope, receive, send)
            return
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            message = {"type": ZEROCOPY, "file": self._file, "offset": self._start, "count": self._length}
            await send({**message, "more_body": False})
        finally:
            self._file.close()


def content_response(
    f: BinaryIO, size: int, etag: str, range_header: str | None, if_range: str | None, headers: dict[str, str]
) -> ContentResponse:
    """A 200 with the whole file or a 206 with one range; takes ownership of `f` (closes it)."""
    quoted = f'"{etag}"'
    try:
        wanted = parse_range(range_header, size) if if_range in (None, quoted) else None
    except RangeNotSatisfiableError:
        f.close()
        raise
    common = {**headers, "accept-ranges": "bytes", "etag": quoted}
    if wanted is None:
        return ContentResponse(f, 0, size, 200, common)
    start, end = wanted
    return ContentResponse(f, start, end - start + 1, 206, {**common, "content-range": f"bytes {start}-{end}/{size}"})
