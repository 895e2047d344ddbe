"""Downloads honour HTTP Range (DESIGN §6): partial content, open-ended and suffix ranges, resuming."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

CONTENT = bytes(range(256)) * 40  # 10240 bytes, every offset distinguishable within 256


@pytest.fixture
def obj(add: Callable) -> Any:
    return add(CONTENT, access_restricted=True)


def get(send: Callable, users: Any, obj: Any, range_header: str | None = None, signer: Any = None) -> Any:
    headers = {"range": range_header} if range_header else {}
    return send(signer or users.alice, "GET", f"/dor/{obj.obj_id}/content", headers=headers)


def test_full_download_advertises_ranges(users: Any, send: Callable, obj: Any) -> None:
    response = get(send, users, obj)
    assert response.status_code == 200
    assert response.content == CONTENT
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["saas-c-hash"] == hashlib.sha256(CONTENT).hexdigest()


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=10-99", 10, 100),
        ("bytes=0-0", 0, 1),
        ("bytes=10000-", 10000, len(CONTENT)),
        ("bytes=-100", len(CONTENT) - 100, len(CONTENT)),
        ("bytes=10200-99999", 10200, len(CONTENT)),
    ],
)
def test_range_gives_exactly_those_bytes(
    users: Any, send: Callable, obj: Any, header: str, start: int, end: int
) -> None:
    response = get(send, users, obj, header)
    assert response.status_code == 206, response.text
    assert response.content == CONTENT[start:end]
    assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{len(CONTENT)}"
    assert int(response.headers["content-length"]) == end - start


def test_resume_download_from_offset(users: Any, send: Callable, obj: Any) -> None:
    received = bytearray()
    first = get(send, users, obj, "bytes=0-4095")
    assert first.status_code == 206
    received += first.content
    while len(received) < len(CONTENT):
        response = get(send, users, obj, f"bytes={len(received)}-")
        assert response.status_code == 206
        assert response.content  # progress on every request
        received += response.content
    assert bytes(received) == CONTENT
    assert hashlib.sha256(received).hexdigest() == obj.c_hash


def test_range_outside_the_content_is_416(users: Any, send: Callable, obj: Any) -> None:
    response = get(send, users, obj, f"bytes={len(CONTENT)}-")
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(CONTENT)}"


def test_range_needs_access(users: Any, send: Callable, obj: Any) -> None:
    response = get(send, users, obj, "bytes=0-9", signer=users.bob)
    assert response.status_code == 404
    assert CONTENT[:10] not in response.content
    response = send(None, "GET", f"/dor/{obj.obj_id}/content", headers={"range": "bytes=0-9"})
    assert response.status_code == 401
