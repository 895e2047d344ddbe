"""Content files: `<root>/content/<c_hash[:2]>/<c_hash>`, written via temp files in `<root>/tmp`.

A content file appears only complete (streamed to a temp file, fsynced, renamed). Identical content is stored once.
The caller (`DORService`) keeps commits and removals apart (`ContentGuard`) and decides when a file is unused;
`sweep` removes temp files and unreferenced content left by a crash. All methods block: call them in a thread."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from saas.core.pipeline import WriteBehind, copy_hashed, read_full, write_all

__all__ = ["ContentStore", "open_regular"]

SMALL_FILE = 1024 * 1024  # read whole (and not written again when the content is already stored)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading if it is a regular file, not through a symbolic link; else `OSError`."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block the open
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class ContentStore:
    def __init__(self, root: Path):
        self.content_dir = root / "content"
        self.tmp_dir = root / "tmp"

    def open(self) -> None:
        self.content_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, c_hash: str) -> Path:
        return self.content_dir / c_hash[:2] / c_hash

    def exists(self, c_hash: str) -> bool:
        return self.path(c_hash).is_file()

    def new_temp(self, size: int = 0) -> tuple[Path, BinaryIO]:
        """A new temp file for `size` bytes; `OSError` ENOSPC if the disk has less free space than that."""
        if size > 0 and shutil.disk_usage(self.tmp_dir).free < size:
            raise OSError(errno.ENOSPC, "not enough free space")
        path = self.tmp_dir / f"upload-{secrets.token_hex(12)}"
        return path, open(path, "xb")

    def commit(self, temp: Path, c_hash: str) -> bool:
        """Move a complete temp file into place; False if identical content was already there (temp removed)."""
        final = self.path(c_hash)
        if final.is_file():
            temp.unlink(missing_ok=True)
            return False
        try:
            final.parent.mkdir(exist_ok=True)  # takes a block: on a full disk the temp file goes
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        return True

    def ingest(self, source: Path) -> tuple[str, int]:
        """Copy a local regular file in (hashed while read, fsynced, then put in place); returns (c_hash, size). A
        small file whose content is already stored is not written again. A symbolic link or anything but a regular
        file is refused (`OSError`), checked on the opened file itself, so it cannot be swapped in meanwhile."""
        with open_regular(source) as src:
            fd = src.fileno()
            first = bytearray(SMALL_FILE)
            data = bytes(memoryview(first)[: read_full(fd)(first)])
            if len(data) < SMALL_FILE:
                c_hash = hashlib.sha256(data).hexdigest()
                if not self.exists(c_hash):
                    self.write_bytes(data, c_hash)
                return c_hash, len(data)
            temp, f = self.new_temp()
            digest = hashlib.sha256(data)
            try:
                with f:
                    write_all(f.fileno(), memoryview(data))
                    behind = WriteBehind(f.fileno())
                    try:  # read, hashed and written overlapped, and going to disk meanwhile
                        size = len(data) + copy_hashed(fd, f.fileno(), digest, behind=behind)
                    finally:
                        behind.wait()
                    os.fsync(f.fileno())
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
        c_hash = digest.hexdigest()
        self.commit(temp, c_hash)
        return c_hash, size

    def write_bytes(self, data: bytes, c_hash: str) -> bool:
        """Store small content given in full (e.g. a GPP)."""
        temp, f = self.new_temp()
        try:
            with f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return self.commit(temp, c_hash)

    def remove(self, c_hash: str) -> None:
        self.path(c_hash).unlink(missing_ok=True)

    def sweep(self, referenced: Iterable[str]) -> tuple[int, int]:
        """Remove leftover temp files and content no record uses; returns (temps, orphans) removed."""
        temps = 0
        for path in self.tmp_dir.iterdir():  # unfinished uploads (files) and GPP clones (folders)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            temps += 1
        keep = set(referenced)
        orphans = 0
        for folder in self.content_dir.iterdir():
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name not in keep:
                    path.unlink(missing_ok=True)
                    orphans += 1
        return temps, orphans
