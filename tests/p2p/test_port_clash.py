"""The P2P port is ours (issue 14): libp2p alone sets SO_REUSEPORT, so a second node on the same P2P port would
start and the kernel would split incoming connections between the two. The second node's start fails with the
port in its reason, and the first keeps working; the same for the REST port."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from saas.core.errors import ConfigError, P2PError
from tests.p2p.conftest import wait_until

pytestmark = pytest.mark.timeout(60)


def network_ids(node: Any) -> set[str]:
    response = httpx.get(node.url + "/api/v1/db/network", trust_env=False, timeout=5)
    response.raise_for_status()
    return {n["identity"]["id"] for n in response.json() if n["online"]}


def test_second_node_on_the_same_p2p_port_fails_and_the_first_keeps_working(
    node_factory: Callable[..., Any], tmp_path: Any
) -> None:
    first = node_factory("alice")
    host, port = first.node.config.p2p_address
    with pytest.raises(P2PError) as error:
        node_factory("bob", p2p_address=(host, port))
    assert f"P2P port {port}" in error.value.reason
    assert "Address already in use" in error.value.reason
    assert error.value.details["port"] == port

    # The first node still owns its port: a third node joins through it and both see each other.
    third = node_factory("carol", boot_node=f"{host}:{port}")
    wanted = {first.node.iid, third.node.iid}
    wait_until(lambda: network_ids(first) == wanted and network_ids(third) == wanted, 10, "both nodes online")
    for _ in range(5):  # every new connection reaches the first node (none go to a second listener)
        assert httpx.get(first.url + "/api/v1/db/node", trust_env=False, timeout=5).status_code == 200


def test_second_node_on_the_same_rest_port_fails_with_the_port(node_factory: Callable[..., Any]) -> None:
    first = node_factory("alice")
    host, port = first.address
    with pytest.raises(ConfigError) as error:
        node_factory("bob", rest_address=(host, port))
    assert f"Cannot listen on {host}:{port}" in error.value.reason
    assert "in use" in error.value.reason
    assert httpx.get(first.url + "/api/v1/db/node", trust_env=False, timeout=5).status_code == 200
