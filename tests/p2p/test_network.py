"""Nodes in one process joining through a boot node given as host:port (DESIGN §7): everyone sees everyone,
identities propagate, graceful stop is seen at once, a late boot node is still found."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.p2p.conftest import wait_until

pytestmark = pytest.mark.timeout(60)


def boot_of(node: Any) -> str:
    return "{}:{}".format(*node.node.config.p2p_address)


def network(node: Any) -> dict[str, dict[str, Any]]:
    response = httpx.get(node.url + "/api/v1/db/network", trust_env=False, timeout=5)
    response.raise_for_status()
    return {n["identity"]["id"]: n for n in response.json()}


def all_online(nodes: list[Any]) -> bool:
    wanted = {n.node.iid for n in nodes}
    for node in nodes:
        seen = network(node)
        if set(seen) != wanted or not all(seen[i]["online"] for i in wanted):
            return False
    return True


def test_three_nodes_join_and_see_each_other(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice")
    boot = boot_of(a)
    a_is_first = a.node.p2p
    b = node_factory("bob", boot_node=boot)
    c = node_factory("carol", boot_node=boot)
    wait_until(lambda: all_online([a, b, c]), 10, "all three nodes online everywhere")
    record = network(b)[c.node.iid]
    assert record["peer_id"] == c.node.p2p.peer_id
    assert record["multiaddrs"] == c.node.p2p.multiaddrs
    assert a_is_first is not None


def test_identity_published_on_one_node_reaches_the_others(
    node_factory: Callable[..., Any], keystores: Callable[[str], Any]
) -> None:
    a = node_factory("alice")
    b = node_factory("bob", boot_node=boot_of(a))
    c = node_factory("carol", boot_node=boot_of(a))
    wait_until(lambda: all_online([a, b, c]), 10, "the network to form")
    dave = keystores("dave")
    response = httpx.post(c.url + "/api/v1/db/identity", json=dave.identity.model_dump(), trust_env=False)
    assert response.status_code == 200
    for node in (a, b):
        wait_until(
            lambda node=node: (  # type: ignore[misc]  # mypy cannot type a lambda with a default argument
                httpx.get(f"{node.url}/api/v1/db/identity/{dave.iid}", trust_env=False).status_code == 200
            ),
            5,
            "the identity to reach the other nodes",
        )


def test_graceful_stop_is_seen_at_once(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice")
    b = node_factory("bob", boot_node=boot_of(a))
    wait_until(lambda: all_online([a, b]), 10, "the two nodes to connect")
    b.stop()
    wait_until(lambda: network(a)[b.node.iid]["online"] is False, 3, "the stopped node to show offline")


def test_boot_node_started_after_the_others(node_factory: Callable[..., Any], keystores: Callable[[str], Any]) -> None:
    from tests.conftest import free_port

    boot_port = free_port()
    boot = f"127.0.0.1:{boot_port}"
    b = node_factory("bob", boot_node=boot)
    c = node_factory("carol", boot_node=boot)
    assert set(network(b)) == {b.node.iid}  # nobody to join yet, but the node runs
    a = node_factory("alice", p2p_address=("127.0.0.1", boot_port), boot_node=boot)
    wait_until(lambda: all_online([a, b, c]), 10, "the late boot node to be joined")


def test_node_restarted_keeps_its_peer_id(node_factory: Callable[..., Any], tmp_path: Any) -> None:
    a = node_factory("alice")
    peer_id = a.node.p2p.peer_id
    key = a.node.config.datastore / "p2p" / "peer.key"
    assert key.stat().st_mode & 0o777 == 0o600
    a.stop()
    again = node_factory("alice", datastore=a.node.config.datastore)
    assert again.node.p2p.peer_id == peer_id


def test_busy_p2p_port_fails_the_start(node_factory: Callable[..., Any]) -> None:
    import socket

    from saas.core.errors import P2PError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(P2PError, match="Cannot listen"):  # libp2p alone would run on without a listener
            node_factory("alice", p2p_address=busy.getsockname())
