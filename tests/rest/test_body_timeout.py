"""A request body that stalls is answered 408 and its connection closed; nothing half-sent is stored. A slow but
moving body, or one the node itself stopped reading, is not timed out (issue 14's HTTP limits, the body half)."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable
from typing import Any

from saas.core.keystore import Keystore
from saas.core.signing import sign_request
from saas.dor.proxy import DORProxy
from saas.nodedb.proxy import NodeDBProxy
from tests.rest.conftest import add_c_body
from tests.rest.test_http_limits import assert_envelope, connect, read_response
from tests.waiting import wait_until


def _post_head(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    ).encode()


def test_a_stalled_json_body_is_408_and_the_connection_closed(node_factory: Callable[..., Any]) -> None:
    node = node_factory(http_body_timeout=1.0)
    sock = connect(node)
    sock.sendall(_post_head("/api/v1/db/identity", 1000) + b'{"id": "')
    started = time.monotonic()
    status, headers, body = read_response(sock, timeout=10)
    waited = time.monotonic() - started
    assert status == 408
    assert headers.get("connection") == "close"
    assert_envelope(body, "Request body stalled", "1 s")
    assert 0.9 <= waited < 5, waited
    sock.close()


def test_a_stalled_upload_stores_nothing(
    node_factory: Callable[..., Any], keystores: Callable[[str], Keystore]
) -> None:
    node = node_factory(http_body_timeout=1.0)
    alice = keystores("alice")
    with NodeDBProxy(node.address) as db:
        db.update_identity(alice.identity)
    body = add_c_body(alice.identity.id, b"x" * 4_000_000)
    signed = sign_request(alice, "POST", "/api/v1/dor/add-c", node.node.iid, hashlib.sha256(body).hexdigest())
    head = "".join(f"{name}: {value}\r\n" for name, value in signed.items())
    sock = connect(node)
    sock.sendall(
        f"POST /api/v1/dor/add-c HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n{head}\r\n".encode()
        + body[: len(body) // 2]
    )
    status, _, answer = read_response(sock, timeout=10)
    assert status == 408
    assert_envelope(answer, "Request body stalled")
    sock.close()
    with DORProxy(node.address, alice) as dor:
        assert dor.search() == []
    tmp = node.node.config.datastore / "dor" / "tmp"
    assert wait_until(
        lambda: not any(tmp.iterdir()) if tmp.exists() else True, 10, what="the half-sent body's temp file removed"
    ), list(tmp.iterdir())


def test_a_slow_but_moving_body_is_not_timed_out(node_factory: Callable[..., Any]) -> None:
    node = node_factory(http_body_timeout=1.0)
    sock = connect(node)
    payload = b'{"not": "an identity"}'
    sock.sendall(_post_head("/api/v1/db/identity", len(payload)))
    for i in range(0, len(payload), 4):  # 6 pieces, 0.4 s apart: 2.4 s in all, never 1 s without a byte
        sock.sendall(payload[i : i + 4])
        time.sleep(0.4)  # the pace is what is tested, not synchronisation
    status, _, body = read_response(sock, timeout=10)
    assert status == 422, body  # the body arrived whole and was judged on its content
    sock.close()


def test_other_connections_are_served_while_a_body_stalls(node_factory: Callable[..., Any]) -> None:
    node = node_factory(http_body_timeout=30.0)
    stalled = [connect(node) for _ in range(5)]
    for sock in stalled:
        sock.sendall(_post_head("/api/v1/db/identity", 1000) + b"{")
    probe = connect(node)
    probe.sendall(b"GET /api/v1/db/node HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
    status, _, _ = read_response(probe, timeout=10)
    assert status == 200
    for sock in [*stalled, probe]:
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
