"""Receiving an upload's content (`POST /dor/add-c`): streamed to a new temp file of the content store while it is
hashed — its SHA-256 (the c_hash) and, for an upload signed over its whole body, the body's (head line included) —
within the node's size limit and the owner's storage quota, then fsynced.

Callers may rely on: the temp file returned is complete and durable; on any error (too large, over the quota, a
full disk as `StorageFullError`, a cut-off stream) it is removed before the error is raised. Whether the content
becomes an object (and when) is the caller's decision (`DORService`)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from saas.core.errors import StorageFullError, TooLargeError
from saas.core.pipeline import WriteBehind
from saas.dor import quota
from saas.dor.store import ContentStore
from saas.sqlite import Database

__all__ = ["WRITE_BATCH", "Limits", "receive"]

WRITE_BATCH = 4 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Where content goes and what bounds it: the store, the catalog (for usage), quotas, the size limit."""

    store: ContentStore
    db: Database
    quotas: quota.Quotas
    max_object_size: int | None


def _hash(digest: Any, chunks: list[bytes]) -> None:
    for chunk in chunks:
        digest.update(chunk)


def _write(f: BinaryIO, chunks: list[bytes], digest: Any, behind: WriteBehind) -> None:
    for chunk in chunks:
        digest.update(chunk)
        f.write(chunk)
    f.flush()
    behind.wrote(sum(len(c) for c in chunks))


async def _store(
    f: BinaryIO, chunks: list[bytes], body_hash: Any | None, content_hash: Any, behind: WriteBehind
) -> None:
    """Hash a batch for the content's hash while writing it (and starting to put it on disk: `WriteBehind`), and
    for the body's hash, if wanted, in a second thread at once (hashlib releases the GIL)."""
    work = [asyncio.to_thread(_write, f, chunks, content_hash, behind)]
    if body_hash is not None:
        work.append(asyncio.to_thread(_hash, body_hash, chunks))
    await asyncio.gather(*work)


def _finish(f: BinaryIO, behind: WriteBehind) -> None:
    f.flush()
    behind.wait()
    os.fsync(f.fileno())
    f.close()


async def receive(
    limits: Limits,
    owner_iid: str,
    head: bytes | None,
    first: bytes,
    chunks: AsyncIterator[bytes],
    size_hint: int | None,
    reserved: int = 0,
) -> tuple[Path, str | None, str, int]:
    """Stream an upload's content (`first`, then `chunks`) to a new temp file while hashing it; (temp file, SHA-256
    of `head` and the content (None without a `head`: nobody signed the whole body), c_hash, size). `reserved` more
    bytes count as the owner's (pending uploads). With `size_hint` (the size announced), content that cannot fit
    the quota or the disk is refused before any is read."""
    body_hash = hashlib.sha256(head) if head is not None else None
    content_hash = hashlib.sha256()
    limit = limits.quotas.limit(owner_iid)
    # The owner's usage is read while the temp file is opened (two hops at once, not one after the other).
    usage = limits.db.submit(quota.used, owner_iid) if limit is not None else None
    try:
        temp, f = await asyncio.to_thread(limits.store.new_temp, size_hint or 0)
    except OSError as e:
        full = StorageFullError.from_error(e, "the upload")
        if full is None:
            raise
        raise full from None
    size = 0
    writing: asyncio.Future[None] | None = None
    behind = WriteBehind(f.fileno())
    try:
        room = None
        if usage is not None and limit is not None:  # refused before any content is read
            used, _ = await usage
            limits.quotas.check(owner_iid, used + reserved, size_hint or 0)
            room = limit - used - reserved
        # One batch is hashed and written in worker threads while the next one is received (chunks are kept as
        # they came: joining them would copy every byte once more).
        batch, batched = [first], len(first)
        size = len(first)
        async for chunk in chunks:
            size += len(chunk)
            if limits.max_object_size is not None and size > limits.max_object_size:
                raise TooLargeError(
                    f"Content is larger than this node's limit of {limits.max_object_size} bytes",
                    {"limit": limits.max_object_size},
                )
            if room is not None and size > room:  # asked again (others may have been deleted meanwhile)
                used, _ = await limits.db.run(quota.used, owner_iid)
                limits.quotas.check(owner_iid, used + reserved, size)  # or QuotaExceededError
                room = limit - used - reserved if limit is not None else None
            batch.append(chunk)
            batched += len(chunk)
            if batched >= WRITE_BATCH:
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(_store(f, batch, body_hash, content_hash, behind))
                batch, batched = [], 0
        if writing is not None:
            await writing
        await _store(f, batch, body_hash, content_hash, behind)
        await asyncio.to_thread(_finish, f, behind)
    except BaseException as e:
        if writing is not None:  # a worker thread may still be writing to f: let it finish first
            await asyncio.gather(writing, return_exceptions=True)
        await asyncio.to_thread(behind.wait)
        with contextlib.suppress(OSError):  # closing flushes: on a full disk that fails too
            f.close()
        await asyncio.to_thread(temp.unlink, True)
        full = StorageFullError.from_error(e, "the upload")
        if full is not None:
            raise full from None
        raise
    return temp, body_hash.hexdigest() if body_hash is not None else None, content_hash.hexdigest(), size
