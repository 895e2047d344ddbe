"""Storage quotas per identity (issue 14 item 7): every owner's objects count with their full size; an add that
would take the owner past their quota is refused with 507 and a reason naming the quota, the usage and how to get
more, before anything is stored; ownership transfer moves usage (and is refused past the new owner's quota); the
node's own identity is exempt; an identity can have its own quota; `GET /dor/usage` shows it."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from saas.core.errors import InsufficientStorageError, RemoteError
from saas.core.signing import sign_request
from saas.dor.proxy import DORProxy

QUOTA = 4096


@pytest.fixture
def node(node_factory: Callable[..., Any], keystores: Callable[[str], Any]) -> Any:
    """This module's node: a quota of 4 KiB per identity, carol may store 64 KiB."""
    return node_factory(storage_quota=QUOTA, storage_quota_for={keystores("carol").iid: 16 * QUOTA})


def usage(dor_as: Callable, keystore: Any) -> tuple[int, int, int | None]:
    found = dor_as(keystore).usage()
    assert found.iid == keystore.iid
    return found.bytes, found.objects, found.quota


def assert_refused(error: pytest.ExceptionInfo, used: int, adding: int) -> None:
    assert isinstance(error.value, RemoteError) and error.value.status == 507
    assert isinstance(error.value, InsufficientStorageError)
    reason = error.value.reason
    assert "storage quota" in reason and "4.0 KiB" in reason, reason  # the quota
    assert "--storage-quota" in reason and "saas-cli dor remove" in reason, reason  # how to get more
    assert error.value.details["quota"] == QUOTA
    assert error.value.details["used"] == used
    assert error.value.details["adding"] == adding


def test_upload_past_the_quota_is_507_and_stores_nothing(
    node: Any, users: Any, add: Callable, dor_as: Callable, files: Callable, catalog: Callable
) -> None:
    first = add(b"a" * 3000)
    assert usage(dor_as, users.alice) == (3000, 1, QUOTA)
    before = (catalog(node), files(node))

    with pytest.raises(InsufficientStorageError) as error:  # the proxy announces the size: refused before the body
        add(b"b" * 1500)
    assert_refused(error, 3000, 1500)
    assert (catalog(node), files(node)) == before
    assert usage(dor_as, users.alice) == (3000, 1, QUOTA)

    add(b"c" * (QUOTA - 3000))  # exactly up to the quota is fine
    assert usage(dor_as, users.alice) == (QUOTA, 2, QUOTA)
    with pytest.raises(InsufficientStorageError):
        add(b"d")

    # Deleting frees the owner's quota; other users were never affected.
    dor_as(users.alice).delete_data_object(first.obj_id, users.alice)
    assert usage(dor_as, users.alice) == (QUOTA - 3000, 1, QUOTA)
    add(b"e" * 2000)
    add(b"f" * 4000, owner=users.bob)
    assert usage(dor_as, users.bob) == (4000, 1, QUOTA)


def test_streamed_upload_past_the_quota_stops_the_stream(
    node: Any, users: Any, make_body: Callable, files: Callable, catalog: Callable
) -> None:
    """Without Content-Length the running total is checked while the content streams."""
    body = make_body(users.alice.iid, b"z" * (2 * 1024 * 1024))
    headers = sign_request(users.alice, "POST", "/api/v1/dor/add-c", node.node.iid, hashlib.sha256(body).hexdigest())

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    with httpx.Client(base_url=node.url, trust_env=False, timeout=30) as client:
        response = client.post("/api/v1/dor/add-c", content=chunks(), headers=headers)
    assert response.status_code == 507, response.text
    assert "storage quota" in response.json()["reason"]
    assert catalog(node) == set()
    assert files(node) == {"content": [], "tmp": []}


def test_announced_size_past_the_quota_is_507_before_the_content(node: Any, users: Any, files: Callable) -> None:
    """A client announcing 50 MiB is answered 507 after the parameter line, without sending any content."""
    head = b'{"owner_iid": "%s", "data_type": "Text", "data_format": "txt"}\n' % users.alice.iid.encode()
    headers = sign_request(users.alice, "POST", "/api/v1/dor/add-c", node.node.iid, "0" * 64)
    lines = [
        "POST /api/v1/dor/add-c HTTP/1.1",
        "Host: {}:{}".format(*node.address),
        "Content-Type: application/octet-stream",
        f"Content-Length: {len(head) + 50 * 1024 * 1024}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    with socket.create_connection(node.address, timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + head)
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(65536)
            assert chunk, "connection closed without a response"
            response += chunk
    assert b" 507 " in response.split(b"\r\n", 1)[0], response
    assert files(node)["tmp"] == []


def test_shared_content_counts_for_each_owner(node: Any, users: Any, add: Callable, dor_as: Callable) -> None:
    """The same bytes stored by two owners are one file, but each owner's usage counts them: usage never reveals
    what others hold, and does not change when they delete."""
    mine = add(b"same bytes" * 100)
    theirs = add(b"same bytes" * 100, owner=users.bob)
    assert mine.c_hash == theirs.c_hash and mine.obj_id != theirs.obj_id
    assert usage(dor_as, users.alice)[:2] == (1000, 1)
    assert usage(dor_as, users.bob)[:2] == (1000, 1)
    dor_as(users.bob).delete_data_object(theirs.obj_id, users.bob)
    assert usage(dor_as, users.alice)[:2] == (1000, 1)
    assert usage(dor_as, users.bob)[:2] == (0, 0)


def test_transfer_moves_usage_and_respects_the_new_owners_quota(
    node: Any, users: Any, add: Callable, dor_as: Callable
) -> None:
    small = add(b"s" * 1000)
    large = add(b"l" * 3000)
    add(b"b" * 2000, owner=users.bob)

    dor_as(users.alice).transfer_ownership(small.obj_id, users.alice, users.bob.identity)
    assert usage(dor_as, users.alice)[:2] == (3000, 1)
    assert usage(dor_as, users.bob)[:2] == (3000, 2)

    # Nobody can fill another identity's quota by giving objects away: the transfer is refused, nothing changes.
    with pytest.raises(InsufficientStorageError) as error:
        dor_as(users.alice).transfer_ownership(large.obj_id, users.alice, users.bob.identity)
    assert (
        isinstance(error.value, RemoteError)
        and error.value.status == 507
        and error.value.details["owner_iid"] == users.bob.iid
    )
    assert dor_as(users.alice).get_meta(large.obj_id).owner_iid == users.alice.iid
    assert usage(dor_as, users.alice)[:2] == (3000, 1)
    assert usage(dor_as, users.bob)[:2] == (3000, 2)

    # carol's own quota is larger: she can take it.
    dor_as(users.alice).transfer_ownership(large.obj_id, users.alice, users.carol.identity)
    assert usage(dor_as, users.carol) == (3000, 1, 16 * QUOTA)
    assert usage(dor_as, users.alice)[:2] == (0, 0)


def test_own_quota_and_the_exempt_node_identity(
    node: Any, users: Any, add: Callable, dor_as: Callable, write_file: Callable
) -> None:
    add(b"c" * (10 * QUOTA), owner=users.carol)  # carol's own quota: 64 KiB
    assert usage(dor_as, users.carol) == (10 * QUOTA, 1, 16 * QUOTA)

    owner = node.keystore  # the node's own identity is not limited
    obj = dor_as(owner).add_data_object(write_file(b"n" * (4 * QUOTA)), owner.identity, False, False, "Text", "txt")
    assert obj.size == 4 * QUOTA
    assert usage(dor_as, owner) == (4 * QUOTA, 1, None)


def test_concurrent_uploads_cannot_pass_the_quota_together(
    node: Any, users: Any, write_file: Callable, dor_as: Callable, catalog: Callable
) -> None:
    """The quota is checked again inside the transaction that inserts the record: of eight 1000-byte uploads in
    parallel, exactly four fit a 4096-byte quota."""
    paths = [write_file(bytes([i]) * 1000) for i in range(8)]

    def upload(path: Path) -> str:
        with DORProxy(node.address, users.alice) as proxy:
            try:
                proxy.add_data_object(path, users.alice.identity, False, False, "Text", "txt")
            except InsufficientStorageError:
                return "refused"
        return "stored"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(upload, paths))
    assert results.count("stored") == 4, results
    assert usage(dor_as, users.alice)[:2] == (4000, 4)
    assert len(catalog(node)) == 4
    content = node.node.config.datastore / "dor" / "content"
    assert len([p for p in content.rglob("*") if p.is_file()]) == 4  # refused content was removed


def test_usage_is_recounted_at_start(node_factory: Callable[..., Any], keystores: Callable[[str], Any]) -> None:
    """The per-owner sums are rebuilt from the records at start-up (an older catalog, or one edited by hand)."""
    from saas.nodedb.proxy import NodeDBProxy

    alice = keystores("alice")
    first = node_factory(storage_quota=QUOTA)
    with NodeDBProxy(first.address) as db:
        db.update_identity(alice.identity)
    source = first.node.config.datastore / "a.txt"
    source.write_bytes(b"x" * 1234)
    with DORProxy(first.address, alice) as dor:
        dor.add_data_object(source, alice.identity, False, False, "Text", "txt")
    first.node.dor.db.call(lambda c: c.execute("DELETE FROM usage"))  # as an older catalog would have it
    first.stop()

    second = node_factory(storage_quota=QUOTA)
    with DORProxy(second.address, alice) as dor:
        found = dor.usage()
    assert (found.bytes, found.objects, found.quota) == (1234, 1, QUOTA)


def test_usage_needs_a_signed_request(node: Any, send: Callable) -> None:
    response = send(None, "GET", "/dor/usage")
    assert response.status_code == 401
