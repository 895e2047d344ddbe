"""NodeDB over REST (DESIGN §7, §11): the node's signed record, the network view, and identity publication with
self-signed records (forgeries refused, updates need a higher nonce)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from saas.core.errors import ConflictError, IdentityError, InvalidInputError, RemoteError
from saas.core.identity import Identity
from saas.core.keystore import Keystore
from saas.nodedb.proxy import NodeDBProxy
from saas.nodedb.schemas import NodeInfo

PASSWORD = "test password"  # the password of the session keystores (tests/conftest.py)


@pytest.fixture
def db(node: Any) -> Iterator[NodeDBProxy]:
    with NodeDBProxy(node.address) as proxy:
        yield proxy


def stored_identity(node: Any, iid: str) -> Identity | None:
    """What the node's NodeDB holds, read directly (not through the API under test)."""
    return node.node.nodedb.get_identity(iid)


def test_node_record_verifies(node: Any, db: NodeDBProxy) -> None:
    info = db.get_node()
    info.verify()
    assert info.identity.id == node.node.iid
    assert info.identity == node.keystore.identity
    assert tuple(info.rest_address) == tuple(node.address)
    assert info.dor_service is True

    # The record is really signed: changing a claimed field breaks it.
    forged = info.model_copy(update={"rest_address": ("10.0.0.1", 1)})
    with pytest.raises(IdentityError):
        forged.verify()


def test_node_record_over_plain_http(node: Any) -> None:
    response = httpx.get(node.url + "/api/v1/db/node", trust_env=False)
    assert response.status_code == 200
    NodeInfo.model_validate(response.json()).verify()


def test_network_lists_this_node_online(node: Any, db: NodeDBProxy) -> None:
    network = db.get_network()
    own = [n for n in network if n.identity.id == node.node.iid]
    assert len(own) == 1
    assert own[0].online is True
    assert own[0].last_seen is not None
    own[0].verify()  # last_seen and online are not part of what the node signed


def test_publish_new_identity(node: Any, db: NodeDBProxy, keystores: Callable[[str], Keystore]) -> None:
    carol = keystores("carol")
    assert db.get_identity(carol.iid) is None
    assert carol.iid not in db.get_identities()

    returned = db.update_identity(carol.identity)
    assert returned == carol.identity
    assert db.get_identity(carol.iid) == carol.identity
    assert db.get_identities()[carol.iid] == carol.identity
    assert node.node.iid in db.get_identities()  # the node's own identity is known too
    assert stored_identity(node, carol.iid) == carol.identity


def test_identity_for_someone_elses_id_is_refused(
    node: Any, db: NodeDBProxy, keystores: Callable[[str], Keystore]
) -> None:
    mallory, victim = keystores("mallory"), keystores("bob")
    claimed = mallory.identity.model_copy(update={"id": victim.iid, "name": "Victim", "signature": None})
    forged = claimed.model_copy(update={"signature": mallory.sign(claimed.signed_content())})
    with pytest.raises(RemoteError) as error:
        db.update_identity(forged)
    assert error.value.status == 400
    assert isinstance(error.value, InvalidInputError)
    assert "does not belong" in error.value.reason
    assert db.get_identity(victim.iid) is None
    assert stored_identity(node, victim.iid) is None


def test_modified_identity_without_resigning_is_refused(
    node: Any, db: NodeDBProxy, keystores: Callable[[str], Keystore]
) -> None:
    dave = keystores("alice")
    db.update_identity(dave.identity)
    tampered = dave.identity.model_copy(update={"name": "Evil Dave", "nonce": dave.identity.nonce + 5})
    with pytest.raises(RemoteError) as error:
        db.update_identity(tampered)
    assert error.value.status == 400
    assert "signature" in error.value.reason
    assert db.get_identity(dave.iid) == dave.identity
    stored = stored_identity(node, dave.iid)
    assert stored is not None and stored.name == dave.identity.name


def test_unsigned_or_malformed_identity_is_refused(
    node: Any, db: NodeDBProxy, keystores: Callable[[str], Keystore]
) -> None:
    erin = keystores("carol")
    unsigned = erin.identity.model_copy(update={"signature": None})
    with pytest.raises(RemoteError) as error:
        db.update_identity(unsigned)
    assert error.value.status == 400

    bad_key = erin.identity.model_dump() | {"s_public_key": "bm90IGEga2V5"}
    response = httpx.post(node.url + "/api/v1/db/identity", json=bad_key, trust_env=False)
    assert response.status_code == 400
    assert set(response.json()) == {"reason", "id", "details"}

    missing = {k: v for k, v in erin.identity.model_dump().items() if k != "e_public_key"}
    response = httpx.post(node.url + "/api/v1/db/identity", json=missing, trust_env=False)
    assert response.status_code == 422
    assert set(response.json()) == {"reason", "id", "details"}
    assert stored_identity(node, erin.iid) is None


def test_identity_update_needs_a_higher_nonce(
    node: Any, db: NodeDBProxy, keystores: Callable[[str], Keystore], tmp_path: Path
) -> None:
    original = keystores("alice")
    copy_path = tmp_path / "copy" / original.path.name
    copy_path.parent.mkdir()
    shutil.copy2(original.path, copy_path)
    copy = Keystore.load(copy_path, PASSWORD)
    assert copy.iid == original.iid

    old = db.update_identity(original.identity)
    assert old.nonce == 0
    new = copy.update_profile(name="Alice Renamed")
    assert new.nonce == old.nonce + 1

    assert db.update_identity(new) == new
    assert db.get_identity(original.iid) == new
    assert db.get_identities()[original.iid].name == "Alice Renamed"

    # The older record is stale now.
    with pytest.raises(ConflictError) as error:
        db.update_identity(old)
    assert isinstance(error.value, RemoteError) and error.value.status == 409
    assert db.get_identity(original.iid) == new

    # Publishing the identical record again is fine (idempotent).
    assert db.update_identity(new) == new
    assert db.get_identity(original.iid) == new


def test_unknown_identity(node: Any, db: NodeDBProxy) -> None:
    unknown = "z" * 64
    assert db.get_identity(unknown) is None
    response = httpx.get(f"{node.url}/api/v1/db/identity/{unknown}", trust_env=False)
    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"reason", "id", "details"}
    assert unknown in body["reason"]


def test_identities_survive_a_restart(node_factory: Callable[..., Any], keystores: Callable[[str], Keystore]) -> None:
    grace = keystores("bob")
    first = node_factory("node")
    with NodeDBProxy(first.address) as db:
        db.update_identity(grace.identity)
    first.stop()
    second = node_factory("node")  # same datastore, new ports
    with NodeDBProxy(second.address) as db:
        assert db.get_identity(grace.iid) == grace.identity


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "Mallory\x1b[31m"), ("name", "   "), ("email", "not-an-email"), ("email", "a\x85@b.c")],
)
def test_self_signed_identity_with_unprintable_profile_is_refused(
    node: Any, keystores: Callable[[str], Keystore], field: str, value: str
) -> None:
    # Correctly self-signed, but a name or email no person should have to read in a terminal or table.
    from saas.core.signing import canonical_json

    keystore = keystores("carol")
    record = keystore.identity.model_dump(exclude={"signature"}) | {field: value, "nonce": 99}
    record["signature"] = keystore.sign(canonical_json(record))
    response = httpx.post(node.url + "/api/v1/db/identity", json=record, trust_env=False)
    assert response.status_code == 422, response.text
    assert value not in response.text
    assert stored_identity(node, keystore.iid) is None


def test_identity_nonce_beyond_json_safe_integers_is_refused(node: Any, keystores: Callable[[str], Keystore]) -> None:
    # A correctly self-signed record whose nonce SQLite could not store must be a client error, not a 500.
    from saas.core.signing import canonical_json

    keystore = keystores("carol")
    record = keystore.identity.model_dump(exclude={"signature"}) | {"nonce": 2**70}
    record["signature"] = keystore.sign(canonical_json(record))
    response = httpx.post(node.url + "/api/v1/db/identity", json=record, trust_env=False)
    assert response.status_code == 422, response.text
    assert stored_identity(node, keystore.iid) is None
