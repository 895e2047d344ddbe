"""Streamed uploads (issue 21): `add-c` signed over its head line only (`streamed:<SHA-256 of the head>`) is stored
but kept pending — not listed, not readable, counted in the owner's quota, a few per identity, expiring, gone after
a restart — until its signer commits the SHA-256 of the exact content the node received. A wrong hash discards it; an
altered head is refused before any content is read; nobody else can commit it; the marker works on add-c only."""

from __future__ import annotations

import hashlib
import http.server
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from saas.core.keystore import Keystore
from saas.core.signing import sign_request, streamed_body_sha256
from saas.dor.proxy import DORProxy
from saas.dor.service import object_id
from saas.dor.upload import upload_head
from tests.waiting import wait_until

API = "/api/v1"
CREATED = 1_700_000_000_000


def head_of(owner: Keystore, **overrides: Any) -> bytes:
    settings: dict[str, Any] = {
        "owner_iid": owner.iid,
        "creators_iid": [owner.iid],
        "data_type": "Text",
        "data_format": "txt",
        "access_restricted": False,
        "content_encrypted": False,
        "created": CREATED,
    }
    settings.update(overrides)
    return upload_head(**settings)


def send_streamed(
    node: Any, signer: Keystore, head: bytes, content: bytes, signed_head: bytes | None = None
) -> httpx.Response:
    """`POST /dor/add-c` signed as a streamed upload of `signed_head` (default: `head`), sending `head` + `content`."""
    marker = streamed_body_sha256(head if signed_head is None else signed_head)
    headers = sign_request(signer, "POST", API + "/dor/add-c", node.node.iid, marker)
    with httpx.Client(base_url=node.url, trust_env=False, timeout=30) as client:
        return client.post(API + "/dor/add-c", content=head + content, headers=headers)


def commit(node: Any, signer: Keystore, pending_id: str, c_hash: str) -> httpx.Response:
    body = b'{"c_hash":"%s"}' % c_hash.encode()
    path = f"{API}/dor/add-c/{pending_id}/commit"
    headers = sign_request(signer, "POST", path, node.node.iid, hashlib.sha256(body).hexdigest())
    headers["content-type"] = "application/json"
    with httpx.Client(base_url=node.url, trust_env=False, timeout=30) as client:
        return client.post(path, content=body, headers=headers)


def pending(node: Any, signer: Keystore, content: bytes, **head: Any) -> tuple[dict[str, Any], str]:
    """A pending upload of `content` by `signer` (its answer) and the SHA-256 of the content sent."""
    response = send_streamed(node, signer, head_of(signer, **head), content)
    assert response.status_code == 202, response.text
    return response.json(), hashlib.sha256(content).hexdigest()


def tmp_files(node: Any) -> list[Path]:
    return sorted(p for p in (node.node.config.datastore / "dor" / "tmp").iterdir() if p.is_file())


def test_proxy_upload_round_trip(
    node: Any, users: Any, add: Callable, dor_as: Callable, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The proxy's default upload is the streamed one; what it stores is exactly the file, and nothing waits."""
    content = bytes(range(256)) * 40_000  # ~10 MiB: several buffers, hashed while sent
    caplog.set_level(logging.INFO, logger="saas.dor.service")
    obj = add(content)
    assert any("waiting for its commit" in r.getMessage() for r in caplog.records)  # it went the streamed way
    assert obj.c_hash == hashlib.sha256(content).hexdigest() and obj.size == len(content)
    target = dor_as(users.alice).get_content(obj.obj_id, users.alice, tmp_path / "back")
    assert target.read_bytes() == content
    assert tmp_files(node) == []
    again = add(content, created=obj.created.timestamp)  # same content and `created`: the same object (idempotent)
    assert again.obj_id == obj.obj_id


def test_pending_upload_is_invisible_until_committed(
    node: Any, users: Any, dor_as: Callable, catalog: Callable, tmp_path: Path
) -> None:
    content = b"pending content " * 1000
    answer, c_hash = pending(node, users.alice, content)
    assert answer["c_hash"] == c_hash == hashlib.sha256(content).hexdigest() and answer["size"] == len(content)
    assert set(answer) == {"pending_id", "c_hash", "size", "expires"}
    obj_id = object_id(c_hash, "Text", "txt", [users.alice.iid], CREATED)

    alice = dor_as(users.alice)
    assert catalog(node) == set()
    assert alice.get_meta(obj_id) is None
    assert alice.search() == [] and alice.search(c_hashes=[c_hash]) == []
    assert dor_as(None).search() == []
    assert alice.statistics().objects == 0
    with pytest.raises(Exception, match="not found"):
        alice.get_content(obj_id, users.alice, tmp_path / "x")
    assert len(tmp_files(node)) == 1

    response = commit(node, users.alice, answer["pending_id"], c_hash)
    assert response.status_code == 200, response.text
    assert response.json()["obj_id"] == obj_id
    assert alice.get_meta(obj_id) is not None
    assert alice.get_content(obj_id, users.alice, tmp_path / "y").read_bytes() == content
    assert tmp_files(node) == []
    assert commit(node, users.alice, answer["pending_id"], c_hash).status_code == 404  # once only


def test_commit_with_a_wrong_hash_is_refused_and_nothing_is_left(
    node: Any, users: Any, catalog: Callable, files: Callable
) -> None:
    answer, c_hash = pending(node, users.alice, b"the real bytes")
    response = commit(node, users.alice, answer["pending_id"], hashlib.sha256(b"other bytes").hexdigest())
    assert response.status_code == 400, response.text
    assert "does not match the hash of the commit" in response.json()["reason"]
    assert catalog(node) == set()
    assert files(node) == {"content": [], "tmp": []}
    assert commit(node, users.alice, answer["pending_id"], c_hash).status_code == 404  # discarded for good


def test_altered_head_is_refused_before_the_content(node: Any, users: Any, catalog: Callable, files: Callable) -> None:
    """The signature covers the head's hash: a head changed on the way (here: the restriction) is refused."""
    signed = head_of(users.alice, access_restricted=True)
    altered = head_of(users.alice, access_restricted=False)
    response = send_streamed(node, users.alice, altered, b"content", signed_head=signed)
    assert response.status_code == 400, response.text
    assert "head hash" in response.json()["reason"]
    # A malformed marker is refused the same way.
    headers = sign_request(users.alice, "POST", API + "/dor/add-c", node.node.iid, "streamed:xyz")
    with httpx.Client(base_url=node.url, trust_env=False, timeout=30) as client:
        response = client.post(API + "/dor/add-c", content=altered + b"content", headers=headers)
    assert response.status_code == 400, response.text
    assert catalog(node) == set()
    assert files(node) == {"content": [], "tmp": []}


def test_someone_else_cannot_commit_your_upload(node: Any, users: Any, catalog: Callable) -> None:
    answer, c_hash = pending(node, users.alice, b"alice's bytes")
    response = commit(node, users.bob, answer["pending_id"], c_hash)
    assert response.status_code == 404, response.text  # bob is not even told it exists
    assert catalog(node) == set()
    assert commit(node, users.alice, answer["pending_id"], c_hash).status_code == 200


def test_streamed_marker_only_on_add_c(node: Any, users: Any, add: Callable) -> None:
    obj = add(b"tagged")
    body = b'[{"key": "k", "value": 1}]'
    path = f"{API}/dor/{obj.obj_id}/tags"
    headers = sign_request(users.alice, "PUT", path, node.node.iid, streamed_body_sha256(body))
    headers["content-type"] = "application/json"
    with httpx.Client(base_url=node.url, trust_env=False, timeout=30) as client:
        response = client.put(path, content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert "only by POST /api/v1/dor/add-c" in response.json()["reason"]


@pytest.fixture
def limited(node_factory: Callable[..., Any]) -> Any:
    """A node keeping at most two pending uploads per identity, each for 60 s, with a 4 KiB quota."""
    return node_factory(max_pending_uploads=2, pending_upload_lifetime=60.0, storage_quota=4096)


def publish(node: Any, *keystores: Keystore) -> None:
    from saas.nodedb.proxy import NodeDBProxy

    with NodeDBProxy(node.address) as db:
        for keystore in keystores:
            db.update_identity(keystore.identity)


def test_pending_uploads_per_identity_are_bounded(
    limited: Any, keystores: Callable[[str], Keystore], tmp_path: Path
) -> None:
    alice, bob = keystores("alice"), keystores("bob")
    publish(limited, alice, bob)
    first, first_hash = pending(limited, alice, b"1")
    pending(limited, alice, b"2")
    response = send_streamed(limited, alice, head_of(alice), b"3")
    assert response.status_code == 429, response.text
    assert "uploads waiting for their commit" in response.json()["reason"]
    assert len(tmp_files(limited)) == 2
    pending(limited, bob, b"bob's")  # others are not affected
    path = tmp_path / "meanwhile"
    path.write_bytes(b"added meanwhile")
    with DORProxy(limited.address, alice) as proxy:  # the proxy uploads in one request, hashed first, meanwhile
        assert proxy.add_data_object(path, alice.identity, False, False, "Text", "txt").size == len(b"added meanwhile")
    assert commit(limited, alice, first["pending_id"], first_hash).status_code == 200
    pending(limited, alice, b"3")  # a commit frees a slot


def test_quota_counts_pending_bytes(limited: Any, keystores: Callable[[str], Keystore], tmp_path: Path) -> None:
    alice = keystores("alice")
    publish(limited, alice)
    answer, c_hash = pending(limited, alice, b"p" * 3000)
    response = send_streamed(limited, alice, head_of(alice, created=CREATED + 1), b"q" * 1500)
    assert response.status_code == 507, response.text
    assert response.json()["details"]["used"] == 3000
    path = tmp_path / "big"
    path.write_bytes(b"r" * 1500)
    with DORProxy(limited.address, alice) as proxy, pytest.raises(Exception, match="storage quota"):
        proxy.add_data_object(path, alice.identity, False, False, "Text", "txt")
    assert len(tmp_files(limited)) == 1
    assert commit(limited, alice, answer["pending_id"], c_hash).status_code == 200
    with DORProxy(limited.address, alice) as proxy:
        assert proxy.usage().bytes == 3000


def test_pending_upload_expires(node_factory: Callable[..., Any], keystores: Callable[[str], Keystore]) -> None:
    node = node_factory(pending_upload_lifetime=0.5)
    alice = keystores("alice")
    publish(node, alice)
    answer, c_hash = pending(node, alice, b"e" * 5000)
    assert len(tmp_files(node)) == 1
    wait_until(lambda: tmp_files(node) == [], timeout=10, what="the pending upload's file removed at expiry")
    assert commit(node, alice, answer["pending_id"], c_hash).status_code == 404
    pending(node, alice, b"again")  # its slot is free again


def test_restart_leaves_no_pending_upload(
    node_factory: Callable[..., Any], keystores: Callable[[str], Keystore], tmp_path: Path
) -> None:
    """A graceful stop removes pending uploads; after a crash (the file left behind) the start-up sweep does."""
    alice = keystores("alice")
    node = node_factory("restarted")
    publish(node, alice)
    answer, c_hash = pending(node, alice, b"c" * 5000)
    [left] = tmp_files(node)
    kept = tmp_path / "kept"
    shutil.copy(left, kept)
    node.stop()
    assert not left.exists()
    shutil.copy(kept, left)  # as a node killed before it could remove it would leave it

    node = node_factory("restarted")  # the same datastore
    assert tmp_files(node) == []
    publish(node, alice)
    assert commit(node, alice, answer["pending_id"], c_hash).status_code == 404
    with DORProxy(node.address, alice) as proxy:
        assert proxy.search() == []


class EarlierRelease(http.server.BaseHTTPRequestHandler):
    """A stand-in for a node of an earlier release in front of the real one: it answers a streamed upload as such
    a node does (it takes the marker for a body hash: 400 after reading the body) and forwards anything else."""

    target = ""
    streamed = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.headers["saas-body-sha256"].startswith("streamed:"):
            type(self).streamed += 1
            answer = b'{"reason": "Request body does not match its signed hash (saas-body-sha256)", "details": {}}'
            status = 400
        else:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            response = httpx.post(self.target + self.path, content=body, headers=headers, trust_env=False)
            answer, status = response.content, response.status_code
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: Any) -> None:
        pass


def test_a_node_of_an_earlier_release_gets_the_signed_upload(node: Any, users: Any, write_file: Callable) -> None:
    EarlierRelease.target = node.url
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EarlierRelease)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = ("127.0.0.1", server.server_address[1])
        with DORProxy(address, users.alice, node_iid=node.node.iid) as proxy:
            first = proxy.add_data_object(write_file(b"one"), users.alice.identity, False, False, "Text", "txt")
            second = proxy.add_data_object(write_file(b"two"), users.alice.identity, False, False, "Text", "txt")
        assert (first.c_hash, second.c_hash) == (hashlib.sha256(b"one").hexdigest(), hashlib.sha256(b"two").hexdigest())
        assert EarlierRelease.streamed == 1  # tried once, then the proxy remembers
    finally:
        server.shutdown()
        server.server_close()
