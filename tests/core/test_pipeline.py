"""`saas.core.pipeline`: every byte reaches the consumer once and in order, errors of either side surface, and
hashing and copying give the bytes' SHA-256."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from saas.core.pipeline import BUFFER_SIZE, WriteBehind, copy_hashed, hash_file, pump, read_full

SIZES = [0, 1, 1000, BUFFER_SIZE - 1, BUFFER_SIZE, BUFFER_SIZE + 1, 3 * BUFFER_SIZE + 12345]


@pytest.mark.parametrize("size", SIZES)
def test_pump_hands_every_byte_over_in_order(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    source = tmp_path / "source"
    source.write_bytes(data)
    received = bytearray()
    reported: list[int] = []
    with open(source, "rb") as f:
        total = pump(read_full(f), received.extend, reported.append)
    assert total == size
    assert bytes(received) == data
    assert reported == sorted(reported)
    assert reported[-1:] == ([size] if size else [])


def test_small_content_is_consumed_without_a_thread(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"small")
    threads: list[str] = []
    with open(source, "rb") as f:
        pump(read_full(f), lambda view: threads.append(threading.current_thread().name))
    assert threads == [threading.current_thread().name]


@pytest.mark.parametrize("size", SIZES)
def test_hash_and_copy_give_the_sha256_of_the_bytes(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    source = tmp_path / "source"
    source.write_bytes(data)
    with open(source, "rb") as f:
        assert hash_file(f, b"prefix\n") == (hashlib.sha256(b"prefix\n" + data).hexdigest(), size)
    digest, other = hashlib.sha256(), hashlib.sha256()
    target = tmp_path / "target"
    with open(source, "rb") as f, open(target, "wb") as out:
        assert copy_hashed(f, out.fileno(), digest, other) == size
    assert target.read_bytes() == data
    assert digest.hexdigest() == other.hexdigest() == hashlib.sha256(data).hexdigest()


def test_an_error_of_the_consumer_is_raised_and_stops_the_producer() -> None:
    fills = 0

    def fill(buffer: bytearray) -> int:
        nonlocal fills
        fills += 1
        return len(buffer)  # endless

    def consume(view: memoryview) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        pump(fill, consume)
    assert fills <= 4  # the producer stops at the first buffer it waits for


def test_an_error_of_the_producer_is_raised() -> None:
    calls = 0

    def fill(buffer: bytearray) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise ConnectionResetError("gone")
        return len(buffer)

    consumed: list[int] = []
    with pytest.raises(ConnectionResetError):
        pump(fill, lambda view: consumed.append(len(view)))
    assert len(consumed) <= 2
    assert all(n == BUFFER_SIZE for n in consumed)


def test_write_behind_syncs_while_copying_and_waits(tmp_path: Path) -> None:
    synced: list[int] = []

    class Counting(WriteBehind):
        def _sync(self) -> None:
            super()._sync()
            synced.append(1)

    data = os.urandom(5 * BUFFER_SIZE)
    source = tmp_path / "source"
    source.write_bytes(data)
    target = tmp_path / "target"
    with open(source, "rb") as f, open(target, "wb") as out:
        behind = Counting(out.fileno(), every=BUFFER_SIZE)
        copy_hashed(f, out.fileno(), hashlib.sha256(), behind=behind)
        behind.wait()
        assert synced  # some of it went to disk while the copy ran
        assert not any(t.name == "saas-write-behind" and t.is_alive() for t in threading.enumerate())
    assert target.read_bytes() == data
