"""Moving bulk bytes with the work on them overlapped (issue 21): the calling thread fills a buffer (from a socket
or a file) while a second thread consumes the previous ones (hashes them, writes them). `hashlib`, file and socket
calls release the GIL, so both run at once. Memory stays constant: at most `depth + 2` buffers.

Callers may rely on: `consume` sees every byte `fill` produced, in order, one buffer at a time, in one thread; an
error of either side is raised (after the other side stopped); content smaller than one buffer is consumed in the
calling thread (no thread is started)."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

__all__ = ["BUFFER_SIZE", "WriteBehind", "copy_hashed", "hash_file", "pump", "read_full", "write_all"]

BUFFER_SIZE = 2 * 1024 * 1024
DEPTH = 2  # filled buffers waiting for the consumer


def pump(
    fill: Callable[[bytearray], int],
    consume: Callable[[memoryview], None],
    on_filled: Callable[[int], None] | None = None,
    buffer_size: int = BUFFER_SIZE,
    new_buffer: Callable[[int], Any] = bytearray,
) -> int:
    """Call `fill(buffer)` (bytes placed at its start; fewer than its length means the end) until the end, and
    `consume(view)` on each filled part in a second thread; `on_filled(total)` after each fill. Returns the total.
    Buffers are made by `new_buffer(buffer_size)` (e.g. `saas.core.direct.aligned_buffer`)."""
    buffer = new_buffer(buffer_size)
    filled = fill(buffer)
    total = filled
    if filled < buffer_size:  # small: no thread
        if filled:
            consume(memoryview(buffer)[:filled])
            if on_filled is not None:
                on_filled(total)
        return total

    def run(buffer: bytearray, size: int) -> bytearray:
        consume(memoryview(buffer)[:size])
        return buffer

    pending: collections.deque[Future[bytearray]] = collections.deque()
    with ThreadPoolExecutor(1, thread_name_prefix="saas-pipeline") as worker:
        try:
            while filled:
                pending.append(worker.submit(run, buffer, filled))
                if on_filled is not None:
                    on_filled(total)
                if filled < buffer_size:
                    break
                buffer = pending.popleft().result() if len(pending) > DEPTH else new_buffer(buffer_size)
                filled = fill(buffer)
                total += filled
            while pending:
                pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
    return total


def read_full(f: BinaryIO | int) -> Callable[[bytearray], int]:
    """A `fill` reading a file object or descriptor (short reads are retried until the buffer is full or the end)."""
    fd = f if isinstance(f, int) else f.fileno()

    def fill(buffer: bytearray) -> int:
        view = memoryview(buffer)
        filled = 0
        while filled < len(buffer):
            n = os.readv(fd, [view[filled:]])
            if not n:
                break
            filled += n
        return filled

    return fill


def write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view) :]


def hash_file(f: BinaryIO | int, prefix: bytes = b"") -> tuple[str, int]:
    """(SHA-256 hex of `prefix` and the rest of the file from its current position, bytes of the file read)."""
    digest = hashlib.sha256(prefix)
    size = pump(read_full(f), digest.update)
    return digest.hexdigest(), size


def copy_hashed(source: BinaryIO | int, target_fd: int, *digests: Any, behind: WriteBehind | None = None) -> int:
    """Copy the rest of `source` to `target_fd`, each buffer hashed by `digests` first; returns the bytes copied.
    With `behind`, the copy starts going to disk while it is made (the caller waits for it and fsyncs)."""

    def consume(view: memoryview) -> None:
        for digest in digests:
            digest.update(view)
        write_all(target_fd, view)
        if behind is not None:
            behind.wrote(len(view))

    return pump(read_full(source), consume)


class WriteBehind:
    """Starts writing a file's data to disk while more is still being written (a thread calls `fdatasync` once
    `every` new bytes were written and no earlier call is still running), so the `fsync` that makes the file durable
    at the end has little left to do: the disk works while the bytes still arrive. Call `wrote` after each write
    and `wait` before the final `fsync` (or before closing the file)."""

    def __init__(self, fd: int, every: int = 64 * 1024 * 1024):
        self._fd = fd
        self._every = every
        self._pending = 0
        self._thread: threading.Thread | None = None

    def wrote(self, size: int) -> None:
        self._pending += size
        if self._pending >= self._every and (self._thread is None or not self._thread.is_alive()):
            self._pending = 0
            self._thread = threading.Thread(target=self._sync, name="saas-write-behind", daemon=True)
            self._thread.start()

    def _sync(self) -> None:
        with contextlib.suppress(OSError):  # the final fsync reports what matters
            os.fdatasync(self._fd)

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
