"""`saas.core.direct`: a `Sink` writes every byte in order and hashes it, past the page cache where it can (aligned
buffers of a large stream), through the cache where it cannot (the tail, odd or unaligned buffers), and gives the
file its flags back."""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from saas.core.direct import ALIGN, Sink, aligned_buffer

MiB = 1024 * 1024


def resident_pages(path: Path) -> int:
    """Pages of `path` in the page cache (util-linux `fincore`)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "PAGES", str(path)], capture_output=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[0])


def write_stream(path: Path, buffers: list[bytes], *, direct: bool, aligned: bool = True) -> tuple[Sink, list]:
    digests = [hashlib.sha256(), hashlib.sha256()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    try:
        with Sink(fd, *digests, direct=direct) as sink:
            for data in buffers:
                if aligned:
                    buffer = aligned_buffer(len(data) or ALIGN)
                    buffer[: len(data)] = data
                    sink(memoryview(buffer)[: len(data)])
                else:
                    shifted = bytearray(len(data) + 1)  # one byte off any boundary
                    shifted[1:] = data
                    sink(memoryview(shifted)[1:])
        assert fcntl.fcntl(fd, fcntl.F_GETFL) == flags  # O_DIRECT is not left on
    finally:
        os.close(fd)
    return sink, digests


def test_a_large_stream_goes_past_the_cache_and_its_tail_through_it(tmp_path: Path) -> None:
    buffers = [os.urandom(2 * MiB) for _ in range(3)] + [os.urandom(MiB + 123)]
    data = b"".join(buffers)
    path = tmp_path / "large.bin"
    sink, digests = write_stream(path, buffers, direct=True)
    assert resident_pages(path) <= 1  # only the tail's page went through the cache
    assert path.read_bytes() == data
    assert [d.hexdigest() for d in digests] == [hashlib.sha256(data).hexdigest()] * 2
    assert sink.direct_bytes == len(data) - 123  # all but the last partial page


def test_without_direct_everything_goes_through_the_cache(tmp_path: Path) -> None:
    buffers = [os.urandom(2 * MiB), os.urandom(4096)]
    path = tmp_path / "cached.bin"
    sink, _ = write_stream(path, buffers, direct=False)
    assert path.read_bytes() == b"".join(buffers) and sink.direct_bytes == 0
    assert resident_pages(path) == (2 * MiB + 4096) // 4096


@pytest.mark.parametrize("sizes", [[2 * MiB, 2 * MiB, 17], [ALIGN - 1], [0, ALIGN, 1]])
def test_buffers_direct_writing_cannot_take_are_written_through_the_cache(tmp_path: Path, sizes: list[int]) -> None:
    """An unaligned buffer is refused by the kernel (EINVAL, nothing written): the sink writes it through the cache
    and every byte still arrives once, in order."""
    buffers = [os.urandom(n) for n in sizes]
    path = tmp_path / "odd.bin"
    sink, digests = write_stream(path, buffers, direct=True, aligned=False)
    data = b"".join(buffers)
    assert path.read_bytes() == data
    assert digests[0].hexdigest() == hashlib.sha256(data).hexdigest()
    assert not sink.direct


def test_an_error_of_the_file_is_raised(tmp_path: Path) -> None:
    path = tmp_path / "readonly.bin"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDONLY)
    try:
        with Sink(fd, hashlib.sha256(), direct=True) as sink, pytest.raises(OSError):
            buffer = aligned_buffer(ALIGN)
            sink(memoryview(buffer))
    finally:
        os.close(fd)
