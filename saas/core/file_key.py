"""The key that opens a keystore file (`saas.core.keystore`), derived from its password with scrypt.

Only the standard library and `saas.core.errors`: a command can start deriving (~0.4 s of one core at the file's
N=2^17; scrypt releases the GIL) before it imports anything heavy, and open the keystore with the key later
(`Keystore.open`). The file is only read here, not checked: `Keystore.open` checks its identity and signature, and
that the key was derived for the KDF parameters the file holds when it is opened."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saas.core.errors import KeystoreCorruptedError, KeystoreError, KeystoreNotFoundError

__all__ = ["FORMAT", "FileKey", "derive_file_key", "keystore_format", "read_document", "scrypt_key"]

FORMAT = "saas-keystore/1"
KEY_SIZE = 32
MAX_MEMORY = 1024 * 1024 * 1024  # scrypt needs 128 * r * n bytes (128 MiB at the keystore's parameters)


def scrypt_key(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    """A 256-bit key from a password with scrypt (raises ValueError for parameters scrypt refuses)."""
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=MAX_MEMORY, dklen=KEY_SIZE)


@dataclass(frozen=True)
class FileKey:
    """A keystore file's key and the KDF record (`kdf` of the file) it was derived for."""

    kdf: dict[str, Any]
    key: bytes = field(repr=False)


def read_document(path: Path) -> dict[str, Any]:
    """A keystore file's JSON object. Raises `KeystoreNotFoundError`, `KeystoreError` (unreadable) or
    `KeystoreCorruptedError` (not a JSON object)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeystoreNotFoundError(f"No keystore at '{path}'", {"path": str(path)}) from None
    except OSError as e:
        raise KeystoreError(f"Cannot read keystore '{path}': {e.strerror}", {"path": str(path)}) from e
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise KeystoreCorruptedError(f"Keystore '{path}' is malformed or was modified", {"path": str(path)}) from e
    if not isinstance(doc, dict):
        raise KeystoreCorruptedError(f"Keystore '{path}' is malformed or was modified", {"path": str(path)})
    return doc


def keystore_format(path: Path) -> str | None:
    """The `format` a keystore file states (None if it is unreadable or states none): `FORMAT` for ours."""
    try:
        value = read_document(path).get("format")
    except KeystoreError:
        return None
    return value if isinstance(value, str) else None


def derive_file_key(path: str | Path, password: str) -> FileKey:
    """The key of the keystore file at `path` for `password` (right or wrong: `Keystore.open` tells). Raises
    `KeystoreNotFoundError`, or `KeystoreCorruptedError` for a file that is not a keystore or has unusable KDF
    parameters."""
    path = Path(path)
    doc = read_document(path)
    if doc.get("format") != FORMAT:
        raise KeystoreCorruptedError(f"'{path}' is not a keystore (unknown format)", {"path": str(path)})
    kdf = doc.get("kdf")
    if (
        not isinstance(kdf, dict)
        or kdf.get("name") != "scrypt"
        or not all(isinstance(kdf.get(k), int) for k in ("n", "r", "p"))
    ):
        raise KeystoreCorruptedError(f"Keystore '{path}' has an unknown key derivation", {"path": str(path)})
    try:
        key = scrypt_key(password, base64.b64decode(kdf["salt"], validate=True), kdf["n"], kdf["r"], kdf["p"])
    except (ValueError, TypeError, KeyError, binascii.Error, MemoryError) as e:
        raise KeystoreCorruptedError(
            f"Keystore '{path}' has invalid key derivation parameters", {"path": str(path)}
        ) from e
    return FileKey(dict(kdf), key)
