"""Atomic file writes and JSON files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from saas.core.helpers import read_json_from_file, write_file_atomic, write_json_to_file


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture
def umask_077() -> Iterator[None]:
    """A restrictive umask, to show that the requested mode is set regardless of it."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def test_json_round_trip(tmp_path: Path) -> None:
    content = {"name": "Zoë", "list": [1, 2.5, None, True], "nested": {"k": "v"}}
    path = tmp_path / "file.json"
    write_json_to_file(content, path)
    assert read_json_from_file(path) == content
    assert read_json_from_file(str(path)) == content
    assert mode_of(path) == 0o644
    assert listing(tmp_path) == {"file.json"}


def test_json_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "file.json"
    write_json_to_file({"v": 1}, path)
    write_json_to_file([1, 2, 3], str(path), indent=0)
    assert read_json_from_file(path) == [1, 2, 3]
    assert listing(tmp_path) == {"file.json"}


def test_write_file_atomic_default_mode_is_private(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    write_file_atomic(path, b"data")
    assert path.read_bytes() == b"data"
    assert mode_of(path) == 0o600


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o644, 0o400])
@pytest.mark.usefixtures("umask_077")
def test_write_file_atomic_sets_the_requested_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "file"
    write_file_atomic(path, b"data", mode=mode)
    assert mode_of(path) == mode
    assert listing(tmp_path) == {"file"}


def test_write_file_atomic_replaces_content_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"old content that is longer")
    path.chmod(0o666)
    write_file_atomic(str(path), b"new")
    assert path.read_bytes() == b"new"
    assert mode_of(path) == 0o600
    assert listing(tmp_path) == {"file"}


def test_write_file_atomic_many_times_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "file"
    for i in range(50):
        write_file_atomic(path, str(i).encode())
    assert path.read_bytes() == b"49"
    assert listing(tmp_path) == {"file"}


@pytest.mark.parametrize("bad_data", ["a str, not bytes", 12345, None, {"a": 1}])
def test_failed_write_keeps_old_content_and_leaves_no_temp_file(tmp_path: Path, bad_data: object) -> None:
    path = tmp_path / "file"
    write_file_atomic(path, b"old content", mode=0o644)
    with pytest.raises(TypeError):
        write_file_atomic(path, bad_data, mode=0o600)  # type: ignore[arg-type]
    assert path.read_bytes() == b"old content"
    assert mode_of(path) == 0o644
    assert listing(tmp_path) == {"file"}


def test_failed_first_write_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_file_atomic(tmp_path / "file", "not bytes")  # type: ignore[arg-type]
    assert listing(tmp_path) == set()


def test_write_into_missing_folder_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_file_atomic(tmp_path / "missing" / "file", b"data")
    assert listing(tmp_path) == set()
