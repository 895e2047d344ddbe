"""Canonical JSON and signed-request headers (DESIGN §5)."""

from __future__ import annotations

import hashlib
import json
import math
import time

import pytest

from saas.core.keystore import Keystore
from saas.core.signing import (
    EMPTY_BODY_SHA256,
    HEADER_BODY_SHA256,
    HEADER_IID,
    HEADER_NODE,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    Signer,
    canonical_json,
    request_string,
    sha256_hex,
    sign_request,
)

NODE = "n" * 64

# -- canonical JSON --------------------------------------------------------------------------------


def test_canonical_json_is_key_order_independent() -> None:
    first = {"b": 1, "a": {"y": [3, {"d": 4, "c": 5}], "x": None}}
    second = {"a": {"x": None, "y": [3, {"c": 5, "d": 4}]}, "b": 1}
    assert canonical_json(first) == canonical_json(second)
    assert canonical_json(first) == b'{"a":{"x":null,"y":[3,{"c":5,"d":4}]},"b":1}'


def test_canonical_json_has_no_whitespace() -> None:
    encoded = canonical_json({"list": [1, 2, {"k": True}], "n": 1.5, "s": "a b"})
    assert encoded == b'{"list":[1,2,{"k":true}],"n":1.5,"s":"a b"}'
    assert b"\n" not in encoded
    assert b", " not in encoded
    assert b": " not in encoded


def test_canonical_json_keeps_unicode_as_utf8() -> None:
    encoded = canonical_json({"name": "Zoë 王 🙂"})
    assert encoded == '{"name":"Zoë 王 🙂"}'.encode()
    assert b"\\u" not in encoded
    assert json.loads(encoded) == {"name": "Zoë 王 🙂"}


def test_canonical_json_escapes_what_json_requires() -> None:
    assert canonical_json({"s": 'quote" backslash\\ newline\n'}) == b'{"s":"quote\\" backslash\\\\ newline\\n"}'


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_canonical_json_rejects_nan_and_infinity(value: float) -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": value})
    with pytest.raises(ValueError):
        canonical_json([1, value])


def test_sha256_hex() -> None:
    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert hashlib.sha256(b"").hexdigest() == EMPTY_BODY_SHA256


# -- request strings -------------------------------------------------------------------------------


def test_request_string_layout() -> None:
    body = sha256_hex(b'{"a":1}')
    assert (
        request_string("post", "/api/v1/dor/obj?limit=5&x=%20", "1700000000123", "abcdef", NODE, body)
        == f"POST\n/api/v1/dor/obj?limit=5&x=%20\n1700000000123\nabcdef\n{NODE}\n{body}".encode()
    )


def test_request_string_encodes_utf8() -> None:
    assert request_string("GET", "/ä", "1", "n", "node", "b") == "GET\n/ä\n1\nn\nnode\nb".encode()


# -- signed requests -------------------------------------------------------------------------------


def _message(headers: dict[str, str], method: str, path: str) -> bytes:
    return request_string(
        method,
        path,
        headers[HEADER_TIMESTAMP],
        headers[HEADER_NONCE],
        headers[HEADER_NODE],
        headers[HEADER_BODY_SHA256],
    )


def test_keystore_is_a_signer(alice: Keystore) -> None:
    signer: Signer = alice
    assert signer.iid == alice.iid


def test_sign_request_headers(alice: Keystore) -> None:
    before = int(time.time() * 1000)
    headers = sign_request(alice, "GET", "/api/v1/x?a=1", NODE)
    after = int(time.time() * 1000)
    names = {HEADER_IID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_NODE, HEADER_BODY_SHA256, HEADER_SIGNATURE}
    assert names == {"saas-iid", "saas-timestamp", "saas-nonce", "saas-node", "saas-body-sha256", "saas-signature"}
    assert set(headers) == names
    assert headers[HEADER_IID] == alice.iid
    assert headers[HEADER_NODE] == NODE
    assert headers[HEADER_BODY_SHA256] == EMPTY_BODY_SHA256
    assert before <= int(headers[HEADER_TIMESTAMP]) <= after
    assert len(headers[HEADER_NONCE]) >= 16
    assert alice.identity.verify_signature(_message(headers, "GET", "/api/v1/x?a=1"), headers[HEADER_SIGNATURE])


def test_sign_request_nonces_are_fresh(alice: Keystore) -> None:
    nonces = {sign_request(alice, "GET", "/", NODE)[HEADER_NONCE] for _ in range(20)}
    assert len(nonces) == 20


def test_sign_request_uses_given_timestamp_nonce_and_body(alice: Keystore) -> None:
    body = sha256_hex(b"payload")
    headers = sign_request(alice, "put", "/p", NODE, body_sha256=body, timestamp_ms=42, nonce="fixed")
    assert (headers[HEADER_TIMESTAMP], headers[HEADER_NONCE], headers[HEADER_BODY_SHA256]) == ("42", "fixed", body)
    message = request_string("PUT", "/p", "42", "fixed", NODE, body)
    assert alice.identity.verify_signature(message, headers[HEADER_SIGNATURE])


SIGNED = {"method": "POST", "path": "/api/v1/dor?x=1", "timestamp": "1700000000000", "nonce": "nonce-1"}
CHANGES = {
    "method": {"method": "PUT"},
    "path": {"path": "/api/v1/dor?x=2"},
    "path-only": {"path": "/api/v1/dor"},
    "timestamp": {"timestamp": "1700000000001"},
    "nonce": {"nonce": "nonce-2"},
    "node": {"node": "m" * 64},
    "body": {"body": sha256_hex(b"other body")},
}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_signed_request_fails_if_anything_changes(alice: Keystore, change: str) -> None:
    body = sha256_hex(b"body")
    headers = sign_request(
        alice,
        SIGNED["method"],
        SIGNED["path"],
        NODE,
        body_sha256=body,
        timestamp_ms=int(SIGNED["timestamp"]),
        nonce=SIGNED["nonce"],
    )
    fields = {**SIGNED, "node": NODE, "body": body}
    assert alice.identity.verify_signature(
        request_string(fields["method"], fields["path"], fields["timestamp"], fields["nonce"], NODE, body),
        headers[HEADER_SIGNATURE],
    )
    fields.update(CHANGES[change])
    message = request_string(
        fields["method"], fields["path"], fields["timestamp"], fields["nonce"], fields["node"], fields["body"]
    )
    assert not alice.identity.verify_signature(message, headers[HEADER_SIGNATURE])


def test_signed_request_does_not_verify_for_another_identity(alice: Keystore, bob: Keystore) -> None:
    headers = sign_request(alice, "GET", "/", NODE)
    assert not bob.identity.verify_signature(_message(headers, "GET", "/"), headers[HEADER_SIGNATURE])
