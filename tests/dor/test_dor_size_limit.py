"""The configurable object size limit (DESIGN §6): larger uploads are refused with 413 and leave nothing behind."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from saas.core.errors import RemoteError, TooLargeError
from saas.core.signing import sign_request

LIMIT = 1024


@pytest.fixture
def node(node_factory: Callable[..., Any]) -> Any:
    """This module's node has a size limit."""
    return node_factory(max_object_size=LIMIT)


def assert_nothing_stored(node: Any, files: Callable, catalog: Callable) -> None:
    assert catalog(node) == set()
    assert files(node) == {"content": [], "tmp": []}


def test_upload_above_the_limit_is_413(
    node: Any, users: Any, add: Callable, files: Callable, catalog: Callable
) -> None:
    with pytest.raises(TooLargeError) as error:
        add(b"x" * 2048)
    assert isinstance(error.value, RemoteError) and error.value.status == 413
    assert error.value.details == {"limit": LIMIT}
    assert_nothing_stored(node, files, catalog)

    with pytest.raises(TooLargeError):
        add(b"y" * (LIMIT + 1))
    assert_nothing_stored(node, files, catalog)


def test_upload_at_the_limit_is_accepted(
    node: Any, users: Any, add: Callable, dor_as: Callable, tmp_path: Path, catalog: Callable
) -> None:
    content = bytes(range(256)) * (LIMIT // 256)
    assert len(content) == LIMIT
    obj = add(content)
    assert obj.size == LIMIT
    assert catalog(node) == {obj.obj_id}
    assert dor_as(users.alice).get_content(obj.obj_id, users.alice, tmp_path / "c").read_bytes() == content


def test_chunked_upload_above_the_limit_is_413(
    node: Any, users: Any, make_body: Callable, files: Callable, catalog: Callable
) -> None:
    body = make_body(users.alice.iid, b"z" * 3000)
    headers = sign_request(users.alice, "POST", "/api/v1/dor/add-c", node.node.iid, hashlib.sha256(body).hexdigest())

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while streaming
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    with httpx.Client(base_url=node.url, trust_env=False, timeout=30) as client:
        response = client.post("/api/v1/dor/add-c", content=chunks(), headers=headers)
    assert response.status_code == 413, response.text
    assert set(response.json()) == {"reason", "id", "details"}
    assert_nothing_stored(node, files, catalog)


def test_announced_content_length_too_large_is_413_before_the_body(
    node: Any, users: Any, files: Callable, catalog: Callable
) -> None:
    headers = sign_request(users.alice, "POST", "/api/v1/dor/add-c", node.node.iid, "0" * 64)
    announced = 50 * 1024 * 1024
    lines = [
        "POST /api/v1/dor/add-c HTTP/1.1",
        "Host: {}:{}".format(*node.address),
        "Content-Type: application/octet-stream",
        f"Content-Length: {announced}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    with socket.create_connection(node.address, timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())  # the headers only: no body is ever sent
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(65536)
            assert chunk, "connection closed without a response"
            response += chunk
    status_line = response.split(b"\r\n", 1)[0]
    assert b" 413 " in status_line, response
    assert_nothing_stored(node, files, catalog)


def test_large_upload_through_the_proxy_is_413(
    node: Any, users: Any, add: Callable, files: Callable, catalog: Callable
) -> None:
    with pytest.raises(TooLargeError):
        add(b"L" * (3 * 1024 * 1024))
    assert_nothing_stored(node, files, catalog)
