"""Encrypted objects (DESIGN §6): the client encrypts, the DOR stores ciphertext and key envelopes, and granting
access can share the content key with the grantee."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from saas.core.errors import AuthorisationError, DecryptionError, InvalidInputError, NotFoundError
from saas.core.keys import random_key
from saas.core.keystore import Keystore

PASSWORD = "test password"  # the password of the session keystores (tests/conftest.py)
PLAINTEXT = b"the quick brown fox jumps over the lazy dog\n" * 2000


def stored_content(node: Any, c_hash: str) -> bytes:
    return (node.node.config.datastore / "dor" / "content" / c_hash[:2] / c_hash).read_bytes()


@pytest.fixture
def alice_copy(users: Any, tmp_path: Path) -> Keystore:
    """A private copy of alice's keystore (the same identity) that a test may change."""
    folder = tmp_path / "alice-copy"
    folder.mkdir()
    return Keystore.load(shutil.copy2(users.alice.path, folder / users.alice.path.name), PASSWORD)


def test_encrypted_object_round_trip(node: Any, users: Any, add: Callable, dor_as: Callable, tmp_path: Path) -> None:
    key = random_key()
    obj = add(PLAINTEXT, content_encrypted=True, content_key=key, access_restricted=True)
    assert obj.content_encrypted is True

    on_node = stored_content(node, obj.c_hash)
    assert on_node != PLAINTEXT
    assert PLAINTEXT[:40] not in on_node
    assert len(on_node) > len(PLAINTEXT)  # authentication tags and a header

    owner = dor_as(users.alice)
    envelope = owner.get_envelope(obj.obj_id, users.alice)
    assert users.alice.unwrap_key(envelope) == key

    raw = owner.get_content(obj.obj_id, users.alice, tmp_path / "raw")
    assert raw.read_bytes() == on_node
    plain = owner.get_content(obj.obj_id, users.alice, tmp_path / "plain", content_key=key)
    assert plain.read_bytes() == PLAINTEXT


def test_grant_shares_the_content_key(
    node: Any, users: Any, alice_copy: Keystore, dor_as: Callable, write_file: Callable, tmp_path: Path
) -> None:
    key = random_key()
    owner = dor_as(alice_copy)
    obj = owner.add_data_object(write_file(PLAINTEXT), alice_copy.identity, True, True, "Text", "txt", content_key=key)
    alice_copy.content_keys.update(obj.obj_id, key)  # type: ignore[arg-type]  # bytes are accepted too (stored as hex)

    bob = dor_as(users.bob)
    with pytest.raises(NotFoundError):
        bob.get_envelope(obj.obj_id, users.bob)

    owner.grant_access(obj.obj_id, alice_copy, users.bob.identity)
    envelope = bob.get_envelope(obj.obj_id, users.bob)
    shared = users.bob.unwrap_key(envelope)
    assert shared == key
    plain = bob.get_content(obj.obj_id, users.bob, tmp_path / "bob-plain", content_key=shared)
    assert plain.read_bytes() == PLAINTEXT

    # Carol, granted without an envelope, can read the ciphertext but has no key envelope.
    owner.grant_access(obj.obj_id, users.alice, users.carol.iid)
    with pytest.raises(NotFoundError):
        dor_as(users.carol).get_envelope(obj.obj_id, users.carol)

    # Revoking removes the envelope too.
    owner.revoke_access(obj.obj_id, alice_copy, users.bob.identity)
    with pytest.raises(NotFoundError):
        bob.get_envelope(obj.obj_id, users.bob)


def test_envelope_of_someone_else_is_not_shown(users: Any, add: Callable, dor_as: Callable) -> None:
    obj = add(PLAINTEXT, content_encrypted=True, content_key=random_key())  # unrestricted: anyone may read
    with pytest.raises(NotFoundError):
        dor_as(users.bob).get_envelope(obj.obj_id, users.bob)


def test_key_envelope_on_unencrypted_object_is_400(
    node: Any, users: Any, send: Callable, make_body: Callable, catalog: Callable, files: Callable
) -> None:
    envelope = base64.b64encode(users.alice.identity.wrap_key(random_key())).decode()
    body = make_body(users.alice.iid, b"plain", content_encrypted=False, key_envelope=envelope)
    response = send(users.alice, "POST", "/dor/add-c", body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"reason", "id", "details"}
    assert envelope not in response.text
    assert catalog(node) == set()
    assert files(node) == {"content": [], "tmp": []}


def test_malformed_envelopes_are_refused(
    node: Any, users: Any, add: Callable, send: Callable, make_body: Callable, catalog: Callable, dor_as: Callable
) -> None:
    body = make_body(users.alice.iid, b"x", content_encrypted=True, key_envelope="***not base64***")
    response = send(users.alice, "POST", "/dor/add-c", body)
    assert response.status_code == 400, response.text
    assert catalog(node) == set()

    obj = add(b"y", content_encrypted=True, content_key=random_key())
    grant = json.dumps({"key_envelope": "***not base64***"}).encode()
    response = send(
        users.alice, "POST", f"/dor/{obj.obj_id}/access/{users.bob.iid}", grant, {"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert dor_as(users.alice).get_meta(obj.obj_id).access == [users.alice.iid]


def test_wrong_key_does_not_decrypt(users: Any, add: Callable, dor_as: Callable, tmp_path: Path) -> None:
    obj = add(PLAINTEXT, content_encrypted=True, content_key=random_key())
    with pytest.raises(DecryptionError):
        dor_as(users.alice).get_content(obj.obj_id, users.alice, tmp_path / "out", content_key=random_key())
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob("*.part")) == []


def test_encrypted_without_key_uploads_as_is(users: Any, add: Callable) -> None:
    obj = add(b"already encrypted elsewhere", content_encrypted=True)
    assert obj.content_encrypted is True
    assert obj.size == len(b"already encrypted elsewhere")


def test_who_holds_the_key_is_told_to_key_holders_only(users: Any, add: Callable, dor_as: Callable) -> None:
    """`GET /dor/{obj_id}/key-holders/{iid}` (what an RTI node asks before it decrypts an input for a job's user):
    the owner and identities with an envelope of their own hold the key; a grantee without one does not."""
    key = random_key()
    obj = add(PLAINTEXT, content_encrypted=True, content_key=key, access_restricted=True)
    owner = dor_as(users.alice)
    owner.grant_access(obj.obj_id, users.alice, users.bob.identity, users.bob.identity.wrap_key(key))
    owner.grant_access(obj.obj_id, users.alice, users.carol.iid)  # access, no envelope
    answers = {k.iid: owner.holds_key(obj.obj_id, k.iid, users.alice) for k in (users.alice, users.bob, users.carol)}
    assert answers == {users.alice.iid: True, users.bob.iid: True, users.carol.iid: False}
    # a key holder may ask about another identity; a reader without the key only about itself
    assert dor_as(users.bob).holds_key(obj.obj_id, users.carol.iid, users.bob) is False
    assert dor_as(users.carol).holds_key(obj.obj_id, users.carol.iid, users.carol) is False
    with pytest.raises(AuthorisationError) as e:
        dor_as(users.carol).holds_key(obj.obj_id, users.bob.iid, users.carol)
    assert "holder of its key" in e.value.reason
    # revoking removes the envelope, and with it the key
    owner.revoke_access(obj.obj_id, users.alice, users.bob.identity)
    assert owner.holds_key(obj.obj_id, users.bob.iid, users.alice) is False
    with pytest.raises(NotFoundError):  # no longer a reader
        dor_as(users.bob).holds_key(obj.obj_id, users.bob.iid, users.bob)
    plain = add(b"plain")
    with pytest.raises(InvalidInputError):
        owner.holds_key(plain.obj_id, users.alice.iid, users.alice)
