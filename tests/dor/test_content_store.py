"""`saas.dor.store.ContentStore.ingest`: a local file copied in (hashed while read, fsynced, put in place) in one
call; small content already stored is not written again; large content streams through a temp file. Real files in
`tmp_path`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from saas.dor.store import SMALL_FILE, ContentStore


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    s = ContentStore(tmp_path / "dor")
    s.open()
    return s


def source(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def content_files(store: ContentStore) -> list[Path]:
    return sorted(p for p in store.content_dir.rglob("*") if p.is_file())


def temp_files(store: ContentStore) -> list[Path]:
    return sorted(store.tmp_dir.iterdir())


@pytest.mark.parametrize(
    "size",
    [0, 1, 1000, SMALL_FILE - 1, SMALL_FILE, SMALL_FILE + 1, 3 * SMALL_FILE + 7],
    ids=["empty", "one-byte", "small", "just-small", "exactly-small-file", "just-large", "large"],
)
def test_ingest_stores_the_bytes_under_their_hash(store: ContentStore, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = source(tmp_path, "file", data)
    c_hash, stored_size = store.ingest(path)
    assert c_hash == hashlib.sha256(data).hexdigest()
    assert stored_size == size
    assert store.exists(c_hash)
    assert store.path(c_hash) == store.content_dir / c_hash[:2] / c_hash
    assert store.path(c_hash).read_bytes() == data
    assert content_files(store) == [store.path(c_hash)]
    assert temp_files(store) == []
    assert path.read_bytes() == data  # the source is copied, not moved


def test_small_content_already_stored_is_not_written_again(store: ContentStore, tmp_path: Path) -> None:
    data = os.urandom(SMALL_FILE - 1)
    c_hash, _ = store.ingest(source(tmp_path, "a", data))
    stored = store.path(c_hash)
    # Make the first write recognisable: a later write (a new file put in place) would change inode or mtime.
    os.utime(stored, ns=(1_000_000_000, 1_000_000_000))
    before = os.stat(stored)
    again, size = store.ingest(source(tmp_path, "b", data))  # same content, another file
    after = os.stat(stored)
    assert (again, size) == (c_hash, len(data))
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert content_files(store) == [stored]
    assert temp_files(store) == []


def test_large_content_already_stored_stays_one_file(store: ContentStore, tmp_path: Path) -> None:
    data = os.urandom(SMALL_FILE + 1)
    c_hash, _ = store.ingest(source(tmp_path, "a", data))
    again, size = store.ingest(source(tmp_path, "b", data))
    assert (again, size) == (c_hash, SMALL_FILE + 1)
    assert content_files(store) == [store.path(c_hash)]
    assert store.path(c_hash).read_bytes() == data
    assert temp_files(store) == []


def test_different_content_is_stored_apart(store: ContentStore, tmp_path: Path) -> None:
    small_a, small_b = b"alpha", b"beta"
    large = os.urandom(SMALL_FILE + 100)
    hashes = [
        store.ingest(source(tmp_path, name, data))[0] for name, data in [("a", small_a), ("b", small_b), ("c", large)]
    ]
    assert len(set(hashes)) == 3
    for c_hash, data in zip(hashes, [small_a, small_b, large], strict=True):
        assert store.path(c_hash).read_bytes() == data
    assert len(content_files(store)) == 3
    assert temp_files(store) == []


def test_ingest_of_a_missing_file_leaves_nothing(store: ContentStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.ingest(tmp_path / "does-not-exist")
    assert content_files(store) == []
    assert temp_files(store) == []


def test_ingest_of_an_unreadable_source_leaves_nothing(store: ContentStore, tmp_path: Path) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    with pytest.raises(OSError, match="not a regular file"):
        store.ingest(folder)
    assert content_files(store) == []
    assert temp_files(store) == []


def test_ingest_refuses_a_symbolic_link_and_a_fifo(store: ContentStore, tmp_path: Path) -> None:
    """An adapter's output could be a link to the node's own files, or a FIFO that would block the node."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"the node's own file")
    link = tmp_path / "c"
    link.symlink_to(secret)
    with pytest.raises(OSError):
        store.ingest(link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        store.ingest(fifo)  # returns at once instead of waiting for a writer
    assert content_files(store) == []
    assert temp_files(store) == []
