"""Closed networks (DESIGN §7): nodes of different network names refuse each other; with a network key (libp2p
pre-shared key) a node without the key cannot even complete a handshake; a peer offering only plaintext or secio
(no Noise) cannot connect, and the node is unaffected."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import multiaddr
import pytest
import trio

from tests.p2p.conftest import wait_until
from tests.p2p.test_network import all_online, boot_of, network

pytestmark = pytest.mark.timeout(60)


def test_nodes_of_different_networks_do_not_join(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice", network_name="red")
    b = node_factory("bob", network_name="blue", boot_node=boot_of(a))
    c = node_factory("carol", network_name="red", boot_node=boot_of(a))
    wait_until(lambda: all_online([a, c]), 10, "the two nodes of the same network to join")
    wait_until(lambda: a.call(a.node.audit.query(None, event="peer.refused")), 10, "alice to refuse bob")
    assert set(network(b)) == {b.node.iid}
    assert b.node.iid not in network(a) and b.node.iid not in network(c)
    assert b.node.p2p.peers() == {}
    refused = a.call(a.node.audit.query(None, event="peer.refused"))  # in alice's audit log, signed
    assert refused and all(e.details["reason"] for e in refused)


def test_network_key_keeps_out_nodes_without_it(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice", network_key="s3cret")
    b = node_factory("bob", network_key="s3cret", boot_node=boot_of(a))
    wait_until(lambda: all_online([a, b]), 10, "the two nodes sharing the key to join")
    c = node_factory("carol", boot_node=boot_of(a))  # no key
    d = node_factory("dave", network_key="other", boot_node=boot_of(a))  # another key
    time.sleep(1.5)  # a quiet period, not a wait: the keyless nodes fail before any record exists to wait on
    assert set(network(a)) == {a.node.iid, b.node.iid}
    assert set(network(c)) == {c.node.iid} and set(network(d)) == {d.node.iid}


@pytest.mark.parametrize("insecure", ["plaintext", "secio"])
def test_peer_without_noise_cannot_connect(node_factory: Callable[..., Any], insecure: str) -> None:
    a = node_factory("alice")
    port = a.node.p2p.address[1]
    assert dial_without_noise(port, a.node.p2p.peer_id, insecure) is False
    b = node_factory("bob", boot_node=boot_of(a))  # the node is unaffected
    wait_until(lambda: all_online([a, b]), 10, "a real node to join after the refused dial")


def dial_without_noise(port: int, peer_id: str, insecure: str) -> bool:
    """Dial the node with a libp2p host that offers only `insecure`; True if a connection came up."""
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.crypto.secp256k1 import create_new_key_pair as secp_key_pair
    from libp2p.custom_types import TSecurityOptions
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
    from libp2p.security.secio.transport import ID as SECIO_PROTOCOL_ID
    from libp2p.security.secio.transport import Transport as SecioTransport

    sec_opt: TSecurityOptions
    if insecure == "plaintext":
        key_pair = create_new_key_pair()
        sec_opt = {PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)}
    else:
        key_pair = secp_key_pair()
        sec_opt = {SECIO_PROTOCOL_ID: SecioTransport(key_pair)}

    async def main() -> bool:
        host = new_host(key_pair=key_pair, sec_opt=sec_opt)
        async with host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            target = ID.from_base58(peer_id)
            try:
                with trio.fail_after(10):
                    await host.connect(PeerInfo(target, [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{port}")]))
            except Exception:
                return False
            return bool(host.get_network().get_connections(target))

    return trio.run(main)
