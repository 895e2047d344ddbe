"""Streaming a stored file as an HTTP response, with single-range requests (RFC 9110 §14).

The caller hands over a file it already opened, so a concurrent delete of the path cannot break a download that
has begun. `ETag` is the content hash, so `If-Range` works for resuming. Several ranges, or a malformed `Range`,
get the whole content (a server may ignore `Range`); a range that starts past the end is a 416 envelope."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import BinaryIO

from starlette.responses import StreamingResponse

from saas.core.errors import InvalidInputError

__all__ = ["CHUNK_SIZE", "RangeNotSatisfiableError", "content_response", "parse_range"]

CHUNK_SIZE = 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiableError(InvalidInputError):
    """The requested range starts past the end of the content (HTTP 416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """`(start, end)` (end inclusive) of a single byte range, or None to send everything."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":  # suffix range: the last N bytes
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiableError("Requested range is empty", {"size": size})
        return max(size - length, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiableError(f"Requested range starts past the end ({size} bytes)", {"size": size})
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


def content_response(
    f: BinaryIO, size: int, etag: str, range_header: str | None, if_range: str | None, headers: dict[str, str]
) -> StreamingResponse:
    """A 200 with the whole file or a 206 with one range; takes ownership of `f` (closes it)."""
    quoted = f'"{etag}"'
    try:
        wanted = parse_range(range_header, size) if if_range in (None, quoted) else None
    except RangeNotSatisfiableError:
        f.close()
        raise
    common = {**headers, "accept-ranges": "bytes", "etag": quoted}
    if wanted is None:
        return StreamingResponse(
            _stream(f, 0, size), media_type="application/octet-stream", headers={**common, "content-length": str(size)}
        )
    start, end = wanted
    return StreamingResponse(
        _stream(f, start, end - start + 1),
        status_code=206,
        media_type="application/octet-stream",
        headers={**common, "content-length": str(end - start + 1), "content-range": f"bytes {start}-{end}/{size}"},
    )
