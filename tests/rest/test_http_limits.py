"""What one HTTP connection may cost the node (saas.rest.connections), attacked with raw sockets on 127.0.0.1: a flood
of half-sent huge headers (431, memory stays bounded), slow headers (408, closed), idle keep-alive connections
(closed), and more connections than allowed in total (503) or from one address (429). The node stays responsive
throughout, and every refusal is the JSON error envelope."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.waiting import wait_until

NODE_PATH = "/api/v1/db/node"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def connect(node: Any, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(node.address)
    return sock


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one response on `sock` (read until the node closes or the body is complete)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_node(sock: socket.socket, timeout: float) -> bool:
    """True if the node closes `sock` within `timeout` seconds (whatever it sent before)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def assert_envelope(body: bytes, *fragments: str) -> dict[str, Any]:
    document = json.loads(body)
    assert set(document) == {"reason", "id", "details"}, document
    for fragment in fragments:
        assert fragment in document["reason"], document
    return document


def served(node: Any) -> bool:
    """Whether one ordinary request from 127.0.0.1 is served now (not refused for the connection bounds)."""
    return httpx.get(node.url + NODE_PATH, trust_env=False, timeout=5).status_code == 200


def responsive(node: Any) -> float:
    """Seconds one ordinary request takes (asserting it succeeds)."""
    start = time.monotonic()
    response = httpx.get(node.url + NODE_PATH, trust_env=False, timeout=5)
    assert response.status_code == 200, response.text
    return time.monotonic() - start


# -- header size -------------------------------------------------------------------------------------------------


def answered(sock: socket.socket) -> bool:
    """Whether the node has sent something on `sock` (poll: select() fails for descriptors above 1023, which a
    long test session reaches)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def test_flood_of_half_sent_huge_headers_is_431_and_memory_stays_bounded(node: Any) -> None:
    responsive(node)
    before = rss_mib()
    chunk = b"a" * 65536
    sockets = []
    for _ in range(50):  # each tries to send an 8 MiB header and never finishes it
        sock = connect(node)
        sock.sendall(b"GET " + NODE_PATH.encode() + b" HTTP/1.1\r\nHost: node\r\nX-Flood: ")
        try:
            for _ in range(128):
                sock.sendall(chunk)
                if answered(sock):  # the node answered: stop
                    break
        except OSError:  # the node closed the connection
            pass
        sockets.append(sock)
    grown = rss_mib() - before
    assert responsive(node) < 1.0
    for sock in sockets:
        status, headers, body = read_response(sock)
        assert status == 431
        assert headers["connection"] == "close" and headers["content-type"] == "application/json"
        assert_envelope(body, "larger than 32768 bytes")
        sock.close()
    # Unbounded, the node held every header it was sent (~600 MiB for 50 x 8 MiB).
    assert grown < 40, f"the process grew by {grown:.0f} MiB"


def test_complete_headers_beyond_the_limit_are_431(node_factory: Callable[..., Any]) -> None:
    node = node_factory(http_max_header_size=4096)
    with httpx.Client(base_url=node.url, trust_env=False) as client:
        response = client.get(NODE_PATH, headers={"x-big": "b" * 5000})
        assert response.status_code == 431
        assert_envelope(response.content, "larger than 4096 bytes")
        assert response.json()["details"] == {"limit": 4096}
        response = client.get(NODE_PATH + "?" + "q" * 5000)  # the request line counts too
        assert response.status_code == 431
    with httpx.Client(base_url=node.url, trust_env=False) as client:
        assert client.get(NODE_PATH, headers={"x-fine": "f" * 3000}).status_code == 200


# -- timeouts ----------------------------------------------------------------------------------------------------


def test_slow_headers_are_closed_after_the_header_timeout(node_factory: Callable[..., Any]) -> None:
    node = node_factory(http_header_timeout=1.0, http_max_connections_per_client=1000)
    start = time.monotonic()
    slow = [connect(node) for _ in range(200)]
    for sock in slow:
        sock.sendall(b"GET " + NODE_PATH.encode() + b" HTTP/1.1\r\nHost: no")  # and never the rest
    silent = connect(node)  # connects and sends nothing at all
    assert responsive(node) < 1.0  # while they wait
    for sock in slow:
        status, _, body = read_response(sock, timeout=5)
        assert status == 408
        assert_envelope(body, "not received within 1 s")
        assert closed_by_node(sock, 3)
        sock.close()
    assert time.monotonic() - start < 6
    assert read_response(silent, timeout=5)[0] == 408
    silent.close()

    # On a keep-alive connection the next request's headers have the same deadline.
    sock = connect(node)
    sock.sendall(f"GET {NODE_PATH} HTTP/1.1\r\nHost: node\r\n\r\n".encode())
    assert read_response(sock)[0] == 200
    sock.sendall(b"GET ")
    assert read_response(sock, timeout=5)[0] == 408
    sock.close()


def test_a_busy_keep_alive_connection_is_not_timed_out(node_factory: Callable[..., Any]) -> None:
    # The header deadline is per request: a connection that keeps sending complete requests stays open for longer.
    node = node_factory(http_header_timeout=0.5)
    sock = connect(node)
    start = time.monotonic()
    while time.monotonic() - start < 2.0:
        sock.sendall(f"GET {NODE_PATH} HTTP/1.1\r\nHost: node\r\n\r\n".encode())
        assert read_response(sock)[0] == 200
        time.sleep(0.15)  # the pace is the behaviour: idle gaps shorter than the header timeout, 2 s in all
    sock.close()


def test_idle_keep_alive_connections_are_closed(node_factory: Callable[..., Any]) -> None:
    node = node_factory(http_keepalive_timeout=0.5)
    sock = connect(node)
    sock.sendall(f"GET {NODE_PATH} HTTP/1.1\r\nHost: node\r\n\r\n".encode())
    assert read_response(sock)[0] == 200
    assert closed_by_node(sock, 3)
    sock.close()


# -- connection bounds -------------------------------------------------------------------------------------------


@pytest.fixture
def bounded(node_factory: Callable[..., Any]) -> Any:
    return node_factory(http_max_connections=12, http_max_connections_per_client=4)


def test_connections_beyond_the_per_address_bound_are_429(bounded: Any) -> None:
    held = [connect(bounded) for _ in range(4)]
    time.sleep(0.2)  # accepted and counted: no node hook exposes the connection count to wait on
    extra = connect(bounded)
    extra.sendall(f"GET {NODE_PATH} HTTP/1.1\r\nHost: node\r\n\r\n".encode())
    status, headers, body = read_response(extra)
    assert status == 429
    assert headers["retry-after"] == "1"
    assert_envelope(body, "Too many open connections from your address (at most 4)")
    extra.close()
    # Another address is not affected, and a closed connection frees its place.
    other = httpx.get(f"http://127.0.0.1:{bounded.address[1]}{NODE_PATH}", trust_env=False)
    assert other.status_code == 429  # httpx connects from 127.0.0.1 too
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), trust_env=False) as client:
        assert client.get(bounded.url + NODE_PATH).status_code == 200
    held.pop().close()
    wait_until(lambda: served(bounded), 10, what="the closed connection's place freed")
    assert responsive(bounded) < 1.0
    for sock in held:
        sock.close()


def test_connections_beyond_the_total_bound_are_503(bounded: Any) -> None:
    held = [connect(bounded, f"127.0.0.{1 + i // 4}") for i in range(12)]  # 4 each from 3 addresses
    time.sleep(0.2)  # accepted and counted: no node hook exposes the connection count to wait on
    extra = connect(bounded, "127.0.0.9")
    status, headers, body = read_response(extra)  # refused at once, before it sends anything
    assert status == 503
    assert headers["retry-after"] == "1"
    assert_envelope(body, "too many open connections")
    assert closed_by_node(extra, 3)
    extra.close()
    for sock in held[:2]:
        sock.close()
    wait_until(lambda: served(bounded), 10, what="the closed connections' places freed")
    assert responsive(bounded) < 1.0
    for sock in held[2:]:
        sock.close()


def test_connection_bound_fits_the_open_file_limit() -> None:
    # With `ulimit -n 1024`, 1024 connections (and the refused ones draining) cannot all be accepted: fewer are.
    import subprocess
    import sys

    code = (
        "import resource\n"
        "from saas.rest.connections import HTTPLimits, fit_open_files\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
        "fitted = fit_open_files(HTTPLimits(max_connections=1024, max_connections_per_client=500))\n"
        "print(fitted.max_connections, fitted.max_connections_per_client)\n"
        "print(fit_open_files(HTTPLimits(max_connections=100)).max_connections)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == ["384", "384", "100"]
    assert "limited to 384 (not 1024)" in result.stderr


def test_garbage_after_refused_headers_gets_the_one_answer(node_factory: Callable[..., Any]) -> None:
    node = node_factory(http_max_header_size=4096)
    sock = connect(node)
    sock.sendall(f"GET {NODE_PATH} HTTP/1.1\r\nHost: node\r\nX-Big: {'b' * 5000}\r\n\r\n\x00garbage\r\n\r\n".encode())
    status, _, body = read_response(sock)
    assert status == 431
    assert_envelope(body, "larger than 4096 bytes")
    assert closed_by_node(sock, 3)
    sock.close()
    assert responsive(node) < 1.0
