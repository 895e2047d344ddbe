"""Keystore files: creation, loading, wrong password vs tampering, profile updates, listing, deletion."""

from __future__ import annotations

import base64
import json
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from saas.core.errors import (
    AuthenticationError,
    InvalidInputError,
    KeystoreCorruptedError,
    KeystoreError,
    KeystoreNotFoundError,
    NotFoundError,
    WrongPasswordError,
)
from saas.core.file_key import derive_file_key
from saas.core.identity import Identity
from saas.core.keys import random_key
from saas.core.keystore import Keystore, list_keystores
from saas.core.signing import request_string, sign_request

CloneKeystore = Callable[..., Path]
UNKNOWN_ALGORITHM_SPKI = base64.b64encode(bytes.fromhex("300b300606042a030405030100")).decode()


def read_doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes())


def write_doc(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, indent=2))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- create ----------------------------------------------------------------------------------------


def test_create_writes_only_the_keystore_file_and_a_lock(alice: Keystore) -> None:
    assert alice.path == alice.path.parent / f"{alice.iid}.json"
    assert {p.name for p in alice.path.parent.iterdir()} == {f"{alice.iid}.json", f".{alice.iid}.lock"}
    assert mode_of(alice.path) == 0o600


def test_create_file_layout(alice: Keystore, password: str) -> None:
    doc = read_doc(alice.path)
    assert set(doc) == {"format", "identity", "kdf", "secrets", "signature"}
    assert doc["format"] == "saas-keystore/1"
    assert Identity.parse(doc["identity"]) == alice.identity
    assert doc["kdf"]["name"] == "scrypt"
    assert len(base64.b64decode(doc["kdf"]["salt"])) >= 16
    assert doc["kdf"]["n"] >= 2**17
    # nothing private in the clear
    raw = alice.path.read_text()
    assert password not in raw
    assert "private" not in raw


def test_create_sets_the_profile(alice: Keystore) -> None:
    assert alice.identity.name == "Alice Liddell"
    assert alice.identity.email == "alice@example.org"
    assert alice.identity.nonce == 0
    alice.identity.verify()
    assert alice.content_keys.list() == []
    assert alice.ssh_credentials.list() == []
    assert alice.github_credentials.list() == []


def test_two_keystores_are_different_identities(alice: Keystore, bob: Keystore) -> None:
    assert alice.iid != bob.iid
    assert alice.identity.s_public_key != bob.identity.s_public_key
    assert alice.identity.e_public_key != bob.identity.e_public_key


@pytest.mark.parametrize(
    ("name", "email", "password"),
    [("", "a@example.org", "pw"), ("A\x00", "a@example.org", "pw"), ("Alice", "nope", "pw"), ("Alice", "a@b", "")],
    ids=["empty-name", "control-name", "bad-email", "empty-password"],
)
def test_create_rejects_bad_input_and_writes_nothing(tmp_path: Path, name: str, email: str, password: str) -> None:
    with pytest.raises(InvalidInputError):
        Keystore.create(tmp_path / "ks", name, email, password)
    assert not (tmp_path / "ks").exists() or not any((tmp_path / "ks").iterdir())


# -- load ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alice_loaded(alice: Keystore, password: str) -> Keystore:
    return Keystore.load(alice.path, password)


def test_load_gives_the_same_identity(alice: Keystore, alice_loaded: Keystore) -> None:
    assert alice_loaded.identity == alice.identity
    assert alice_loaded.iid == alice.iid
    assert alice_loaded.path == alice.path
    assert repr(alice_loaded) == f"Keystore({alice.identity.label()!r})"


def test_loaded_keystore_signs_as_the_identity(alice: Keystore, alice_loaded: Keystore) -> None:
    signature = alice_loaded.sign(b"message")
    assert alice.identity.verify_signature(b"message", signature)
    assert alice.verify(b"message", signature)
    assert not alice.identity.verify_signature(b"other", signature)
    headers = sign_request(alice_loaded, "GET", "/api/x", "node")
    message = request_string(
        "GET", "/api/x", headers["saas-timestamp"], headers["saas-nonce"], "node", headers["saas-body-sha256"]
    )
    assert alice.identity.verify_signature(message, headers["saas-signature"])


def test_loaded_keystore_decrypts_for_the_identity(alice: Keystore, alice_loaded: Keystore) -> None:
    assert alice_loaded.decrypt(alice.identity.encrypt(b"for alice")) == b"for alice"
    assert alice.decrypt(alice_loaded.encrypt(b"round trip")) == b"round trip"
    key = random_key()
    assert alice_loaded.unwrap_key(alice.identity.wrap_key(key)) == key


def test_wrong_password(alice: Keystore, password: str) -> None:
    with pytest.raises(WrongPasswordError) as info:
        Keystore.load(alice.path, password + "x")
    error = info.value
    assert isinstance(error, KeystoreError)
    assert isinstance(error, AuthenticationError)
    assert not isinstance(error, KeystoreCorruptedError)
    assert "wrong password" in str(error).lower()
    assert password not in json.dumps(error.to_envelope())


def test_derive_then_open_gives_the_keystore_load_gives(alice: Keystore, password: str) -> None:
    file_key = derive_file_key(alice.path, password)
    assert file_key.kdf == read_doc(alice.path)["kdf"]
    assert password not in repr(file_key) and file_key.key.hex() not in repr(file_key)
    opened = Keystore.open(alice.path, file_key)
    assert opened.identity == alice.identity
    assert alice.identity.verify_signature(b"message", opened.sign(b"message"))
    key = random_key()
    assert opened.unwrap_key(alice.identity.wrap_key(key)) == key
    assert opened.content_keys.list() == alice.content_keys.list()


def test_open_with_the_key_of_a_wrong_password_or_of_other_parameters(
    alice: Keystore, bob: Keystore, clone_keystore: CloneKeystore, password: str
) -> None:
    with pytest.raises(WrongPasswordError):
        Keystore.open(alice.path, derive_file_key(alice.path, password + "x"))
    with pytest.raises(KeystoreError, match="re-encrypted"):  # bob's salt: not a key for alice's file
        Keystore.open(alice.path, derive_file_key(bob.path, password))


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", json.dumps({"format": "other"}).encode(), json.dumps({"format": "saas-keystore/1"}).encode()],
)
def test_deriving_the_key_of_a_file_that_is_no_keystore_is_corrupted(
    tmp_path: Path, password: str, content: bytes
) -> None:
    path = tmp_path / "k.json"
    path.write_bytes(content)
    with pytest.raises(KeystoreCorruptedError):
        derive_file_key(path, password)
    with pytest.raises(KeystoreNotFoundError):
        derive_file_key(tmp_path / "missing.json", password)


def test_deriving_with_unusable_parameters_is_corrupted(
    alice: Keystore, clone_keystore: CloneKeystore, password: str
) -> None:
    path = clone_keystore(alice)
    doc = read_doc(path)
    doc["kdf"]["n"] = 3  # scrypt needs a power of two
    write_doc(path, doc)
    with pytest.raises(KeystoreCorruptedError, match="key derivation"):
        derive_file_key(path, password)


def test_missing_file(tmp_path: Path, password: str) -> None:
    with pytest.raises(KeystoreNotFoundError) as info:
        Keystore.load(tmp_path / f"{'a' * 64}.json", password)
    assert isinstance(info.value, KeystoreError)
    assert isinstance(info.value, NotFoundError)


def test_error_classes_are_distinct() -> None:
    assert not issubclass(KeystoreCorruptedError, WrongPasswordError)
    assert not issubclass(WrongPasswordError, KeystoreCorruptedError)
    assert not issubclass(KeystoreCorruptedError, AuthenticationError)
    assert not issubclass(KeystoreNotFoundError, (WrongPasswordError, KeystoreCorruptedError))


# -- tampering -------------------------------------------------------------------------------------


def _change_secrets_byte(doc: dict[str, Any]) -> None:
    secrets = doc["secrets"]
    middle = len(secrets) // 2
    doc["secrets"] = secrets[:middle] + ("A" if secrets[middle] != "A" else "B") + secrets[middle + 1 :]


def _change_identity(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["identity"][field] = value

    return change


def _change_kdf(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["kdf"][field] = value

    return change


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc[field] = value

    return change


def _drop(field: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        del doc[field]

    return change


def _add_field(doc: dict[str, Any]) -> None:
    doc["comment"] = "added by hand"


DOC_TAMPERING: dict[str, Callable[[dict[str, Any]], None]] = {
    "identity-name": _change_identity("name", "Mallory"),
    "identity-email": _change_identity("email", "mallory@example.org"),
    "identity-nonce": _change_identity("nonce", 7),
    "identity-signature-removed": _change_identity("signature", None),
    "secrets-byte": _change_secrets_byte,
    "secrets-not-base64": _set("secrets", "not base64!"),
    "secrets-not-string": _set("secrets", 5),
    "kdf-n": _change_kdf("n", 2**14),
    "kdf-salt": _change_kdf("salt", base64.b64encode(b"0" * 16).decode()),
    "kdf-name": _change_kdf("name", "argon2id"),
    "kdf-not-object": _set("kdf", "scrypt"),
    "format": _set("format", "saas-keystore/2"),
    "signature-removed": _drop("signature"),
    "signature-garbage": _set("signature", "AAAA"),
    "secrets-removed": _drop("secrets"),
    "identity-removed": _drop("identity"),
    "extra-field": _add_field,
    "unknown-algorithm-key": _change_identity("s_public_key", UNKNOWN_ALGORITHM_SPKI),
}


@pytest.mark.parametrize("tamper", DOC_TAMPERING, ids=list(DOC_TAMPERING))
def test_tampered_document_is_corrupted_not_wrong_password(
    alice: Keystore, clone_keystore: CloneKeystore, password: str, tamper: str
) -> None:
    path = clone_keystore(alice)
    doc = read_doc(path)
    DOC_TAMPERING[tamper](doc)
    write_doc(path, doc)
    for attempt in (password, "wrong password"):  # the right password must not make it "load", nor a wrong one
        with pytest.raises(KeystoreCorruptedError) as info:
            Keystore.load(path, attempt)
        assert not isinstance(info.value, WrongPasswordError)


def test_secrets_of_an_older_version_are_rejected(
    alice: Keystore, bob: Keystore, clone_keystore: CloneKeystore, password: str
) -> None:
    """Bob's secrets blob (same password!) with Alice's signature over it still fails the file signature."""
    path = clone_keystore(alice)
    doc = read_doc(path)
    doc["secrets"] = read_doc(bob.path)["secrets"]
    write_doc(path, doc)
    with pytest.raises(KeystoreCorruptedError):
        Keystore.load(path, password)


RAW_TAMPERING: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "truncated-by-one": lambda raw: raw.rstrip()[:-1],
    "empty": lambda raw: b"",
    "not-json": lambda raw: b"this is not json",
    "json-list": lambda raw: b"[]",
    "json-string": lambda raw: b'"keystore"',
    "json-null": lambda raw: b"null",
    "invalid-utf8": lambda raw: b"\xff\xfe" + raw,
}


@pytest.mark.parametrize("tamper", RAW_TAMPERING, ids=list(RAW_TAMPERING))
def test_unreadable_file_is_corrupted(
    alice: Keystore, clone_keystore: CloneKeystore, password: str, tamper: str
) -> None:
    path = clone_keystore(alice)
    path.write_bytes(RAW_TAMPERING[tamper](path.read_bytes()))
    with pytest.raises(KeystoreCorruptedError) as info:
        Keystore.load(path, password)
    assert not isinstance(info.value, WrongPasswordError)


def test_another_keystore_under_this_name_is_corrupted(
    alice: Keystore, bob: Keystore, clone_keystore: CloneKeystore, password: str
) -> None:
    """Bob's intact, validly signed file renamed to Alice's file name."""
    path = clone_keystore(alice)
    shutil.copyfile(bob.path, path)
    with pytest.raises(KeystoreCorruptedError) as info:
        Keystore.load(path, password)
    assert not isinstance(info.value, WrongPasswordError)


def test_keystore_under_a_non_id_name_loads(alice: Keystore, tmp_path: Path, password: str) -> None:
    """A keystore copied to an arbitrary file name (e.g. a backup) is still usable by path."""
    path = Path(shutil.copy2(alice.path, tmp_path / "backup.json"))
    assert Keystore.load(path, password).iid == alice.iid


# -- profile updates -------------------------------------------------------------------------------


def test_update_profile(alice: Keystore, clone_keystore: CloneKeystore, password: str) -> None:
    keystore = Keystore.load(clone_keystore(alice), password)
    updated = keystore.update_profile(name="Alice Updated")
    assert updated.name == "Alice Updated"
    assert updated.email == alice.identity.email
    assert updated.nonce == alice.identity.nonce + 1
    assert updated.id == alice.iid
    assert updated.signature != alice.identity.signature
    updated.verify()
    assert Identity.parse(updated.model_dump()) == updated
    assert keystore.identity == updated

    again = keystore.update_profile(email="  new@example.org ")
    assert (again.name, again.email, again.nonce) == ("Alice Updated", "new@example.org", alice.identity.nonce + 2)
    again.verify()

    reloaded = Keystore.load(keystore.path, password)
    assert reloaded.identity == again
    assert mode_of(keystore.path) == 0o600
    # the keys did not change: old envelopes still open, signatures still verify with the old record
    assert reloaded.decrypt(alice.identity.encrypt(b"x")) == b"x"
    assert alice.identity.verify_signature(b"m", reloaded.sign(b"m"))


def test_invalid_profile_update_changes_nothing(alice: Keystore, clone_keystore: CloneKeystore, password: str) -> None:
    keystore = Keystore.load(clone_keystore(alice), password)
    before = keystore.path.read_bytes()
    with pytest.raises(InvalidInputError):
        keystore.update_profile(name="")
    with pytest.raises(InvalidInputError):
        keystore.update_profile(email="not an email")
    assert keystore.path.read_bytes() == before
    assert keystore.identity == alice.identity


# -- listing and deleting --------------------------------------------------------------------------


def test_list_keystores(alice: Keystore, bob: Keystore, tmp_path: Path, password: str) -> None:
    folder = tmp_path / "keystores"
    folder.mkdir()
    first, second = sorted([alice, bob], key=lambda k: k.iid)
    first_path = Path(shutil.copy2(first.path, folder))
    second_path = Path(shutil.copy2(second.path, folder))
    # names in the opposite order of the file names, with mixed case
    renamed_first = Keystore.load(first_path, password).update_profile(name="zoe")
    renamed_second = Keystore.load(second_path, password).update_profile(name="Adam")

    (folder / "notes.json").write_text(json.dumps({"a": 1}))
    (folder / "list.json").write_text("[]")
    (folder / "broken.json").write_text("{")
    (folder / "binary.json").write_bytes(b"\xff\xfe\x00")
    (folder / "subfolder.json").mkdir()
    (folder / "not-json.txt").write_text("x")
    (folder / f"{'0' * 64}.json").write_bytes(first.path.read_bytes())  # name does not match its identity
    foreign = read_doc(second.path)
    foreign["format"] = "something-else/1"
    (folder / "other-format.json").write_text(json.dumps(foreign))
    bad_key = read_doc(first.path)
    bad_key["identity"]["s_public_key"] = UNKNOWN_ALGORITHM_SPKI
    (folder / f"{'1' * 64}.json").write_text(json.dumps(bad_key))

    assert list_keystores(folder) == [(second_path, renamed_second), (first_path, renamed_first)]


def test_list_keystores_of_missing_or_empty_folder(tmp_path: Path) -> None:
    assert list_keystores(tmp_path / "missing") == []
    assert list_keystores(tmp_path) == []


def test_delete(alice: Keystore, clone_keystore: CloneKeystore, password: str) -> None:
    path = clone_keystore(alice)
    keystore = Keystore.load(path, password)
    keystore.content_keys.update("k", "v")  # creates the lock file
    assert list_keystores(path.parent) == [(path, alice.identity)]
    keystore.delete()
    assert not path.exists()
    assert list(path.parent.iterdir()) == []
    assert list_keystores(path.parent) == []
    with pytest.raises(KeystoreNotFoundError):
        Keystore.load(path, password)
    assert alice.path.exists()  # the original is untouched
