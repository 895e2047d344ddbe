"""Canonical JSON and signed-request tokens (DESIGN §5).

Canonical JSON is what every signature in the project covers: keys sorted, no whitespace, UTF-8, no NaN.
A signed request carries the headers built by `sign_request`; its signature covers
`METHOD \\n path?query \\n timestamp \\n nonce \\n node \\n body-sha256` (`request_string`).
The node's verifier
rebuilds the same string with `request_string`, so both sides share one definition.

A streamed upload (`POST /dor/add-c` only) signs `streamed:<SHA-256 of the head line>` as its body hash
(`streamed_body_sha256`): the signature covers the parameters, and the content is covered by a signed commit
that follows (saas/dor/pending.py). Every other request signs the SHA-256 of its body.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any, Protocol

__all__ = [
    "EMPTY_BODY_SHA256",
    "HEADER_BODY_SHA256",
    "HEADER_IID",
    "HEADER_NODE",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "STREAMED_PREFIX",
    "Signer",
    "canonical_json",
    "request_string",
    "sha256_hex",
    "sign_request",
    "streamed_body_sha256",
    "streamed_head_sha256",
]

HEADER_IID = "saas-iid"
HEADER_TIMESTAMP = "saas-timestamp"
HEADER_NONCE = "saas-nonce"
HEADER_NODE = "saas-node"
HEADER_BODY_SHA256 = "saas-body-sha256"
HEADER_SIGNATURE = "saas-signature"
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()
STREAMED_PREFIX = "streamed:"
_HEX64 = frozenset("0123456789abcdef")


class Signer(Protocol):
    """Anything that signs as an identity: a `Keystore`, or a node holding one."""

    @property
    def iid(self) -> str: ...

    def sign(self, message: bytes) -> str: ...


def canonical_json(obj: Any) -> bytes:
    """The one byte form of a JSON value that signatures and content hashes cover."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def streamed_body_sha256(head: bytes) -> str:
    """The body hash a streamed upload signs: the marker and the SHA-256 of its head line (with its newline)."""
    return STREAMED_PREFIX + sha256_hex(head)


def streamed_head_sha256(body_sha256: str) -> str | None:
    """The head hash a signed body hash carries if it is a streamed upload's marker (else None); a marker that is
    malformed is returned as an empty string (never equal to a hash)."""
    if not body_sha256.startswith(STREAMED_PREFIX):
        return None
    head = body_sha256[len(STREAMED_PREFIX) :]
    return head if len(head) == 64 and set(head) <= _HEX64 else ""


def request_string(
    method: str, path_and_query: str, timestamp: str, nonce: str, node_iid: str, body_sha256: str
) -> bytes:
    """The exact bytes a request signature covers. Host and scheme are deliberately left out."""
    return "\n".join([method.upper(), path_and_query, timestamp, nonce, node_iid, body_sha256]).encode("utf-8")


def sign_request(
    signer: Signer,
    method: str,
    path_and_query: str,
    node_iid: str,
    body_sha256: str = EMPTY_BODY_SHA256,
    timestamp_ms: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """Headers that make a request act as `signer` towards the node `node_iid`.

    `path_and_query` must be the path and query exactly as sent on the wire; `body_sha256` is the hex SHA-256
    of the body exactly as sent (the empty-body hash when there is none)."""
    timestamp = str(timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
    nonce = nonce or secrets.token_hex(16)
    message = request_string(method, path_and_query, timestamp, nonce, node_iid, body_sha256)
    return {
        HEADER_IID: signer.iid,
        HEADER_TIMESTAMP: timestamp,
        HEADER_NONCE: nonce,
        HEADER_NODE: node_iid,
        HEADER_BODY_SHA256: body_sha256,
        HEADER_SIGNATURE: signer.sign(message),
    }
