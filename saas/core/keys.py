"""Key material and primitives: the only module that imports `cryptography`.

- Signing: EC secp384r1, ECDSA with SHA-384 (`ECKeyPair`, `ECPublicKey`). Signatures are base64 of DER.
- Key wrapping: RSA-4096, OAEP with SHA-256 (`RSAKeyPair`, `RSAPublicKey`); used only to wrap symmetric keys.
- Symmetric: AES-256-GCM for bytes (`aes_encrypt`/`aes_decrypt`) and a chunked streaming format for files of any
  size (`iter_encrypt`/`iter_decrypt`, `encrypt_file`/`decrypt_file`) in which every chunk is authenticated and
  bound to its position and to whether it is the last one, so truncation, reordering, appending and tampering
  are all detected.
- Password-derived keys: scrypt (`derive_key`).

Public keys travel as base64 of their DER SubjectPublicKeyInfo; fingerprints are SHA-256 hex of that DER.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from saas.core.errors import CryptoError, DecryptionError
from saas.core.file_key import scrypt_key

__all__ = [
    "STREAM_CHUNK_SIZE",
    "ECKeyPair",
    "ECPublicKey",
    "RSAKeyPair",
    "RSAPublicKey",
    "aes_decrypt",
    "aes_encrypt",
    "b64d",
    "b64e",
    "decrypt_file",
    "derive_key",
    "encrypt_file",
    "hybrid_decrypt",
    "hybrid_encrypt",
    "iter_decrypt",
    "iter_encrypt",
    "legacy_rsa_decrypt",
    "legacy_verify",
    "load_password_protected_rsa",
    "random_key",
]

KEY_SIZE = 32  # AES-256
NONCE_SIZE = 12
TAG_SIZE = 16
RSA_BITS = 4096
STREAM_MAGIC = b"SAASENC1"
STREAM_CHUNK_SIZE = 1024 * 1024
_STREAM_HEADER = struct.Struct(">8sI7s")  # magic, chunk size, nonce prefix
_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as e:
        raise CryptoError("Invalid base64 data") from e


def _public_der(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _private_der(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# -- signing (EC secp384r1 / ECDSA-SHA384) ---------------------------------------------------------


class ECPublicKey:
    """A signature verifier."""

    def __init__(self, key: ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP384R1):
            raise CryptoError("Signing keys must be EC secp384r1")
        self._key = key
        self.der = _public_der(key)

    @classmethod
    def from_b64(cls, text: str) -> ECPublicKey:
        try:
            key = serialization.load_der_public_key(b64d(text))
        except (ValueError, UnsupportedAlgorithm) as e:
            raise CryptoError("Invalid EC public key") from e
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise CryptoError("Not an EC public key")
        return cls(key)

    @property
    def b64(self) -> str:
        return b64e(self.der)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def info(self) -> str:
        return f"EC/secp384r1/384/{self.fingerprint}"

    def verify(self, message: bytes, signature: str) -> bool:
        try:
            self._key.verify(base64.b64decode(signature, validate=True), message, ec.ECDSA(hashes.SHA384()))
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


class ECKeyPair(ECPublicKey):
    """A signing key pair."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey):
        super().__init__(private_key.public_key())
        self._private = private_key

    @classmethod
    def generate(cls) -> ECKeyPair:
        return cls(ec.generate_private_key(ec.SECP384R1()))

    @classmethod
    def from_private_b64(cls, text: str) -> ECKeyPair:
        try:
            key = serialization.load_der_private_key(b64d(text), password=None)
        except (ValueError, UnsupportedAlgorithm) as e:
            raise CryptoError("Invalid EC private key") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CryptoError("Not an EC private key")
        return cls(key)

    @property
    def private_b64(self) -> str:
        return b64e(_private_der(self._private))

    @property
    def public(self) -> ECPublicKey:
        return ECPublicKey(self._key)

    def sign(self, message: bytes) -> str:
        return b64e(self._private.sign(message, ec.ECDSA(hashes.SHA384())))


# -- key wrapping (RSA-4096 / OAEP-SHA256) ---------------------------------------------------------


class RSAPublicKey:
    """Wraps symmetric keys for the holder of the matching private key."""

    def __init__(self, key: rsa.RSAPublicKey):
        self._key = key
        self.der = _public_der(key)

    @classmethod
    def from_b64(cls, text: str) -> RSAPublicKey:
        try:
            key = serialization.load_der_public_key(b64d(text))
        except (ValueError, UnsupportedAlgorithm) as e:
            raise CryptoError("Invalid RSA public key") from e
        if not isinstance(key, rsa.RSAPublicKey):
            raise CryptoError("Not an RSA public key")
        return cls(key)

    @property
    def b64(self) -> str:
        return b64e(self.der)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    @property
    def info(self) -> str:
        return f"RSA/{self._key.key_size}/{self.fingerprint}"

    def wrap(self, key: bytes) -> bytes:
        if len(key) > 190:  # OAEP-SHA256 with 4096 bits holds at most 446 bytes; we only ever wrap keys
            raise CryptoError("RSA wraps keys only; use hybrid encryption for data")
        return self._key.encrypt(key, _OAEP)


class RSAKeyPair(RSAPublicKey):
    """An encryption key pair."""

    def __init__(self, private_key: rsa.RSAPrivateKey):
        super().__init__(private_key.public_key())
        self._private = private_key

    @classmethod
    def generate(cls) -> RSAKeyPair:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS))

    @classmethod
    def from_private_b64(cls, text: str) -> RSAKeyPair:
        # Private keys only ever come out of an authenticated (AES-GCM) keystore blob, so the slow RSA
        # consistency check (~0.2 s for 4096 bits) adds nothing.
        try:
            key = serialization.load_der_private_key(b64d(text), password=None, unsafe_skip_rsa_key_validation=True)
        except (ValueError, UnsupportedAlgorithm) as e:
            raise CryptoError("Invalid RSA private key") from e
        if not isinstance(key, rsa.RSAPrivateKey):
            raise CryptoError("Not an RSA private key")
        return cls(key)

    @property
    def private_b64(self) -> str:
        return b64e(_private_der(self._private))

    @property
    def public(self) -> RSAPublicKey:
        return RSAPublicKey(self._key)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return self._private.decrypt(wrapped, _OAEP)
        except ValueError as e:
            raise DecryptionError("Could not unwrap key: it was wrapped for another key or was modified") from e


# -- keys written by the original middleware (saas.core.original_keystore reads them) ----------------


def load_password_protected_rsa(der: bytes, password: str) -> RSAKeyPair:
    """An RSA private key stored as password-protected PKCS#8 DER. Raises `DecryptionError` for a wrong password,
    `CryptoError` for anything that is not such a key."""
    try:
        key = serialization.load_der_private_key(der, password=password.encode("utf-8"))
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        # cryptography reports a wrong password and a damaged key alike; the caller checks the file's shape first
        raise DecryptionError("Could not open the private key: wrong password?") from e
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CryptoError("Not an RSA private key")
    return RSAKeyPair(key)


def legacy_rsa_decrypt(holder: RSAKeyPair, data: bytes) -> bytes:
    """The original's RSA encryption: the message in chunks, each RSA-OAEP(SHA-256) on its own."""
    size = holder._private.key_size // 8
    if not data or len(data) % size:
        raise DecryptionError("Encrypted data has the wrong length")
    return b"".join(holder.unwrap(data[i : i + size]) for i in range(0, len(data), size))


def legacy_verify(key: ECPublicKey, message: bytes, signature_hex: str) -> bool:
    """The original's signatures: hex of DER ECDSA with SHA-256."""
    try:
        key._key.verify(bytes.fromhex(signature_hex), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# -- symmetric -------------------------------------------------------------------------------------


def random_key() -> bytes:
    """A fresh AES-256 key."""
    return os.urandom(KEY_SIZE)


def derive_key(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    """A 256-bit key from a password with scrypt (`saas.core.file_key.scrypt_key`, which keystores use)."""
    return scrypt_key(password, salt, n, r, p)


def aes_encrypt(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """AES-256-GCM; returns nonce || ciphertext || tag."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad or None)


def aes_decrypt(key: bytes, data: bytes, aad: bytes = b"") -> bytes:
    if len(data) < NONCE_SIZE + TAG_SIZE:
        raise DecryptionError("Ciphertext is too short")
    try:
        return AESGCM(key).decrypt(data[:NONCE_SIZE], data[NONCE_SIZE:], aad or None)
    except InvalidTag as e:
        raise DecryptionError("Decryption failed: wrong key or modified data") from e


def _chunk_nonce(prefix: bytes, index: int, final: bool) -> bytes:
    if index >= 2**32:
        raise CryptoError("Stream too long")
    return prefix + struct.pack(">IB", index, 1 if final else 0)


def _read_full(src: BinaryIO, size: int) -> bytes:
    """Read exactly `size` bytes unless the stream ends first (raw streams may return short reads)."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        part = src.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def iter_encrypt(src: BinaryIO, key: bytes, chunk_size: int = STREAM_CHUNK_SIZE) -> Iterator[bytes]:
    """Encrypt a stream chunk by chunk: yields the header, then one sealed chunk at a time."""
    prefix = os.urandom(7)
    header = _STREAM_HEADER.pack(STREAM_MAGIC, chunk_size, prefix)
    aead = AESGCM(key)
    yield header
    index = 0
    current = _read_full(src, chunk_size)
    while True:
        following = _read_full(src, chunk_size)
        final = not following
        yield aead.encrypt(_chunk_nonce(prefix, index, final), current, header)
        if final:
            return
        current = following
        index += 1


def iter_decrypt(src: BinaryIO, key: bytes) -> Iterator[bytes]:
    """Decrypt a stream made by `iter_encrypt`, yielding verified plaintext chunks.

    Raises `DecryptionError` at the first chunk that fails; a consumer writing to disk must discard what it
    wrote (a truncated stream is only known to be truncated at its end)."""
    header = _read_full(src, _STREAM_HEADER.size)
    if len(header) != _STREAM_HEADER.size:
        raise DecryptionError("Encrypted stream is truncated (no header)")
    magic, chunk_size, prefix = _STREAM_HEADER.unpack(header)
    if magic != STREAM_MAGIC or not 0 < chunk_size <= 64 * 1024 * 1024:
        raise DecryptionError("Not an encrypted stream (bad header)")
    aead = AESGCM(key)
    block = chunk_size + TAG_SIZE
    index = 0
    current = _read_full(src, block)
    while True:
        following = _read_full(src, block) if len(current) == block else b""
        final = not following
        try:
            yield aead.decrypt(_chunk_nonce(prefix, index, final), current, header)
        except InvalidTag as e:
            raise DecryptionError(
                "Encrypted stream is truncated, reordered or modified, or the key is wrong", {"chunk": index}
            ) from e
        if final:
            return
        current = following
        index += 1


def _transform_file(source: Path, destination: Path, chunks: Iterator[bytes]) -> None:
    tmp = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)


def encrypt_file(source: str | Path, destination: str | Path, key: bytes) -> None:
    """Encrypt a file of any size with constant memory; the destination appears only when complete."""
    with open(source, "rb") as src:
        _transform_file(Path(source), Path(destination), iter_encrypt(src, key))


def decrypt_file(source: str | Path, destination: str | Path, key: bytes) -> None:
    """Decrypt a file made by `encrypt_file`; on any failure the destination is not created."""
    with open(source, "rb") as src:
        _transform_file(Path(source), Path(destination), iter_decrypt(src, key))


# -- hybrid (RSA-wrapped AES key + AES-GCM) --------------------------------------------------------

_HYBRID_MAGIC = b"SAASHYB1"


def hybrid_encrypt(recipient: RSAPublicKey, data: bytes) -> bytes:
    """Encrypt bytes of any size for the holder of `recipient`'s private key."""
    key = random_key()
    wrapped = recipient.wrap(key)
    return _HYBRID_MAGIC + struct.pack(">H", len(wrapped)) + wrapped + aes_encrypt(key, data, _HYBRID_MAGIC)


def hybrid_decrypt(holder: RSAKeyPair, data: bytes) -> bytes:
    if not data.startswith(_HYBRID_MAGIC) or len(data) < len(_HYBRID_MAGIC) + 2:
        raise DecryptionError("Not hybrid-encrypted data")
    offset = len(_HYBRID_MAGIC)
    (size,) = struct.unpack(">H", data[offset : offset + 2])
    wrapped = data[offset + 2 : offset + 2 + size]
    return aes_decrypt(holder.unwrap(wrapped), data[offset + 2 + size :], _HYBRID_MAGIC)
