"""Writing large files past the page cache (issue 21): a `Sink` takes consecutive buffers of a stream and writes
them to a file, hashing each one while it is written (`hashlib` and `os.write` release the GIL, so the two run at
once). A large stream is written with `O_DIRECT` where the file system allows it.

Why past the page cache: new page-cache pages are the slowest part of writing a large file on machines whose memory
is handed to them lazily (virtual machines fault every new page in from the host: 1 GiB written through the cache
took 2-3 s on ours, the same bytes written directly to the disk 0.8 s). Written directly, the bytes are also on the
device before the file gets its name, and a large transfer does not push everything else out of the cache.

Callers may rely on: every byte given is written, in order, at the file's position (the same bytes as a plain
`write`); a buffer that `O_DIRECT` cannot take (not aligned, the stream's tail, a file system without it) is
written through the cache instead, so nothing fails for want of alignment; the file's flags are restored on
`close`. Buffers from `aligned_buffer` whose length is a multiple of `ALIGN` go directly."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["ALIGN", "DIRECT_MIN", "Sink", "aligned_buffer"]

ALIGN = 4096  # what O_DIRECT asks of buffer addresses, lengths and file offsets (a page covers every block size)
DIRECT_MIN = 64 * 1024 * 1024  # streams smaller than this go through the cache (it is cheap and fast for them)


def aligned_buffer(size: int) -> mmap.mmap:
    """A writable buffer of `size` bytes at a page boundary (an anonymous mapping)."""
    return mmap.mmap(-1, size)


class Sink:
    """Writes the buffers it is called with to `fd` (from its current position), each hashed by `digests` while it
    is written. With `direct` (a stream of at least `DIRECT_MIN` bytes is expected), `O_DIRECT` is tried."""

    def __init__(self, fd: int, *digests: Any, direct: bool = False) -> None:
        self._fd = fd
        self._digests = digests
        self._flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        self.direct = False
        self.direct_bytes = 0  # bytes written past the cache
        if direct and hasattr(os, "O_DIRECT"):
            try:
                fcntl.fcntl(fd, fcntl.F_SETFL, self._flags | os.O_DIRECT)
                self.direct = True
            except OSError:  # EINVAL: this file system does not do O_DIRECT
                pass
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def __call__(self, view: memoryview) -> None:
        if not self._digests:
            self._write(view)
            return
        if self._pool is None:  # one thread writes, others hash: all but the last digest, which this one does
            self._pool = ThreadPoolExecutor(len(self._digests), thread_name_prefix="saas-sink")
        running = [self._pool.submit(self._write, view)]
        running += [self._pool.submit(digest.update, view) for digest in self._digests[:-1]]
        try:
            self._digests[-1].update(view)
        finally:
            for future in running:
                future.result()

    def _write(self, view: memoryview) -> None:
        odd = len(view) % ALIGN
        if self.direct and odd:  # the tail (or an odd buffer): its aligned part directly, the rest through the cache
            self._write(view[: len(view) - odd])
            self._buffered()
            view = view[len(view) - odd :]
        while view:
            try:
                n = os.write(self._fd, view)
            except OSError as e:
                if not (self.direct and e.errno == errno.EINVAL):
                    raise
                self._buffered()  # not aligned after all: nothing was written, write it through the cache
                continue
            if self.direct:
                self.direct_bytes += n
                if n % ALIGN:
                    self._buffered()
            view = view[n:]

    def _buffered(self) -> None:
        fcntl.fcntl(self._fd, fcntl.F_SETFL, self._flags)
        self.direct = False

    def close(self) -> None:
        """Stop the writing thread and give the file its flags back."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self.direct:
            self._buffered()
