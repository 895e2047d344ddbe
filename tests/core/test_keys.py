"""Key material and primitives: EC signatures, RSA key wrapping, AES-GCM, hybrid encryption, scrypt."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from saas.core import keys
from saas.core.errors import CryptoError, DecryptionError
from saas.core.keys import ECKeyPair, ECPublicKey, RSAKeyPair, RSAPublicKey
from saas.core.keystore import Keystore

# A DER SubjectPublicKeyInfo whose algorithm OID (1.2.3.4.5) no library knows.
UNKNOWN_ALGORITHM_SPKI = base64.b64encode(bytes.fromhex("300b300606042a030405030100")).decode()


def flip_byte(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def spki_b64(public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def ec_pair() -> ECKeyPair:
    return ECKeyPair.generate()


@pytest.fixture(scope="module")
def other_ec_pair() -> ECKeyPair:
    return ECKeyPair.generate()


# -- base64 ----------------------------------------------------------------------------------------


def test_b64_round_trip() -> None:
    data = bytes(range(256))
    assert keys.b64d(keys.b64e(data)) == data


@pytest.mark.parametrize("text", ["not base64!", "abc", "é"])
def test_b64d_rejects_invalid_input(text: str) -> None:
    with pytest.raises(CryptoError):
        keys.b64d(text)


# -- EC signatures ---------------------------------------------------------------------------------


def test_ec_sign_verify_round_trip(ec_pair: ECKeyPair) -> None:
    message = b"the message"
    signature = ec_pair.sign(message)
    assert ec_pair.verify(message, signature)
    assert ec_pair.public.verify(message, signature)
    # the public key travels as base64 DER and still verifies
    assert ECPublicKey.from_b64(ec_pair.b64).verify(message, signature)


def test_ec_private_key_round_trip(ec_pair: ECKeyPair) -> None:
    restored = ECKeyPair.from_private_b64(ec_pair.private_b64)
    assert restored.der == ec_pair.der
    assert ec_pair.verify(b"m", restored.sign(b"m"))


def test_ec_verify_rejects_modified_message(ec_pair: ECKeyPair) -> None:
    signature = ec_pair.sign(b"pay 10 to bob")
    assert not ec_pair.verify(b"pay 99 to bob", signature)
    assert not ec_pair.verify(b"", signature)


@pytest.mark.parametrize("position", [0, 10, -1])
def test_ec_verify_rejects_modified_signature(ec_pair: ECKeyPair, position: int) -> None:
    message = b"message"
    raw = base64.b64decode(ec_pair.sign(message))
    tampered = base64.b64encode(flip_byte(raw, position % len(raw))).decode()
    assert not ec_pair.verify(message, tampered)


@pytest.mark.parametrize("signature", ["", "not base64 at all!", "AAAA", "é", "=" * 8])
def test_ec_verify_rejects_garbage_signature(ec_pair: ECKeyPair, signature: str) -> None:
    assert ec_pair.verify(b"message", signature) is False


def test_ec_verify_rejects_another_keys_signature(ec_pair: ECKeyPair, other_ec_pair: ECKeyPair) -> None:
    message = b"message"
    assert not ec_pair.verify(message, other_ec_pair.sign(message))
    assert not other_ec_pair.verify(message, ec_pair.sign(message))


def test_ec_key_info_and_fingerprint(ec_pair: ECKeyPair, other_ec_pair: ECKeyPair) -> None:
    assert re.fullmatch(r"EC/secp384r1/384/[0-9a-f]{64}", ec_pair.info)
    assert ec_pair.info.endswith(ec_pair.fingerprint)
    assert ec_pair.fingerprint != other_ec_pair.fingerprint


@pytest.mark.parametrize(
    "make_text",
    [
        lambda: "AAAA",
        lambda: "not base64!",
        lambda: spki_b64(ec.generate_private_key(ec.SECP256R1()).public_key()),  # wrong curve
        lambda: spki_b64(ed25519.Ed25519PrivateKey.generate().public_key()),  # wrong algorithm
        lambda: UNKNOWN_ALGORITHM_SPKI,
    ],
    ids=["short-der", "bad-base64", "p256", "ed25519", "unknown-oid"],
)
def test_ec_public_key_from_b64_rejects_non_secp384r1(make_text) -> None:
    with pytest.raises(CryptoError):
        ECPublicKey.from_b64(make_text())


def test_ec_public_key_from_b64_rejects_rsa_key(rsa_pair: RSAKeyPair) -> None:
    with pytest.raises(CryptoError):
        ECPublicKey.from_b64(rsa_pair.b64)


# -- RSA key wrapping ------------------------------------------------------------------------------


def test_rsa_wrap_unwrap_round_trip(rsa_pair: RSAKeyPair) -> None:
    key = keys.random_key()
    wrapped = rsa_pair.public.wrap(key)
    assert key not in wrapped
    assert rsa_pair.unwrap(wrapped) == key
    # the public key travels as base64 DER
    assert rsa_pair.unwrap(RSAPublicKey.from_b64(rsa_pair.b64).wrap(key)) == key


def test_rsa_wrap_is_randomised(rsa_pair: RSAKeyPair) -> None:
    key = keys.random_key()
    assert rsa_pair.wrap(key) != rsa_pair.wrap(key)


def test_rsa_private_key_round_trip(rsa_pair: RSAKeyPair) -> None:
    restored = RSAKeyPair.from_private_b64(rsa_pair.private_b64)
    assert restored.der == rsa_pair.der
    key = keys.random_key()
    assert restored.unwrap(rsa_pair.wrap(key)) == key


def test_rsa_unwrap_with_wrong_key_raises(rsa_pair: RSAKeyPair, other_rsa_pair: RSAKeyPair) -> None:
    wrapped = rsa_pair.wrap(keys.random_key())
    with pytest.raises(DecryptionError):
        other_rsa_pair.unwrap(wrapped)


@pytest.mark.parametrize("change", ["flip-first", "flip-last", "truncate", "empty"])
def test_rsa_unwrap_of_modified_envelope_raises(rsa_pair: RSAKeyPair, change: str) -> None:
    wrapped = rsa_pair.wrap(keys.random_key())
    modified = {
        "flip-first": flip_byte(wrapped, 0),
        "flip-last": flip_byte(wrapped, len(wrapped) - 1),
        "truncate": wrapped[:-1],
        "empty": b"",
    }[change]
    with pytest.raises(DecryptionError):
        rsa_pair.unwrap(modified)


def test_rsa_wrap_refuses_large_payloads(rsa_pair: RSAKeyPair) -> None:
    with pytest.raises(CryptoError):
        rsa_pair.wrap(b"x" * 191)
    with pytest.raises(CryptoError):
        rsa_pair.wrap(b"x" * 4096)
    assert rsa_pair.unwrap(rsa_pair.wrap(b"y" * 190)) == b"y" * 190


def test_rsa_key_info(rsa_pair: RSAKeyPair) -> None:
    assert re.fullmatch(r"RSA/4096/[0-9a-f]{64}", rsa_pair.info)


def test_rsa_public_key_from_b64_rejects_other_keys(ec_pair: ECKeyPair) -> None:
    for text in (ec_pair.b64, "AAAA", "not base64!", UNKNOWN_ALGORITHM_SPKI):
        with pytest.raises(CryptoError):
            RSAPublicKey.from_b64(text)


def test_private_key_loaders_reject_garbage(ec_pair: ECKeyPair, rsa_pair: RSAKeyPair) -> None:
    with pytest.raises(CryptoError):
        ECKeyPair.from_private_b64(rsa_pair.private_b64)
    with pytest.raises(CryptoError):
        RSAKeyPair.from_private_b64(ec_pair.private_b64)
    for text in ("AAAA", "not base64!"):
        with pytest.raises(CryptoError):
            ECKeyPair.from_private_b64(text)
        with pytest.raises(CryptoError):
            RSAKeyPair.from_private_b64(text)


# -- AES-256-GCM -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 16, 1000])
def test_aes_round_trip(size: int) -> None:
    key = keys.random_key()
    plaintext = bytes(range(256)) * (size // 256) + bytes(size % 256)
    ciphertext = keys.aes_encrypt(key, plaintext, b"aad")
    assert len(ciphertext) == len(plaintext) + keys.NONCE_SIZE + keys.TAG_SIZE
    assert keys.aes_decrypt(key, ciphertext, b"aad") == plaintext
    assert keys.aes_decrypt(key, keys.aes_encrypt(key, plaintext)) == plaintext


def test_aes_uses_fresh_nonces() -> None:
    key = keys.random_key()
    assert keys.aes_encrypt(key, b"same") != keys.aes_encrypt(key, b"same")


def test_aes_tamper_anywhere_raises() -> None:
    key = keys.random_key()
    ciphertext = keys.aes_encrypt(key, b"some secret plaintext", b"aad")
    # every single byte: nonce, ciphertext body and tag
    for index in range(len(ciphertext)):
        with pytest.raises(DecryptionError):
            keys.aes_decrypt(key, flip_byte(ciphertext, index), b"aad")


def test_aes_wrong_key_raises() -> None:
    ciphertext = keys.aes_encrypt(keys.random_key(), b"secret")
    with pytest.raises(DecryptionError):
        keys.aes_decrypt(keys.random_key(), ciphertext)


@pytest.mark.parametrize(("encrypt_aad", "decrypt_aad"), [(b"aad", b"aaD"), (b"aad", b""), (b"", b"aad")])
def test_aes_wrong_aad_raises(encrypt_aad: bytes, decrypt_aad: bytes) -> None:
    key = keys.random_key()
    ciphertext = keys.aes_encrypt(key, b"secret", encrypt_aad)
    with pytest.raises(DecryptionError):
        keys.aes_decrypt(key, ciphertext, decrypt_aad)


@pytest.mark.parametrize("length", [0, 1, keys.NONCE_SIZE + keys.TAG_SIZE - 1])
def test_aes_too_short_raises(length: int) -> None:
    with pytest.raises(DecryptionError):
        keys.aes_decrypt(keys.random_key(), bytes(length))


def test_random_key_is_aes256_and_random() -> None:
    assert len(keys.random_key()) == 32
    assert keys.random_key() != keys.random_key()


def test_derive_key_is_deterministic_and_depends_on_inputs() -> None:
    salt = b"s" * 16
    key = keys.derive_key("password", salt, 2**4, 8, 1)
    assert len(key) == 32
    assert keys.derive_key("password", salt, 2**4, 8, 1) == key
    assert keys.derive_key("Password", salt, 2**4, 8, 1) != key
    assert keys.derive_key("password", b"t" * 16, 2**4, 8, 1) != key
    assert keys.derive_key("password", salt, 2**5, 8, 1) != key


# -- hybrid encryption -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 190, 191, 100_000])
def test_hybrid_round_trip(rsa_pair: RSAKeyPair, size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    encrypted = keys.hybrid_encrypt(rsa_pair.public, data)
    if size >= 16:  # long enough not to turn up in random ciphertext by chance
        assert data not in encrypted
    assert keys.hybrid_decrypt(rsa_pair, encrypted) == data


def test_hybrid_decrypt_with_wrong_key_raises(rsa_pair: RSAKeyPair, other_rsa_pair: RSAKeyPair) -> None:
    encrypted = keys.hybrid_encrypt(rsa_pair.public, b"secret")
    with pytest.raises(DecryptionError):
        keys.hybrid_decrypt(other_rsa_pair, encrypted)


def test_hybrid_decrypt_of_modified_data_raises(rsa_pair: RSAKeyPair) -> None:
    encrypted = keys.hybrid_encrypt(rsa_pair.public, b"secret data")
    for index in (0, 8, 9, 10, 200, len(encrypted) - 20, len(encrypted) - 1):  # magic, length, key, body, tag
        with pytest.raises(DecryptionError):
            keys.hybrid_decrypt(rsa_pair, flip_byte(encrypted, index))
    for length in (0, 9, 10, 100, len(encrypted) - 1):
        with pytest.raises(DecryptionError):
            keys.hybrid_decrypt(rsa_pair, encrypted[:length])


def test_identity_encrypt_and_keystore_decrypt(alice: Keystore, bob: Keystore) -> None:
    data = b"credentials for a node" * 100
    encrypted = alice.identity.encrypt(data)
    assert alice.decrypt(encrypted) == data
    with pytest.raises(DecryptionError):
        bob.decrypt(encrypted)
    assert alice.decrypt(alice.encrypt(b"to myself")) == b"to myself"


def test_identity_wrap_key_and_keystore_unwrap_key(alice: Keystore, bob: Keystore) -> None:
    key = keys.random_key()
    envelope = alice.identity.wrap_key(key)
    assert alice.unwrap_key(envelope) == key
    with pytest.raises(DecryptionError):
        bob.unwrap_key(envelope)
