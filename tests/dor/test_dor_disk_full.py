"""A full disk (issue 15 item 4, issue 14 item 7): the DOR's datastore is a real 4 MiB tmpfs. ENOSPC during an
upload or add-gpp answers 507 with a clear reason, removes the temp file and leaves nothing partial; once space is
freed, later requests (also other users') work. SQLITE_FULL is a `StorageFullError` too."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from disk_support import fill, small_disk

from saas.core.errors import InsufficientStorageError, RemoteError, StorageFullError
from saas.core.signing import sign_request
from saas.sqlite import Database


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", "4m") as path:
        yield path


@pytest.fixture
def node(disk: Path, node_factory: Callable[..., Any]) -> Any:
    """A storage node whose datastore is the small disk (stopped before the disk is unmounted)."""
    return node_factory(datastore=disk / "datastore", node_type="storage")


def assert_storage_full(error: pytest.ExceptionInfo) -> None:
    assert isinstance(error.value, RemoteError) and error.value.status == 507
    assert isinstance(error.value, InsufficientStorageError)
    assert error.value.reason.startswith("The node's storage is full"), error.value.reason
    assert error.value.details["error"] in ("ENOSPC", "SQLITE_FULL")  # the content, or the replay cache first
    assert "/" not in error.value.reason  # no path of the node


def test_upload_larger_than_the_free_space_is_507(
    node: Any, users: Any, add: Callable, files: Callable, catalog: Callable
) -> None:
    with pytest.raises(InsufficientStorageError) as error:  # size announced: refused before the content is read
        add(b"x" * (8 * 1024 * 1024))
    assert_storage_full(error)
    assert catalog(node) == set()
    assert files(node) == {"content": [], "tmp": []}
    assert add(b"small").size == 5  # the node is fine


def test_full_disk_mid_upload_is_507_and_later_uploads_work_once_space_is_freed(
    node: Any, users: Any, add: Callable, make_body: Callable, files: Callable, catalog: Callable, disk: Path
) -> None:
    kept = add(b"kept")
    filler = fill(disk)

    # Streamed without Content-Length, so the disk fills while the content is written.
    body = make_body(users.alice.iid, b"z" * (1024 * 1024))
    headers = sign_request(users.alice, "POST", "/api/v1/dor/add-c", node.node.iid, hashlib.sha256(body).hexdigest())

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    with httpx.Client(base_url=node.url, trust_env=False, timeout=30) as client:
        response = client.post("/api/v1/dor/add-c", content=chunks(), headers=headers)
    assert response.status_code == 507, response.text
    # the upload, or the replay cache of signed requests written first: either way 507 and nothing stored
    assert response.json()["reason"].startswith("The node's storage is full: "), response.text
    assert catalog(node) == {kept.obj_id}
    assert len(files(node)["content"]) == 1 and files(node)["tmp"] == []

    with pytest.raises(InsufficientStorageError) as error:  # through the SDK, with the size announced
        add(b"y" * 100_000, owner=users.bob)
    assert_storage_full(error)

    filler.unlink()
    other = add(b"y" * 100_000, owner=users.bob)
    again = add(b"z" * (1024 * 1024))
    assert catalog(node) == {kept.obj_id, other.obj_id, again.obj_id}
    assert files(node)["tmp"] == []


def test_add_gpp_on_a_full_disk_is_507(node: Any, users: Any, dor_as: Callable, git_repo: Callable, disk: Path) -> None:
    repo = git_repo("adapter")  # in tmp_path, not on the small disk: the clone into the DOR's tmp folder fails
    commit = repo.commit(
        {
            "proc/descriptor.json": '{"name": "p", "input": [], "output": [], "configurations": ["default"]}',
            "proc/padding.bin": bytes(range(256)) * 4096,
        }
    )
    filler = fill(disk)
    with pytest.raises(InsufficientStorageError) as error:
        dor_as(users.alice).add_gpp_data_object(str(repo.path), commit, "proc", "default", users.alice.identity)
    assert isinstance(error.value, RemoteError) and error.value.status == 507
    assert error.value.reason.startswith("The node's storage is full"), error.value.reason
    tmp = node.node.config.datastore / "dor" / "tmp"
    assert list(tmp.iterdir()) == []

    filler.unlink()
    gpp = dor_as(users.alice).add_gpp_data_object(str(repo.path), commit, "proc", "default", users.alice.identity)
    assert gpp.gpp.commit_id == commit


def test_sqlite_full_is_storage_full(tmp_path: Path) -> None:
    """A database that cannot grow (here: SQLite's own page limit, which answers SQLITE_FULL like a full disk)
    answers `StorageFullError`, and the request is rolled back."""

    async def scenario() -> None:
        db = Database(tmp_path / "small.sqlite", "CREATE TABLE IF NOT EXISTS t (x BLOB);")
        db.open()
        try:
            pages = db.call(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
            db.call(lambda c: c.execute(f"PRAGMA max_page_count = {pages + 2}"))
            with pytest.raises(StorageFullError) as error:
                await db.run(lambda c: c.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,)))
            assert error.value.details == {"error": "SQLITE_FULL"}
            assert await db.run(lambda c: c.execute("SELECT COUNT(*) FROM t").fetchone()[0]) == 0
        finally:
            db.close()

    asyncio.run(scenario())


def test_catalog_write_on_a_full_disk_is_507(
    node: Any, users: Any, add: Callable, dor_as: Callable, send: Callable, disk: Path
) -> None:
    """A request whose catalog write cannot grow the database (SQLITE_FULL on the real full disk) answers 507;
    once space is freed it works."""
    obj = add(b"tagged")
    tags = [{"key": f"k{i}", "value": "v" * 4000} for i in range(50)]
    filler = fill(disk)
    response = send(
        users.alice, "PUT", f"/dor/{obj.obj_id}/tags", json.dumps(tags).encode(), {"content-type": "application/json"}
    )
    assert response.status_code == 507, response.text
    assert response.json()["reason"].startswith("The node's storage is full: the node's database")
    assert response.json()["details"] == {"error": "SQLITE_FULL"}
    filler.unlink()
    assert dor_as(users.alice).get_meta(obj.obj_id).tags == {}
    response = send(
        users.alice, "PUT", f"/dor/{obj.obj_id}/tags", json.dumps(tags).encode(), {"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert len(dor_as(users.alice).get_meta(obj.obj_id).tags) == 50
