"""Peers that do not prove who they are are refused (DESIGN §7): a record for another identity, a record whose
peer ID is not the connection's, no record at all; an idle TCP connection does not stall the node."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from saas.p2p.host import P2PHost, tcp_multiaddr
from saas.p2p.protocols import IDENTITY, NODEDB
from saas.p2p.protocols.identity import hello
from tests.conftest import free_port
from tests.p2p.conftest import wait_until
from tests.waiting import WaitTimeout, until

pytestmark = pytest.mark.timeout(60)


def run_raw_host(script: Callable[[P2PHost], Any]) -> Any:
    """Run `script(host)` with a bare P2PHost (no node behind it: it answers nothing, checks nothing)."""

    async def main() -> Any:
        with tempfile.TemporaryDirectory() as d:
            host = P2PHost(Path(d) / "peer.key", ("127.0.0.1", 0), ("127.0.0.1", 0))
            await host.start()
            try:
                return await script(host)
            finally:
                await host.stop()

    return asyncio.run(main())


def connect_and_send(target: Any, make_message: Callable[[P2PHost], dict[str, Any]]) -> dict[str, Any]:
    port = target.node.p2p.address[1]

    async def script(host: P2PHost) -> dict[str, Any]:
        peer_id = await host.probe("127.0.0.1", port)
        await host.connect(peer_id, [tcp_multiaddr("127.0.0.1", port)])
        try:
            answer = await host.request(peer_id, IDENTITY, make_message(host))
        except Exception as e:  # the node may drop the connection before its refusal arrives
            answer = {"error": str(e)}
        await until(lambda: peer_id not in host.connected_peers(), 10, interval=0.02, what="the node to drop us")
        answer["still_connected"] = peer_id in host.connected_peers()
        try:
            answer["nodedb"] = await host.request(peer_id, NODEDB, {"type": "ping"}, timeout=3)
        except Exception as e:
            answer["nodedb_error"] = str(e)
        return answer

    return run_raw_host(script)


def test_record_of_another_node_is_refused(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice")
    b = node_factory("bob")
    stolen = b.node.nodedb.own  # a valid, signed record — but of another peer
    answer = connect_and_send(a, lambda host: hello(stolen))
    assert "error" in answer
    assert answer["still_connected"] is False
    assert "error" in answer.get("nodedb", {"error": "no answer"})  # a re-dial gets nothing served either
    assert b.node.iid not in set(a.node.p2p.peers().values())
    assert a.node.nodedb.get_node(b.node.iid) is None


def test_forged_record_is_refused(node_factory: Callable[..., Any], keystores: Callable[[str], Any]) -> None:
    a = node_factory("alice")
    b = node_factory("bob")
    mallory = keystores("mallory")

    def forged(host: P2PHost) -> dict[str, Any]:
        # Bob's record claimed for the attacker's peer ID, re-signed by Mallory: the signature does not match.
        record = b.node.nodedb.own.model_copy(update={"peer_id": host.peer_id, "multiaddrs": host.multiaddrs})
        record = record.model_copy(update={"signature": mallory.sign(record.signed_content())})
        return hello(record)

    answer = connect_and_send(a, forged)
    assert "error" in answer
    assert answer["still_connected"] is False
    assert a.node.nodedb.get_node(b.node.iid) is None


def test_peer_without_a_record_is_refused(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice")
    answer = connect_and_send(a, lambda host: {"hello": "world"})
    assert "error" in answer
    assert answer["still_connected"] is False


def test_silent_peer_is_disconnected(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice")
    port = a.node.p2p.address[1]

    async def script(host: P2PHost) -> bool:
        peer_id = await host.probe("127.0.0.1", port)
        await host.connect(peer_id, [tcp_multiaddr("127.0.0.1", port)])
        try:
            await until(lambda: peer_id not in host.connected_peers(), 10, interval=0.1, what="the node to drop us")
        except WaitTimeout:
            return False
        return True

    assert run_raw_host(script), "a peer that never exchanged identities stayed connected"


def test_idle_tcp_connection_does_not_stall_the_node(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice")
    idle = [socket.create_connection(("127.0.0.1", a.node.p2p.address[1]), timeout=5) for _ in range(5)]
    try:
        b = node_factory("bob", boot_node=f"127.0.0.1:{a.node.p2p.address[1]}")
        wait_until(
            lambda: b.node.iid in {n["identity"]["id"] for n in httpx.get(a.url + "/api/v1/db/network").json()},
            5,
            "a node to join while idle connections are open",
        )
    finally:
        for s in idle:
            s.close()


def test_unused_port_boot_node_does_not_block_start(node_factory: Callable[..., Any]) -> None:
    started = time.monotonic()
    node_factory("alice", boot_node=f"127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 5
