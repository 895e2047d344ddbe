"""Reverse proxies in front of a node (`--trusted-proxy`): the client named in X-Forwarded-For counts for rate
limits only when the connection comes from a proxy the owner trusts; anyone else's X-Forwarded-For is ignored (the
attack: a flooding client rotates the header to get a fresh bucket each time). The per-client connection limit does
not apply to a trusted proxy, which carries many clients' connections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from saas.core.keystore import Keystore
from tests.nodedb.test_nodedb_limits import fake_identity

pytestmark = pytest.mark.timeout(120)

PROXY = "127.0.0.2"  # a second loopback address plays the reverse proxy


def publish(node: Any, identity: Any, forwarded_for: str | None = None, source: str = "127.0.0.1") -> httpx.Response:
    headers = {"x-forwarded-for": forwarded_for} if forwarded_for else {}
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, trust_env=False, timeout=10) as client:
        return client.post(node.url + "/api/v1/db/identity", json=identity.model_dump(mode="json"), headers=headers)


def test_a_client_cannot_escape_the_rate_limit_by_forging_x_forwarded_for(
    node_factory: Callable[..., Any], keystores: Callable[[str], Keystore]
) -> None:
    rsa = keystores("alice").identity.e_public_key
    for trusted in ([], [PROXY]):  # no proxy trusted, or another address than the attacker's
        node = node_factory(f"node{len(trusted)}", identity_publish_burst=3, identity_publish_rate=0.01,
                            trusted_proxies=trusted)  # fmt: skip
        answers = [publish(node, fake_identity(rsa, n)[0], forwarded_for=f"198.51.100.{n}") for n in range(6)]
        assert [a.status_code for a in answers] == [200] * 3 + [429] * 3
        assert "from 127.0.0.1:" in answers[-1].json()["reason"]  # its own address, not the forged one


def test_a_trusted_proxy_names_its_clients(
    node_factory: Callable[..., Any], keystores: Callable[[str], Keystore]
) -> None:
    rsa = keystores("alice").identity.e_public_key
    node = node_factory(identity_publish_burst=2, identity_publish_rate=0.01, trusted_proxies=[f"{PROXY}/32"],
                        http_max_connections_per_client=2)  # fmt: skip
    # two clients behind the proxy: a bucket each
    first = [publish(node, fake_identity(rsa, n)[0], "198.51.100.7", PROXY) for n in range(3)]
    second = [publish(node, fake_identity(rsa, 10 + n)[0], "198.51.100.8", PROXY) for n in range(2)]
    assert [a.status_code for a in first] == [200, 200, 429]
    assert "from 198.51.100.7:" in first[-1].json()["reason"]
    assert [a.status_code for a in second] == [200, 200]
    # a client forging the header in front of the proxy is named by the proxy's own entry (the rightmost untrusted)
    forged = publish(node, fake_identity(rsa, 20)[0], "203.0.113.1, 198.51.100.7", PROXY)
    assert forged.status_code == 429 and "from 198.51.100.7:" in forged.json()["reason"]
    # the proxy holds more connections than one client may
    clients = [httpx.Client(transport=httpx.HTTPTransport(local_address=PROXY), trust_env=False) for _ in range(4)]
    try:
        streams = [c.stream("GET", node.url + "/api/v1/db/node") for c in clients]
        responses = [s.__enter__() for s in streams]  # each holds its connection open
        assert [r.status_code for r in responses] == [200] * 4
        for s in streams:
            s.__exit__(None, None, None)
    finally:
        for c in clients:
            c.close()
    # while a direct client is held to the limit
    held = [httpx.Client(trust_env=False) for _ in range(3)]
    try:
        streams = [c.stream("GET", node.url + "/api/v1/db/node") for c in held]
        codes = []
        for s in streams:
            codes.append(s.__enter__().status_code)
        assert codes == [200, 200, 429]
        for s in streams:
            s.__exit__(None, None, None)
    finally:
        for c in held:
            c.close()


def test_trusted_proxy_settings_are_checked() -> None:
    from pydantic import ValidationError

    from saas.config import NodeConfig

    with pytest.raises(ValidationError, match="a trusted proxy is an IP address or network"):
        NodeConfig(datastore="/tmp/x", keystore="/tmp/k.json", password="p", trusted_proxies=["proxy.example.org"])
    assert NodeConfig(
        datastore="/tmp/x", keystore="/tmp/k.json", password="p", trusted_proxies=["10.0.0.5", "10.0.0.7/24"]
    ).trusted_proxies == ["10.0.0.5/32", "10.0.0.0/24"]
