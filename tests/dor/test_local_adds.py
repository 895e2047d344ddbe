"""`DORService.add_file` and `DORService.local_adds()` (`LocalAdds.put` / `LocalAdds.record`) on a real running node:
content put in one step and recorded in another, idempotent records, and content put but never recorded removed
when the block ends unless another object uses it. Coroutines run on the node's own loop (`node.call`)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from saas.core.errors import InvalidInputError
from saas.dor.schemas import AddCDataObjectParameters, CDataObject
from saas.dor.service import DORService
from tests.waiting import until

CREATED = 1_700_000_000_000


def params(owner_iid: str, **kwargs: Any) -> AddCDataObjectParameters:
    settings: dict[str, Any] = {"owner_iid": owner_iid, "data_type": "Text", "data_format": "txt"}
    settings.update(kwargs)
    return AddCDataObjectParameters(**settings)


def dor_of(node: Any) -> DORService:
    return node.node.dor


def records(node: Any) -> list[tuple[str, str]]:
    """(obj_id, c_hash) of every record in the node's catalog, read directly."""
    rows = dor_of(node).db.call(lambda c: c.execute("SELECT obj_id, c_hash FROM objects ORDER BY obj_id").fetchall())
    return [(r[0], r[1]) for r in rows]


class Unrecorded(Exception):
    pass


def test_add_file_twice_gives_one_object(
    node: Any, write_file: Callable[..., Path], files: Callable[[Any], dict[str, list[Path]]]
) -> None:
    dor, owner = dor_of(node), node.node.iid
    data = os.urandom(5000)
    path = write_file(data)
    first: CDataObject = node.call(dor.add_file(owner, params(owner), path, CREATED))
    second: CDataObject = node.call(dor.add_file(owner, params(owner), path, CREATED))
    c_hash = hashlib.sha256(data).hexdigest()
    assert first.obj_id == second.obj_id
    assert first.c_hash == second.c_hash == c_hash
    assert second.size == len(data)
    assert second.created.timestamp == CREATED
    assert second.created.creators_iid == [owner]
    assert records(node) == [(first.obj_id, c_hash)]
    stored = files(node)
    assert stored["content"] == [dor.store.path(c_hash)]
    assert stored["tmp"] == []
    assert dor.store.path(c_hash).read_bytes() == data


def test_add_file_same_content_other_time_shares_the_content(
    node: Any, write_file: Callable[..., Path], files: Callable[[Any], dict[str, list[Path]]]
) -> None:
    dor, owner = dor_of(node), node.node.iid
    data = os.urandom(1024 * 1024 + 10)  # large: streamed through a temp file
    a = node.call(dor.add_file(owner, params(owner), write_file(data), CREATED))
    b = node.call(dor.add_file(owner, params(owner), write_file(data), CREATED + 1))
    assert a.obj_id != b.obj_id
    assert a.c_hash == b.c_hash
    assert sorted(records(node)) == sorted([(a.obj_id, a.c_hash), (b.obj_id, b.c_hash)])
    assert files(node) == {"content": [dor.store.path(a.c_hash)], "tmp": []}


def test_add_file_with_an_unknown_owner_stores_nothing(
    node: Any, write_file: Callable[..., Path], files: Callable[[Any], dict[str, list[Path]]]
) -> None:
    dor = dor_of(node)
    unknown = "f" * 64
    with pytest.raises(InvalidInputError):
        node.call(dor.add_file(node.node.iid, params(unknown), write_file(b"nobody's"), CREATED))
    assert records(node) == []
    assert files(node) == {"content": [], "tmp": []}


def test_put_and_record_in_two_steps(
    node: Any, write_file: Callable[..., Path], files: Callable[[Any], dict[str, list[Path]]]
) -> None:
    dor, owner = dor_of(node), node.node.iid
    data = b"two steps"
    path = write_file(data)

    async def main() -> tuple[CDataObject, CDataObject, set[str]]:
        async with dor.local_adds() as adds:
            c_hash, size = await asyncio.to_thread(adds.put, path)
            assert adds.unrecorded == {c_hash}
            obj = await adds.record(owner, params(owner), c_hash, size, CREATED)
            again = await adds.record(owner, params(owner), c_hash, size, CREATED)  # idempotent
            return obj, again, set(adds.unrecorded)

    obj, again, unrecorded = node.call(main())
    assert unrecorded == set()
    assert obj.obj_id == again.obj_id
    assert obj.c_hash == hashlib.sha256(data).hexdigest()
    assert obj.size == len(data)
    assert records(node) == [(obj.obj_id, obj.c_hash)]
    assert files(node) == {"content": [dor.store.path(obj.c_hash)], "tmp": []}
    # And it is served like any other object.
    served = node.call(dor.get_meta(obj.obj_id, node.node.keystore.identity))
    assert served.obj_id == obj.obj_id


def test_content_put_but_not_recorded_is_removed(
    node: Any, write_file: Callable[..., Path], files: Callable[[Any], dict[str, list[Path]]]
) -> None:
    dor = dor_of(node)
    small, large = b"never recorded", os.urandom(1024 * 1024 + 1)

    async def main() -> tuple[list[str], bool]:
        async with dor.local_adds() as adds:
            put = [(await asyncio.to_thread(adds.put, write_file(data)))[0] for data in (small, large)]
            present = all(dor.store.exists(c_hash) for c_hash in put)
        return put, present

    put, present_inside = node.call(main())
    assert present_inside  # in place while the block runs
    assert not any(dor.store.exists(c_hash) for c_hash in put)
    assert records(node) == []
    assert files(node) == {"content": [], "tmp": []}


def test_content_put_but_not_recorded_is_kept_when_another_object_uses_it(
    node: Any, write_file: Callable[..., Path], files: Callable[[Any], dict[str, list[Path]]]
) -> None:
    dor, owner = dor_of(node), node.node.iid
    data = b"shared content"
    existing = node.call(dor.add_file(owner, params(owner), write_file(data), CREATED))

    async def main() -> str:
        async with dor.local_adds() as adds:
            c_hash, _ = await asyncio.to_thread(adds.put, write_file(data))
            return c_hash

    assert node.call(main()) == existing.c_hash
    assert dor.store.path(existing.c_hash).read_bytes() == data
    assert records(node) == [(existing.obj_id, existing.c_hash)]
    assert files(node) == {"content": [dor.store.path(existing.c_hash)], "tmp": []}


def test_only_the_unrecorded_content_of_a_block_is_removed(
    node: Any, write_file: Callable[..., Path], files: Callable[[Any], dict[str, list[Path]]]
) -> None:
    dor, owner = dor_of(node), node.node.iid

    async def main() -> tuple[CDataObject, str]:
        async with dor.local_adds() as adds:
            kept_hash, size = await asyncio.to_thread(adds.put, write_file(b"recorded"))
            dropped_hash, _ = await asyncio.to_thread(adds.put, write_file(b"not recorded"))
            kept = await adds.record(owner, params(owner), kept_hash, size, CREATED)
            return kept, dropped_hash

    kept, dropped = node.call(main())
    assert dor.store.exists(kept.c_hash)
    assert not dor.store.exists(dropped)
    assert records(node) == [(kept.obj_id, kept.c_hash)]
    assert files(node) == {"content": [dor.store.path(kept.c_hash)], "tmp": []}


def test_content_is_removed_when_the_block_fails(
    node: Any, write_file: Callable[..., Path], files: Callable[[Any], dict[str, list[Path]]]
) -> None:
    dor, owner = dor_of(node), node.node.iid

    async def failing_record() -> str:
        async with dor.local_adds() as adds:
            c_hash, size = await asyncio.to_thread(adds.put, write_file(b"refused"))
            try:
                await adds.record(owner, params("e" * 64), c_hash, size, CREATED)  # unknown owner
            finally:
                assert adds.unrecorded == {c_hash}
        raise AssertionError("record should have failed")

    async def failing_caller() -> None:
        async with dor.local_adds() as adds:
            await asyncio.to_thread(adds.put, write_file(b"caller failed"))
            raise Unrecorded

    with pytest.raises(InvalidInputError):
        node.call(failing_record())
    with pytest.raises(Unrecorded):
        node.call(failing_caller())
    assert records(node) == []
    assert files(node) == {"content": [], "tmp": []}


def test_delete_waits_for_an_add_of_the_same_content(
    node: Any, write_file: Callable[..., Path], files: Callable[[Any], dict[str, list[Path]]]
) -> None:
    """Deleting an object while a local add holds the same content (put, not yet recorded): the removal of the
    content waits for the add, and finds the content used by the new record, so the file stays."""
    dor, owner = dor_of(node), node.node.iid
    data = os.urandom(2000)
    old = node.call(dor.add_file(owner, params(owner), write_file(data), CREATED))
    caller = node.node.keystore.identity

    async def main() -> tuple[CDataObject, bool, bool]:
        async with dor.local_adds() as adds:
            c_hash, size = await asyncio.to_thread(adds.put, write_file(data))
            deleting = asyncio.ensure_future(dor.delete(old.obj_id, caller))
            for _ in range(50):  # the delete gets as far as it can (a quiet period: the delete must not finish)
                await asyncio.sleep(0.01)
            waiting = not deleting.done()
            still_there = dor.store.exists(c_hash)
            new = await adds.record(owner, params(owner), c_hash, size, CREATED + 5)
        await asyncio.wait_for(deleting, 10)
        return new, waiting, still_there

    new, waited, still_there = node.call(main())
    assert waited and still_there
    assert records(node) == [(new.obj_id, new.c_hash)]
    assert new.c_hash == old.c_hash
    assert dor.store.path(new.c_hash).read_bytes() == data
    assert files(node) == {"content": [dor.store.path(new.c_hash)], "tmp": []}


def test_delete_removes_content_once_unused(
    node: Any, write_file: Callable[..., Path], files: Callable[[Any], dict[str, list[Path]]]
) -> None:
    """The other half of the above: with no add holding the content, deleting its last object removes the file."""
    dor, owner = dor_of(node), node.node.iid
    obj = node.call(dor.add_file(owner, params(owner), write_file(b"short-lived"), CREATED))
    node.call(dor.delete(obj.obj_id, node.node.keystore.identity))
    assert records(node) == []
    assert files(node) == {"content": [], "tmp": []}


def test_add_file_cancelled_while_its_content_is_copied_leaves_nothing(
    node: Any, users: Any, write_file: Callable[..., Path], files: Callable[[Any], dict[str, list[Path]]]
) -> None:
    """The copy goes on in its worker thread after the cancellation: the add waits for it, then removes what it
    put in place, so no unused content is left until the next start."""
    dor = dor_of(node)
    source = write_file(os.urandom(48 * 1024 * 1024))

    async def main() -> bool:
        task = asyncio.ensure_future(dor.add_file(users.alice.iid, params(users.alice.iid), source, CREATED))
        await until(lambda: files(node)["tmp"], 10, interval=0.001, what="the copy begun (its temp file)")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return task.cancelled()

    assert node.call(main())
    assert records(node) == []
    assert files(node) == {"content": [], "tmp": []}
