"""Signed REST requests (DESIGN §5) against a real node over real HTTP, with hand-built requests.

A probe for "authentication passed" that changes nothing: a signed GET of the content of an object that does not
exist answers 404 once the signature is accepted and 401 when it is not."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx

from saas.core.keystore import Keystore
from saas.core.signing import HEADER_SIGNATURE

UNKNOWN_OBJ = "0" * 64
PROBE = f"/dor/{UNKNOWN_OBJ}/content"


def assert_envelope(response: httpx.Response, status: int, *secret_values: str) -> dict[str, Any]:
    """The response is a `{reason, id, details}` error envelope with `status` that echoes neither the secrets nor
    the signature the request carried."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"reason", "id", "details"}
    assert isinstance(body["reason"], str) and body["reason"]
    assert isinstance(body["id"], str) and body["id"]
    assert isinstance(body["details"], dict)
    sent_signature = response.request.headers.get(HEADER_SIGNATURE)
    for value in (*secret_values, *([sent_signature] if sent_signature else [])):
        assert value not in response.text
    return body


def objects_on(node: Any) -> list[dict[str, Any]]:
    """Every object on the node, read from its catalog directly (not through the API under test)."""
    db = node.node.dor.db
    return [dict(r) for r in db.call(lambda c: c.execute("SELECT obj_id, c_hash FROM objects").fetchall())]


def files_under(path: Any) -> list[Any]:
    return [p for p in path.rglob("*") if p.is_file()]


def test_valid_signed_upload_and_download(node: Any, alice: Keystore, send: Callable[..., httpx.Response]) -> None:
    content = b"hello, signed world\n" * 10
    body = json.dumps({"owner_iid": alice.iid, "data_type": "Text", "data_format": "txt"}).encode() + b"\n" + content
    response = send(alice, "POST", "/dor/add-c", body, content_type="application/octet-stream")
    assert response.status_code == 200, response.text
    meta = response.json()
    assert meta["owner_iid"] == alice.iid
    assert meta["c_hash"] == hashlib.sha256(content).hexdigest()
    assert meta["size"] == len(content)

    download = send(alice, "GET", f"/dor/{meta['obj_id']}/content")
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["saas-c-hash"] == meta["c_hash"]


def test_signed_probe_passes_authentication(alice: Keystore, send: Callable[..., httpx.Response]) -> None:
    response = send(alice, "GET", PROBE)
    assert_envelope(response, 404)


def test_unsigned_request_to_signed_endpoint_is_401(send: Callable[..., httpx.Response]) -> None:
    body = assert_envelope(send(None, "GET", PROBE), 401)
    assert "not signed" in body["reason"]
    assert "saas-signature" in body["details"]["missing"]


def test_partly_signed_request_is_401(alice: Keystore, send: Callable[..., httpx.Response], node: Any) -> None:
    from saas.core.signing import sign_request

    headers = sign_request(alice, "GET", "/api/v1" + PROBE, node.node.iid)
    del headers["saas-nonce"]
    body = assert_envelope(send(None, "GET", PROBE, headers=headers), 401, headers[HEADER_SIGNATURE])
    assert body["details"]["missing"] == ["saas-nonce"]


def test_unknown_identity_is_401(keystores: Callable[[str], Keystore], send: Callable[..., httpx.Response]) -> None:
    stranger = keystores("mallory")  # never published to the node
    response = send(stranger, "GET", PROBE)
    body = assert_envelope(response, 401)
    assert "not known" in body["reason"]


def test_bad_signature_is_401(
    alice: Keystore, keystores: Callable[[str], Keystore], publish: Any, send: Callable[..., httpx.Response], node: Any
) -> None:
    from saas.core.signing import sign_request

    bob = publish(keystores("bob"))
    # A well-formed signature by someone else (bob signs, the request claims to be alice).
    headers = sign_request(bob, "GET", "/api/v1" + PROBE, node.node.iid)
    headers["saas-iid"] = alice.iid
    body = assert_envelope(send(None, "GET", PROBE, headers=headers), 401, headers[HEADER_SIGNATURE])
    assert "signature" in body["reason"].lower()

    # Garbage in place of a signature.
    headers = sign_request(alice, "GET", "/api/v1" + PROBE, node.node.iid)
    headers[HEADER_SIGNATURE] = "bm90IGEgc2lnbmF0dXJl"
    assert_envelope(send(None, "GET", PROBE, headers=headers), 401, headers[HEADER_SIGNATURE])


def test_modified_path_after_signing_is_401(alice: Keystore, send: Callable[..., httpx.Response]) -> None:
    other = f"/dor/{'1' * 64}/content"
    response = send(alice, "GET", PROBE, sign_path=other)
    assert_envelope(response, 401)
    assert send(alice, "GET", other).status_code == 404  # the same request signed for its real path passes


def test_modified_query_after_signing_is_401(alice: Keystore, send: Callable[..., httpx.Response]) -> None:
    # Search is anonymous, but a signed search is verified like any signed request.
    signed_for = f"/dor?owner_iid={alice.iid}&limit=5"
    assert send(alice, "GET", signed_for).status_code == 200
    response = send(alice, "GET", f"/dor?owner_iid={alice.iid}&limit=6", sign_path=signed_for)
    assert_envelope(response, 401)
    response = send(alice, "GET", "/dor", sign_path=signed_for)
    assert_envelope(response, 401)


def test_stale_and_future_timestamps_are_401(alice: Keystore, send: Callable[..., httpx.Response]) -> None:
    now = int(time.time() * 1000)
    body = assert_envelope(send(alice, "GET", PROBE, timestamp_ms=now - 121_000), 401)
    assert "window" in body["reason"]
    assert_envelope(send(alice, "GET", PROBE, timestamp_ms=now + 121_000), 401)
    # Still inside the window: accepted (404: the probe object does not exist).
    assert send(alice, "GET", PROBE, timestamp_ms=now - 100_000).status_code == 404


def test_malformed_timestamp_and_nonce_are_401(alice: Keystore, send: Callable[..., httpx.Response], node: Any) -> None:
    from saas.core.signing import sign_request

    headers = sign_request(alice, "GET", "/api/v1" + PROBE, node.node.iid)
    headers["saas-timestamp"] = "yesterday"
    assert_envelope(send(None, "GET", PROBE, headers=headers), 401, headers[HEADER_SIGNATURE])
    assert_envelope(send(alice, "GET", PROBE, nonce="n" * 129), 401)


def test_replayed_request_is_401(
    node: Any, alice: Keystore, send: Callable[..., httpx.Response], make_body: Any
) -> None:
    from saas.core.signing import sign_request

    body = make_body(alice.iid, b"replay me")
    headers = sign_request(alice, "POST", "/api/v1/dor/add-c", node.node.iid, hashlib.sha256(body).hexdigest())
    headers["content-type"] = "application/octet-stream"
    first = send(None, "POST", "/dor/add-c", body, headers=headers)
    assert first.status_code == 200, first.text
    second = send(None, "POST", "/dor/add-c", body, headers=headers)
    reply = assert_envelope(second, 401, headers[HEADER_SIGNATURE])
    assert "replay" in reply["reason"].lower()
    assert [o["obj_id"] for o in objects_on(node)] == [first.json()["obj_id"]]

    # The same request with a fresh nonce is a new request.
    assert send(alice, "GET", PROBE).status_code == 404


def test_replay_of_a_read_is_401(alice: Keystore, send: Callable[..., httpx.Response], node: Any) -> None:
    from saas.core.signing import sign_request

    headers = sign_request(alice, "GET", "/api/v1" + PROBE, node.node.iid, nonce=secrets.token_hex(16))
    assert send(None, "GET", PROBE, headers=headers).status_code == 404
    assert_envelope(send(None, "GET", PROBE, headers=headers), 401, headers[HEADER_SIGNATURE])


def test_signed_for_another_node_is_401(
    alice: Keystore, keystores: Callable[[str], Keystore], send: Callable[..., httpx.Response]
) -> None:
    other_node = keystores("other-node").iid
    body = assert_envelope(send(alice, "GET", PROBE, node_iid=other_node), 401)
    assert "another node" in body["reason"]


def test_json_body_not_matching_its_hash_is_400_and_changes_nothing(
    node: Any, alice: Keystore, send: Callable[..., httpx.Response], make_body: Any
) -> None:
    added = send(alice, "POST", "/dor/add-c", make_body(alice.iid, b"tag me"))
    assert added.status_code == 200, added.text
    obj_id = added.json()["obj_id"]

    signed_body = json.dumps([{"key": "colour", "value": "blue"}]).encode()
    sent_body = json.dumps([{"key": "colour", "value": "red"}]).encode()
    response = send(
        alice,
        "PUT",
        f"/dor/{obj_id}/tags",
        sent_body,
        body_sha256=hashlib.sha256(signed_body).hexdigest(),
        content_type="application/json",
    )
    body = assert_envelope(response, 400)
    assert "saas-body-sha256" in body["reason"]
    meta = send(None, "GET", f"/dor/{obj_id}/meta").json()
    assert meta["tags"] == {}

    # The honest request goes through.
    response = send(alice, "PUT", f"/dor/{obj_id}/tags", sent_body, content_type="application/json")
    assert response.status_code == 200, response.text
    assert response.json()["tags"] == {"colour": "red"}


def test_upload_not_matching_its_hash_is_400_and_leaves_nothing(
    node: Any, alice: Keystore, send: Callable[..., httpx.Response], make_body: Any
) -> None:
    dor_root = node.node.config.datastore / "dor"
    signed_body = make_body(alice.iid, b"A" * 200_000)
    sent_body = make_body(alice.iid, b"B" * 200_000)
    response = send(
        alice,
        "POST",
        "/dor/add-c",
        sent_body,
        body_sha256=hashlib.sha256(signed_body).hexdigest(),
        content_type="application/octet-stream",
    )
    body = assert_envelope(response, 400)
    assert "saas-body-sha256" in body["reason"]
    assert objects_on(node) == []
    assert files_under(dor_root / "tmp") == []
    assert files_under(dor_root / "content") == []


def test_malformed_upload_head_is_rejected_without_echo(
    node: Any, alice: Keystore, send: Callable[..., httpx.Response]
) -> None:
    secret = "s3cr3t-value-that-must-not-echo"
    body = json.dumps({"owner_iid": alice.iid, "data_type": "Text", "data_format": "txt", "x": secret}).encode()
    response = send(alice, "POST", "/dor/add-c", body + b"\ncontent")
    assert_envelope(response, 422, secret)
    response = send(alice, "POST", "/dor/add-c", b"no newline at all " + secret.encode())
    assert_envelope(response, 400, secret)
    response = send(alice, "POST", "/dor/add-c", b"{not json " + secret.encode() + b"\ncontent")
    assert_envelope(response, 422, secret)
    assert objects_on(node) == []
    assert files_under(node.node.config.datastore / "dor" / "tmp") == []
