"""Fixtures for the REST tests: hand-built signed requests over real HTTP (httpx) to a running node.

`send(...)` signs with `saas.core.signing.sign_request` unless told otherwise, and lets a test tamper with any part
of what was signed (path, query, body, timestamp, nonce, target node) or reuse exact headers (replay)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from saas.core.keystore import Keystore
from saas.core.signing import EMPTY_BODY_SHA256, sign_request
from saas.nodedb.proxy import NodeDBProxy

API = "/api/v1"


@pytest.fixture
def http(node: Any) -> Iterator[httpx.Client]:
    """A plain httpx client for the node (no proxies from the environment)."""
    with httpx.Client(base_url=node.url, timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture
def publish(node: Any) -> Callable[[Keystore], Keystore]:
    """`publish(keystore)`: make the node know an identity (so it can sign requests there)."""

    def run(keystore: Keystore) -> Keystore:
        with NodeDBProxy(node.address) as db:
            db.update_identity(keystore.identity)
        return keystore

    return run


@pytest.fixture
def alice(keystores: Callable[[str], Keystore], publish: Callable[[Keystore], Keystore]) -> Keystore:
    return publish(keystores("alice"))


Send = Callable[..., httpx.Response]


@pytest.fixture
def send(http: httpx.Client, node: Any) -> Send:
    """`send(signer, method, path, body=b"", ...)`: a request signed by `signer` (None: unsigned).

    `path` is relative to `/api/v1` and may carry a query. Overrides: `sign_path` (sign another path than the one
    sent), `body_sha256` (claim another body hash), `node_iid`, `timestamp_ms`, `nonce`, `headers` (sent as they
    are, replacing the signature headers: for replays)."""

    def run(
        signer: Keystore | None,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        sign_path: str | None = None,
        body_sha256: str | None = None,
        node_iid: str | None = None,
        timestamp_ms: int | None = None,
        nonce: str | None = None,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> httpx.Response:
        all_headers: dict[str, str] = {}
        if content_type:
            all_headers["content-type"] = content_type
        if headers is not None:
            all_headers.update(headers)
        elif signer is not None:
            all_headers.update(
                sign_request(
                    signer,
                    method,
                    API + (sign_path if sign_path is not None else path),
                    node_iid or node.node.iid,
                    body_sha256 or (hashlib.sha256(body).hexdigest() if body else EMPTY_BODY_SHA256),
                    timestamp_ms=timestamp_ms,
                    nonce=nonce,
                )
            )
        return http.request(method, API + path, content=body or None, headers=all_headers)

    return run


def add_c_body(owner_iid: str, content: bytes, **params: Any) -> bytes:
    """An `add-c` body: one line of JSON parameters, a newline, the raw content."""
    import json

    head = {"owner_iid": owner_iid, "data_type": "Text", "data_format": "txt", **params}
    return json.dumps(head).encode() + b"\n" + content


@pytest.fixture
def make_body() -> Callable[..., bytes]:
    return add_c_body
