"""Keystores written by the original middleware load (converted next to them, once) and keep their keys, profile,
content keys and credentials: a real file written by the original code and one built from the documented format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from saas.core.errors import KeystoreCorruptedError, WrongPasswordError
from saas.core.identity import derive_identity_id
from saas.core.keys import ECPublicKey
from saas.core.keystore import Keystore, list_keystores
from saas.core.original_keystore import find_original_keystores, import_original_keystore, is_original_keystore
from tests.original_keystore_support import ORIGINAL_FIXTURE_PASSWORD, original_fixture, write_original_keystore

PASSWORD = "old password"


def test_the_original_codes_keystore_loads(tmp_path: Path) -> None:
    path = Path(shutil.copy(original_fixture(), tmp_path))
    old_id = path.stem
    assert is_original_keystore(path)
    assert [(o.iid, o.name, o.email) for o in find_original_keystores(tmp_path)] == [
        (old_id, "legacy user", "legacy@example.org")
    ]

    keystore = Keystore.load(path, ORIGINAL_FIXTURE_PASSWORD)

    assert keystore.imported_from == old_id and keystore.iid != old_id
    assert keystore.iid == derive_identity_id(keystore.identity.signing_key.der)
    assert (keystore.identity.name, keystore.identity.email) == ("legacy user", "legacy@example.org")
    credentials = keystore.github_credentials.get("https://github.com/x/y")
    assert credentials is not None and (credentials.login, credentials.token()) == ("me", "tok")
    # the converted keystore is a normal one: listed, loadable on its own, signs verifiably
    assert [i.id for _, i in list_keystores(tmp_path)] == [keystore.iid]
    again = Keystore.load(keystore.path, ORIGINAL_FIXTURE_PASSWORD)
    assert again.identity.signing_key.verify(b"m", again.sign(b"m"))
    assert find_original_keystores(tmp_path) == []  # converted: not offered again
    assert json.loads(path.read_text())["iid"] == old_id  # the original file is left as it was


def test_a_keystore_built_from_the_documented_format_keeps_everything(tmp_path: Path) -> None:
    ssh = {
        "cluster": {"host": "hpc.example.org", "login": "me", "key": "-----BEGIN KEY-----", "key_is_password": False},
        "old": {"host": "h", "login": "me", "key": "secret", "key_is_password": True},
    }
    path, s_key = write_original_keystore(
        tmp_path / "old",
        PASSWORD,
        content_keys={"a" * 64: "key-a"},
        github={"https://github.com/o/r": {"login": "me", "personal_access_token": "pat"}},
        ssh=ssh,
    )

    original, keystore = import_original_keystore(path, PASSWORD, tmp_path / "new", new_password="new password")

    assert keystore.path.parent == tmp_path / "new"
    assert keystore.identity.signing_key.der == ECPublicKey(s_key.public_key()).der  # same key, derived ID
    assert keystore.content_keys.get("a" * 64) == "key-a"
    github = keystore.github_credentials.get("https://github.com/o/r")
    assert github is not None and github.token() == "pat"
    cluster = keystore.ssh_credentials.get("cluster")
    assert cluster is not None
    assert (cluster.host, cluster.login, cluster.private_key()) == ("hpc.example.org", "me", "-----BEGIN KEY-----")
    assert keystore.ssh_credentials.list() == ["cluster"]
    assert original.skipped == ["SSH credentials 'old': a password, not a key"]
    # encryption key kept: what the identity encrypts, the keystore decrypts
    assert keystore.decrypt(keystore.identity.encrypt(b"hello")) == b"hello"
    Keystore.load(keystore.path, "new password")
    # converting again opens the same keystore rather than writing another
    _, same = import_original_keystore(path, PASSWORD, tmp_path / "new", new_password="new password")
    assert same.iid == keystore.iid and len(list(keystore.path.parent.glob("*.json"))) == 1


def test_wrong_password_and_tampering_are_told_apart(tmp_path: Path) -> None:
    path = Path(shutil.copy(original_fixture(), tmp_path))
    with pytest.raises(WrongPasswordError):
        Keystore.load(path, "not the password")
    doc = json.loads(path.read_text())
    doc["profile"]["name"] = "mallory"
    path.write_text(json.dumps(doc))
    with pytest.raises(KeystoreCorruptedError, match="signature"):
        Keystore.load(path, ORIGINAL_FIXTURE_PASSWORD)
    assert list_keystores(tmp_path) == []  # nothing converted
    del doc["assets"]["signing-key"]
    path.write_text(json.dumps(doc))
    with pytest.raises(KeystoreCorruptedError):
        Keystore.load(path, ORIGINAL_FIXTURE_PASSWORD)


def test_sync_is_accepted(tmp_path: Path) -> None:
    keystore = Keystore.load(Path(shutil.copy(original_fixture(), tmp_path)), ORIGINAL_FIXTURE_PASSWORD)
    keystore.content_keys.update("b" * 64, "k")
    keystore.sync()  # the original's explicit save: ours saves on change
    assert Keystore.load(keystore.path, ORIGINAL_FIXTURE_PASSWORD).content_keys.get("b" * 64) == "k"
