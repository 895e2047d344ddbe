"""Identities: self-certifying IDs, signed records and their verification, profile validation (DESIGN §4)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from saas.core.errors import IdentityError, InvalidInputError
from saas.core.identity import ID_LENGTH, Identity, derive_identity_id, is_identity_id, validate_profile
from saas.core.keys import ECKeyPair
from saas.core.keystore import Keystore
from saas.core.signing import canonical_json

UNKNOWN_ALGORITHM_SPKI = base64.b64encode(bytes.fromhex("300b300606042a030405030100")).decode()


def reference_identity_id(der: bytes) -> str:
    """DESIGN §4 spelled out independently: the first 64 base36 digits of SHA-512(DER)."""
    number = int(hashlib.sha512(der).hexdigest(), 16)
    digits = ""
    while number:
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[number % 36] + digits
        number //= 36
    return digits[:64]


def record_of(keystore: Keystore, **changes: Any) -> dict[str, Any]:
    record = keystore.identity.model_dump()
    record.update(changes)
    return record


# -- identity IDs ----------------------------------------------------------------------------------


def test_derive_identity_id_shape_and_determinism() -> None:
    key = ECKeyPair.generate()
    iid = derive_identity_id(key.der)
    assert len(iid) == ID_LENGTH == 64
    assert re.fullmatch(r"[0-9a-z]{64}", iid)
    assert derive_identity_id(key.der) == iid
    assert derive_identity_id(ECKeyPair.from_private_b64(key.private_b64).der) == iid
    assert iid == reference_identity_id(key.der)


def test_derive_identity_id_differs_per_key() -> None:
    ids = {derive_identity_id(ECKeyPair.generate().der) for _ in range(20)}
    assert len(ids) == 20


def test_keystore_id_is_derived_from_its_signing_key(alice: Keystore) -> None:
    assert alice.iid == derive_identity_id(alice.identity.signing_key.der)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a" * 64, True),
        ("0123456789abcdefghijklmnopqrstuvwxyz" + "0" * 28, True),
        ("a" * 63, False),
        ("a" * 65, False),
        ("A" * 64, False),
        ("", False),
        ("../" + "a" * 61, False),
        ("a" * 63 + "/", False),
        ("a" * 63 + "\n", False),
        ("a" * 64 + "\n", False),
        ("a" * 63 + "-", False),
    ],
)
def test_is_identity_id(value: str, expected: bool) -> None:
    assert is_identity_id(value) is expected


def test_is_identity_id_accepts_derived_ids(alice: Keystore, bob: Keystore) -> None:
    assert is_identity_id(alice.iid)
    assert is_identity_id(bob.iid)


# -- records ---------------------------------------------------------------------------------------


def test_keystore_record_verifies(alice: Keystore) -> None:
    alice.identity.verify()
    parsed = Identity.parse(json.loads(json.dumps(alice.identity.model_dump())))
    assert parsed == alice.identity
    assert parsed.label() == f"Alice Liddell/alice@example.org/{alice.iid}"
    assert re.fullmatch(r"EC/secp384r1/384/[0-9a-f]{64}", parsed.s_key_info)
    assert re.fullmatch(r"RSA/4096/[0-9a-f]{64}", parsed.e_key_info)


def test_signature_covers_canonical_json_of_all_other_fields(alice: Keystore) -> None:
    record = alice.identity.model_dump()
    signature = record.pop("signature")
    assert alice.identity.signed_content() == canonical_json(record)
    assert alice.identity.signing_key.verify(canonical_json(record), signature)


@pytest.mark.parametrize(
    "changes",
    [{"name": "Alice Impostor"}, {"email": "mallory@example.org"}, {"nonce": 1}, {"nonce": 1000}],
    ids=["name", "email", "nonce", "big-nonce"],
)
def test_changed_record_is_rejected(alice: Keystore, changes: dict[str, Any]) -> None:
    with pytest.raises(IdentityError, match="signature"):
        Identity.parse(record_of(alice, **changes))
    with pytest.raises(IdentityError):
        Identity.model_validate(record_of(alice, **changes)).verify()


def test_changed_encryption_key_is_rejected(alice: Keystore, bob: Keystore) -> None:
    # the encryption key is covered by the signature: no one can redirect what is encrypted for Alice
    with pytest.raises(IdentityError, match="signature"):
        Identity.parse(record_of(alice, e_public_key=bob.identity.e_public_key))


@pytest.mark.parametrize("signature", [None, "", "not base64!", "AAAA"])
def test_missing_or_garbage_signature_is_rejected(alice: Keystore, signature: str | None) -> None:
    with pytest.raises(IdentityError):
        Identity.parse(record_of(alice, signature=signature))


def test_absent_signature_field_is_rejected(alice: Keystore) -> None:
    record = record_of(alice)
    del record["signature"]
    with pytest.raises(IdentityError):
        Identity.parse(record)


def test_another_records_signature_is_rejected(alice: Keystore, bob: Keystore) -> None:
    with pytest.raises(IdentityError):
        Identity.parse(record_of(alice, signature=bob.identity.signature))


def test_forged_record_for_someone_elses_id_is_rejected(alice: Keystore, bob: Keystore) -> None:
    """Bob (the forger) claims Alice's ID with his own keys and a perfectly valid signature of his own."""
    forged = Identity(
        id=alice.iid,
        name=alice.identity.name,
        email=alice.identity.email,
        s_public_key=bob.identity.s_public_key,
        e_public_key=bob.identity.e_public_key,
        nonce=alice.identity.nonce + 1,
    )
    forged = forged.model_copy(update={"signature": bob.sign(forged.signed_content())})
    assert forged.signing_key.verify(forged.signed_content(), forged.signature or "")  # the signature is valid
    with pytest.raises(IdentityError, match="does not belong"):
        forged.verify()
    with pytest.raises(IdentityError):
        Identity.parse(forged.model_dump())

    # control: the same construction under the forger's own ID is a valid record
    honest = forged.model_copy(update={"id": bob.iid, "signature": None})
    honest = honest.model_copy(update={"signature": bob.sign(honest.signed_content())})
    assert Identity.parse(honest.model_dump()) == honest


def test_forged_record_with_the_victims_signing_key_but_forgers_encryption_key(alice: Keystore, bob: Keystore) -> None:
    """Keeping Alice's ID and signing key but swapping in Bob's encryption key needs Alice's signature."""
    forged = record_of(alice, e_public_key=bob.identity.e_public_key, nonce=5, signature=None)
    forged["signature"] = bob.sign(Identity.model_validate(forged).signed_content())
    with pytest.raises(IdentityError):
        Identity.parse(forged)


def _spki(curve: ec.EllipticCurve) -> str:
    der = (
        ec.generate_private_key(curve)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


MALFORMED: dict[str, Any] = {
    "none": None,
    "list": [],
    "string": "a record",
    "number": 5,
    "empty": {},
    "missing-name": {"drop": "name"},
    "missing-id": {"drop": "id"},
    "missing-nonce": {"drop": "nonce"},
    "extra-field": {"set": {"admin": True}},
    "short-id": {"set": {"id": "abc"}},
    "long-id": {"set": {"id": "a" * 65}},
    "negative-nonce": {"set": {"nonce": -1}},
    "text-nonce": {"set": {"nonce": "one"}},
    "name-not-string": {"set": {"name": 42}},
    "garbage-s-key": {"set": {"s_public_key": "AAAA"}},
    "non-base64-s-key": {"set": {"s_public_key": "not base64!"}},
    "garbage-e-key": {"set": {"e_public_key": "AAAA"}},
    "rsa-as-s-key": {"set": {"s_public_key": "<e_public_key>"}},
    "ec-as-e-key": {"set": {"e_public_key": "<s_public_key>"}},
    "p256-s-key": {"set": {"s_public_key": "<p256>"}},
    "unknown-algorithm-s-key": {"set": {"s_public_key": UNKNOWN_ALGORITHM_SPKI}},
    "unknown-algorithm-e-key": {"set": {"e_public_key": UNKNOWN_ALGORITHM_SPKI}},
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_parse_of_malformed_record_raises_identity_error(alice: Keystore, case: str) -> None:
    spec = MALFORMED[case]
    if isinstance(spec, dict) and ("drop" in spec or "set" in spec):
        data: Any = record_of(alice)
        data.pop(spec.get("drop", ""), None)
        for field, value in spec.get("set", {}).items():
            if value == "<e_public_key>":
                value = alice.identity.e_public_key
            elif value == "<s_public_key>":
                value = alice.identity.s_public_key
            elif value == "<p256>":
                value = _spki(ec.SECP256R1())
            data[field] = value
    else:
        data = spec
    with pytest.raises(IdentityError) as info:
        Identity.parse(data)
    # the error travels as a REST error envelope: it must serialise and not echo the input
    envelope = json.dumps(info.value.to_envelope())
    assert alice.identity.s_public_key not in envelope


# -- profile validation ----------------------------------------------------------------------------


def test_validate_profile_strips_and_accepts_unicode() -> None:
    assert validate_profile("  Zoë 王 Smith ", " zoe@example.org\n") == ("Zoë 王 Smith", "zoe@example.org")
    assert validate_profile("x" * 128, "a@b") == ("x" * 128, "a@b")


@pytest.mark.parametrize(
    "name",
    ["", "   ", "\t\n", "x" * 129, "a\x00b", "a\nb", "a\rb", "a\x1b[31mb", "a\x7fb", "a\x85b", "a\x9b2Jb"],
    ids=["empty", "spaces", "whitespace", "too-long", "nul", "newline", "cr", "esc", "del", "c1-nel", "c1-csi"],
)
def test_validate_profile_rejects_bad_names(name: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_profile(name, "a@example.org")
    assert info.value.details == {"field": "name"}


@pytest.mark.parametrize(
    "email",
    [
        "",
        "   ",
        "no-at-sign",
        "a@b@c",
        "a b@example.org",
        "a@",
        "@example.org",
        "a@" + "b" * 253,
        "a\x1b[31m@example.org",
        "a@example\x00.org",
        "a@exam\x7fple.org",
        "a\x9b@example.org",
    ],
    ids=["empty", "spaces", "no-at", "two-at", "space", "no-domain", "no-local", "too-long", "esc", "nul", "del", "c1"],
)
def test_validate_profile_rejects_bad_emails(email: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_profile("Alice", email)
    assert info.value.details == {"field": "email"}
