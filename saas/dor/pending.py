"""Streamed uploads waiting for their commit (issue 21).

A streamed `add-c` is signed over its head line only (`saas.core.signing.streamed_body_sha256`), so the uploader
can hash the content while it sends it. The node stores the content as it always does (a temp file, hashed on the
way, fsynced) but publishes nothing: the upload waits here until the uploader sends a signed commit naming the
SHA-256 of the content it sent (`DORService.commit_upload`; the head was signed with the upload, so the node hashes
the content once). Until then it is in no catalog, no search and no content path; it counts in its owner's quota
(`bytes_of`); each identity has at most `per_identity` of them, uploads still streaming included (`reserve`); it is
removed `lifetime` seconds after it arrived, at stop, and — its temp file being in the store's temp folder — by the
sweep at start-up after a crash.

Callers may rely on: `take` hands an upload to exactly one caller (the commit or the expiry, never both), and only
to the identity that sent it (anyone else is told it does not exist)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from saas.core.errors import DORError, LimitReachedError, NotFoundError
from saas.dor.schemas import AddCDataObjectParameters, PendingUpload

__all__ = ["Pending", "PendingUploads", "TooManyPendingError", "UnknownUploadError"]

logger = logging.getLogger(__name__)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


class UnknownUploadError(DORError, NotFoundError):
    """No pending upload of the caller has this ID (never received, committed, discarded or expired)."""


class TooManyPendingError(DORError, LimitReachedError):
    """The identity already has as many uploads waiting for their commit as the node allows (429)."""


@dataclass
class Pending:
    """A received upload: who sent it, what it claims, where its content waits and what the node received."""

    signer_iid: str
    params: AddCDataObjectParameters
    created: int  # the object's creation time (ms), fixed when the upload arrived
    task: str | None  # a job output's claim key (`saas.dor.claims.check`)
    temp: Path
    c_hash: str
    size: int
    pending_id: str = field(default_factory=lambda: secrets.token_hex(16))
    expires: int = 0  # ms since epoch
    timer: asyncio.TimerHandle | None = None

    def answer(self) -> PendingUpload:
        return PendingUpload(
            pending_id=self.pending_id,
            c_hash=self.c_hash,
            size=self.size,
            expires=self.expires,
        )


class PendingUploads:
    """The pending uploads of one DOR (used on the event loop only)."""

    def __init__(self, per_identity: int, lifetime: float):
        self.per_identity = per_identity
        self.lifetime = lifetime
        self._uploads: dict[str, Pending] = {}
        self._slots: Counter[str] = Counter()  # per signer: uploads streaming or pending
        self._removals: set[asyncio.Task[None]] = set()

    def reserve(self, iid: str) -> None:
        """Take one of `iid`'s slots for an upload about to stream; `TooManyPendingError` if none is free. Give it
        back with `release` if the upload fails; `add` keeps it until the upload is taken."""
        if self._slots[iid] >= self.per_identity:
            raise TooManyPendingError(
                f"{iid} already has {self.per_identity} uploads waiting for their commit on this node: commit them or "
                f"wait until they expire ({self.lifetime:g} s after they were sent)",
                {"iid": iid, "pending_limit": self.per_identity},
            )
        self._slots[iid] += 1

    def release(self, iid: str) -> None:
        self._slots[iid] -= 1
        if self._slots[iid] <= 0:
            del self._slots[iid]

    def bytes_of(self, owner_iid: str) -> int:
        """The content bytes waiting for commits of objects `owner_iid` would own (they count in the quota)."""
        return sum(u.size for u in self._uploads.values() if u.params.owner_iid == owner_iid)

    def add(self, upload: Pending) -> PendingUpload:
        """Keep a received upload (its signer's slot reserved) until it is taken or `lifetime` passes."""
        upload.expires = int((time.time() + self.lifetime) * 1000)
        upload.timer = asyncio.get_running_loop().call_later(self.lifetime, self._expire, upload.pending_id)
        self._uploads[upload.pending_id] = upload
        return upload.answer()

    def take(self, pending_id: str, iid: str) -> Pending:
        """The upload, no longer pending (the caller now owns its temp file); `UnknownUploadError` if `iid` has no
        pending upload `pending_id`."""
        upload = self._uploads.get(pending_id)
        if upload is None or upload.signer_iid != iid:
            raise UnknownUploadError(
                f"No pending upload {pending_id[:32]}: it was never received, or it was committed, discarded or it "
                "expired (upload again)",
                {"pending_id": pending_id[:32]},
            )
        del self._uploads[pending_id]
        if upload.timer is not None:
            upload.timer.cancel()
        self.release(iid)
        return upload

    def _expire(self, pending_id: str) -> None:
        upload = self._uploads.get(pending_id)
        if upload is None:
            return
        self.take(pending_id, upload.signer_iid)
        logger.info("pending upload %s of %s expired uncommitted: removed", pending_id, upload.signer_iid)
        task = asyncio.ensure_future(asyncio.to_thread(_remove, upload.temp))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def close(self) -> None:
        """Remove every pending upload (the node stops) and wait for removals under way."""
        for upload in list(self._uploads.values()):
            self.take(upload.pending_id, upload.signer_iid)
            await asyncio.to_thread(_remove, upload.temp)
        if self._removals:
            await asyncio.gather(*self._removals, return_exceptions=True)
