"""HTTP limits and port ownership of a real node process (`saas-cli service` with the --http-* flags): a flood of
half-sent 8 MiB headers and 200 slow-header sockets leave the node's memory where it was and the node responsive;
a second node process on the same P2P port exits with the port in its error while the first keeps serving."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from e2e_support import NodeProcess

from saas.core.keystore import Keystore

pytestmark = pytest.mark.timeout(120)


def node_rss_mib(node: NodeProcess) -> float:
    return psutil.Process(node.node_pid).memory_info().rss / 2**20


def answer_time(node: NodeProcess) -> float:
    start = time.monotonic()
    assert httpx.get(node.url + "/api/v1/db/node", trust_env=False, timeout=5).status_code == 200
    return time.monotonic() - start


def status_of(sock: socket.socket, timeout: float = 10) -> int:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_header_flood_and_slow_headers_against_a_node_process(
    tmp_path: Path, keystores: Callable[[str], Keystore]
) -> None:
    args = ["--http-max-header-size", "16K", "--http-header-timeout", "2", "--http-max-connections-per-client", "400"]
    node = NodeProcess(keystores("e2e-limits"), tmp_path / "node", "e2e-limits", service_args=args)
    try:
        node.start()
        answer_time(node)
        before = node_rss_mib(node)

        chunk = b"a" * 65536
        flood = []
        for _ in range(50):
            sock = socket.create_connection(node.address, timeout=10)
            sock.sendall(b"GET /api/v1/db/node HTTP/1.1\r\nHost: node\r\nX-Flood: ")
            try:
                for _ in range(128):  # 8 MiB, unless the node answers first
                    sock.sendall(chunk)
                    if select.select([sock], [], [], 0)[0]:
                        break
            except OSError:
                pass
            flood.append(sock)
        slow = [socket.create_connection(node.address, timeout=10) for _ in range(200)]
        for sock in slow:
            sock.sendall(b"GET /api/v1/db/node HTTP/1.1\r\nHost: n")
        grown = node_rss_mib(node) - before
        assert answer_time(node) < 1.0
        assert [status_of(sock) for sock in flood] == [431] * 50
        assert grown < 30, f"the node grew by {grown:.0f} MiB"  # unbounded: ~440 MiB
        started = time.monotonic()
        assert [status_of(sock) for sock in slow] == [408] * 200
        assert time.monotonic() - started < 4
        for sock in flood + slow:
            sock.close()
        assert answer_time(node) < 1.0
    finally:
        node.close()


def test_second_node_process_on_the_same_p2p_port_exits_with_the_port(
    tmp_path: Path, keystores: Callable[[str], Keystore]
) -> None:
    first = NodeProcess(keystores("e2e-first"), tmp_path / "first", "e2e-first")
    second = NodeProcess(keystores("e2e-second"), tmp_path / "second", "e2e-second")
    try:
        first.start()
        second.p2p_port = first.p2p_port
        proc = second.spawn()
        assert proc.wait(30) != 0
        assert f"P2P port {first.p2p_port}" in second.stderr()
        assert "Address already in use" in second.stderr()
        assert answer_time(first) < 1.0
    finally:
        second.close()
        first.close()
