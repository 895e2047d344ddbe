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
    assert set(response.json()) == {"reason", "id", "details"}


@pytest.mark.parametrize("header", ["bytes=0-9,20-29", "items=0-9", "abc"])
def test_ranges_we_do_not_serve_get_the_whole_content(users: Any, send: Callable, obj: Any, header: str) -> None:
    response = get(send, users, obj, header)
    assert response.status_code == 200
    assert response.content == CONTENT


DIGITS = "9" * 5000


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("bytes=abc", "Invalid Range header"),
        ("bytes=-", "Invalid Range header"),
        ("bytes=1-2-3", "Invalid Range header"),
        ("bytes=0x10-20", "Invalid Range header"),
        ("bytes=50-10", "the last byte is before the first"),
        ("bytes=-0", "empty"),
        (f"bytes={DIGITS}-", "past the end"),
        (f"bytes={DIGITS}-{DIGITS}", "past the end"),
        (f"bytes={DIGITS}-1", "before the first"),
    ],
)
def test_malformed_or_unsatisfiable_range_is_416_with_a_reason(
    users: Any, send: Callable, obj: Any, header: str, reason: str
) -> None:
    response = get(send, users, obj, header)
    assert response.status_code == 416, response.text
    assert reason in response.json()["reason"]
    assert set(response.json()) == {"reason", "id", "details"}
    assert response.headers["content-range"] == f"bytes */{len(CONTENT)}"


def test_huge_numbers_in_a_satisfiable_range_are_clamped(users: Any, send: Callable, obj: Any) -> None:
    # A last byte (or suffix length) of 5,000 digits is just "to the end" (RFC 9110 §14.1.2), never a 500.
    response = get(send, users, obj, f"bytes=100-{DIGITS}")
    assert response.status_code == 206 and response.content == CONTENT[100:]
    response = get(send, users, obj, f"bytes=-{DIGITS}")
    assert response.status_code == 206 and response.content == CONTENT


def test_if_range_resumes_only_the_same_content(users: Any, send: Callable, obj: Any) -> None:
    etag = get(send, users, obj).headers["etag"]
    assert etag == f'"{obj.c_hash}"'
    same = send(users.alice, "GET", f"/dor/{obj.obj_id}/content", headers={"range": "bytes=100-", "if-range": etag})
    assert same.status_code == 206 and same.content == CONTENT[100:]
    other = send(users.alice, "GET", f"/dor/{obj.obj_id}/content", headers={"range": "bytes=100-", "if-range": '"x"'})
    assert other.status_code == 200 and other.content == CONTENT


def test_download_survives_a_concurrent_delete(node: Any, users: Any, add: Callable) -> None:
    # Once the content is being sent, deleting the object (and its file) must not cut the download short.
    import httpx

    from saas.core.signing import EMPTY_BODY_SHA256, sign_request

    big = bytes(range(256)) * 40960  # 10 MiB: more than the node sends before the client reads
    target = add(big)
    path = f"/api/v1/dor/{target.obj_id}/content"
    headers = sign_request(users.alice, "GET", path, node.node.iid, EMPTY_BODY_SHA256)
    with httpx.Client(base_url=node.url, trust_env=False) as client, client.stream("GET", path, headers=headers) as r:
        assert r.status_code == 200
        stream = r.iter_bytes(65536)
        received = bytearray(next(stream))
        from saas.dor.proxy import DORProxy

        with DORProxy(node.address, users.alice) as dor:
            dor.delete_data_object(target.obj_id, users.alice)
        for chunk in stream:
            received += chunk
    assert bytes(received) == big


def test_range_needs_access(users: Any, send: Callable, obj: Any) -> None:
    response = get(send, users, obj, "bytes=0-9", signer=users.bob)
    assert response.status_code == 404
    assert CONTENT[:10] not in response.content
    response = send(None, "GET", f"/dor/{obj.obj_id}/content", headers={"range": "bytes=0-9"})
    assert response.status_code == 401
