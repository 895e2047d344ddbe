"""A real small disk for the disk-full tests: a tmpfs of a few MiB mounted on a folder (the tests run as root, as CI
does). If it cannot be mounted the test fails with the reason (it never skips)."""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "small_disk"]


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on `path` (created) while the context lasts."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mount.returncode != 0:
        pytest.fail(f"cannot mount a {size} tmpfs on {path} for a disk-full test (needs root): {mount.stderr.strip()}")
    try:
        yield path
    finally:
        umount = subprocess.run(["umount", str(path)], capture_output=True, text=True)
        if umount.returncode != 0:  # something still holds a file there: detach it anyway, then say so
            subprocess.run(["umount", "-l", str(path)], check=False)
            pytest.fail(f"the tmpfs on {path} was still busy: {umount.stderr.strip()}")


def fill(folder: Path) -> Path:
    """Write a file in `folder` until its disk is full; returns the file (delete it to free the space)."""
    filler = folder / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    with open(filler, "ab", buffering=0) as f, contextlib.suppress(OSError):  # the last partial pages too
        while True:
            f.write(b"\0")
    return filler
