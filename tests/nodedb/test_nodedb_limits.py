"""The attack on anonymous identity publication (issue 14, item 7): one client publishing identities as fast as it
can is rate limited (429 with the wait, per client address), NodeDB's size is bounded (429 when full, records from
peers skipped and logged) and updates of known identities still pass when it is full."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from saas.core.identity import Identity, derive_identity_id
from saas.core.keys import ECKeyPair
from saas.core.keystore import Keystore
from saas.core.ratelimit import TokenBuckets
from saas.dor.proxy import DORProxy
from saas.p2p.protocols import nodedb as nodedb_protocol
from tests.p2p.conftest import wait_until

pytestmark = pytest.mark.timeout(120)


def fake_identity(
    e_public_key: str, n: int, key: ECKeyPair | None = None, nonce: int = 0
) -> tuple[Identity, ECKeyPair]:
    """A valid self-signed identity made cheaply (a fresh EC key; the RSA key of a session keystore)."""
    key = key or ECKeyPair.generate()
    record = Identity(
        id=derive_identity_id(key.der),
        name=f"sybil {n}",
        email=f"sybil{n}@example.org",
        s_public_key=key.b64,
        e_public_key=e_public_key,
        nonce=nonce,
    )
    return record.model_copy(update={"signature": key.sign(record.signed_content())}), key


def publish(node: Any, identity: Identity) -> httpx.Response:
    return httpx.post(
        node.url + "/api/v1/db/identity", json=identity.model_dump(mode="json"), trust_env=False, timeout=10
    )


def test_token_buckets() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=3, max_keys=2, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # per key
    now[0] = 1.0  # two tokens back
    assert [buckets.take("a") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("a") > 0
    buckets.take("c")  # a third key: the least recently used bucket goes (memory stays bounded)
    assert len(buckets._buckets) == 2


def test_publication_flood_is_rate_limited(
    node_factory: Callable[..., Any], keystores: Callable[[str], Keystore]
) -> None:
    # One token per 5 s: the fifteen refused publications take far less, even on a loaded machine.
    node = node_factory(identity_publish_burst=5, identity_publish_rate=0.2)
    rsa = keystores("alice").identity.e_public_key
    answers = [publish(node, fake_identity(rsa, n)[0]) for n in range(20)]
    assert [a.status_code for a in answers[:5]] == [200] * 5
    refused = answers[5:]
    assert {a.status_code for a in refused} == {429}
    body = refused[0].json()
    assert body["reason"].startswith("Too many identity publications from 127.0.0.1: try again in")
    assert 0 < body["details"]["retry_after"] <= 5 and int(refused[0].headers["retry-after"]) >= 1
    assert len(node.node.nodedb.identities()) == 1 + 5  # the node's own and the five accepted
    assert publish(node, keystores("alice").identity).status_code == 429  # the client is limited, whoever it sends
    known = node.node.nodedb.identities()[0]
    assert publish(node, known).status_code == 200  # re-publishing a known record costs nothing: never refused
    time.sleep(5.1)  # time passing is the behaviour: the bucket refills at 0.2 per second
    assert publish(node, keystores("alice").identity).status_code == 200


def test_a_full_nodedb_makes_room_but_keeps_who_uses_the_node(
    node_factory: Callable[..., Any], keystores: Callable[[str], Keystore], tmp_path: Path
) -> None:
    """The attack: fill NodeDB with made-up identities so that no new user can publish. A new identity takes the
    place of the one stored longest ago that nothing here needs; the node's own identity, an owner of data here and
    a user active here stay; when every stored identity is needed, a new one is refused with the reason."""
    node = node_factory(max_identities=5, identity_publish_burst=100)
    alice, bob, carol = keystores("alice"), keystores("bob"), keystores("carol")
    assert publish(node, alice.identity).status_code == 200
    data = tmp_path / "data.json"
    data.write_text("{}")
    with DORProxy(node.address, alice) as dor:  # alice owns data here
        dor.add_data_object(data, alice.identity, False, False, "JSONObject", "json")
    assert publish(node, bob.identity).status_code == 200
    with DORProxy(node.address, bob) as dor:  # bob is active here (a verified signed request)
        dor.search()
    junk = [fake_identity(alice.identity.e_public_key, n) for n in range(4)]
    assert [publish(node, j).status_code for j, _ in junk] == [200] * 4  # the last two made room
    db = node.node.nodedb
    assert len(db.identities()) == 5
    stored = {i.id for i in db.identities()}
    assert {node.node.iid, alice.iid, bob.iid} <= stored
    assert [j.id in stored for j, _ in junk] == [False, False, True, True]  # the oldest went first
    assert publish(node, carol.identity).status_code == 200  # a new user gets in
    assert db.get_identity(carol.iid) is not None and db.get_identity(junk[2][0].id) is None
    updated, _ = fake_identity(alice.identity.e_public_key, 100, key=junk[3][1], nonce=1)  # an update: no room needed
    assert publish(node, updated).status_code == 200 and db.get_identity(updated.id) == updated
    with DORProxy(node.address, carol) as dor:  # carol and the last junk record in use: nothing may go
        dor.search()
    with DORProxy(node.address, alice) as dor:
        obj = dor.add_data_object(data, alice.identity, True, False, "JSONObject", "json")
        dor.grant_access(obj.obj_id, alice, updated)
    refused = publish(node, fake_identity(alice.identity.e_public_key, 200)[0])
    assert refused.status_code == 429
    assert refused.json()["reason"] == (
        "This node knows 5 identities, the most it keeps, and each is in use here: it accepts updates of known "
        "identities only"
    )
    assert refused.json()["details"] == {"identities": 5, "max_identities": 5}


def test_eviction_candidates() -> None:
    from saas.nodedb.eviction import ACTIVE_KEEP_S, candidates

    stored = ["d", "b", "c", "a"]  # stored longest ago first
    assert candidates(stored, {"d"}, {}, now=0.0) == ["b", "c", "a"]  # in that order, the pinned never
    assert candidates(stored, (), {"b": 100.0}, now=100.0 + ACTIVE_KEEP_S - 1) == ["d", "c", "a"]  # active: stays
    assert candidates(stored, (), {"b": 100.0}, now=100.0 + ACTIVE_KEEP_S + 1, limit=2) == ["d", "b"]


def test_records_from_peers_are_bounded(
    node_factory: Callable[..., Any], keystores: Callable[[str], Keystore], caplog: pytest.LogCaptureFixture
) -> None:
    """A peer (here: a node that took 30 identities in) floods a small node: it keeps what fits, logs the rest,
    and still takes updates of what it knows, over real P2P."""
    big = node_factory("alice")
    rsa = keystores("alice").identity.e_public_key
    made = [fake_identity(rsa, n) for n in range(30)]
    for identity, _ in made:
        big.call(big.node.nodedb.publish_identity(identity))
    caplog.set_level(logging.WARNING, logger="saas.nodedb.service")
    small = node_factory("bob", boot_node="{}:{}".format(*big.node.config.p2p_address), max_identities=10)
    wait_until(lambda: small.node.nodedb.get_node(big.node.iid) is not None, 30, "the join")
    # a round of anti-entropy: more records offered (and refused), still none beyond the bound
    wait_until(lambda: any("NodeDB is full" in r.getMessage() for r in caplog.records), 30, "records refused")
    assert len(small.node.nodedb.identities()) == 10
    assert any("NodeDB is full" in r.getMessage() for r in caplog.records)
    known, key = next((i, k) for i, k in made if small.node.nodedb.get_identity(i.id) is not None)
    updated, _ = fake_identity(rsa, 500, key=key, nonce=7)
    big.call(big.node.nodedb.publish_identity(updated))  # pushed to the peer as an update: it passes
    wait_until(lambda: small.node.nodedb.get_identity(known.id) == updated, 30, "the update")
    stored = small.call(nodedb_protocol.merge(small.node.nodedb, nodedb_protocol.snapshot(big.node.nodedb)))
    assert stored == (0, 0) and len(small.node.nodedb.identities()) == 10
