"""Keystores written by the original SaaS Middleware (0.6.x): recognise, read and convert them.

The original file `<dir>/<old-iid>.json` is `{iid, profile: {name, email}, nonce, signature, assets}` where
`assets["master-key"]` is an RSA key stored as password-protected PKCS#8 DER (base64, field `pppk`) and every
other asset is encrypted with that master key (RSA-OAEP-SHA256 in key-sized chunks, base64): the signing key
(EC secp384r1) and the encryption key (RSA) as base64 PKCS#8 DER, the content keys as JSON `{obj_id: key}`, the
GitHub and SSH credentials as JSON `{name: {...}}`. `signature` is ECDSA-SHA256 (hex DER) by the signing key over
SHA-256 of the canonical JSON of every other field.

Converting keeps the keys, profile, content keys and credentials. The old ID was random, ours is derived from
the signing key, so the identity gets a new ID; the new keystore records the old one (`imported_from`). The
original file is left as it was. Converting twice gives the same keystore: the new ID only depends on the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from saas.core.errors import (
    CryptoError,
    DecryptionError,
    InvalidInputError,
    KeystoreCorruptedError,
    KeystoreError,
    KeystoreNotFoundError,
    WrongPasswordError,
)
from saas.core.identity import derive_identity_id
from saas.core.keys import (
    ECKeyPair,
    RSAKeyPair,
    b64d,
    legacy_rsa_decrypt,
    legacy_verify,
    load_password_protected_rsa,
)
from saas.core.keystore import Keystore, list_keystores
from saas.core.schemas import GithubCredentials, SSHCredentials
from saas.core.signing import canonical_json

__all__ = [
    "OriginalKeystore",
    "OriginalKeystoreInfo",
    "find_original_keystores",
    "import_original_keystore",
    "is_original_keystore",
    "open_original_keystore",
    "read_original_keystore",
]

_REQUIRED_ASSETS = ("master-key", "signing-key", "encryption-key")


@dataclass(frozen=True)
class OriginalKeystoreInfo:
    """What an original keystore shows without its password."""

    path: Path
    iid: str
    name: str
    email: str


@dataclass
class OriginalKeystore:
    """The decrypted content of an original keystore."""

    info: OriginalKeystoreInfo
    s_key: ECKeyPair
    e_key: RSAKeyPair
    content_keys: dict[str, str] = field(default_factory=dict)
    github_credentials: dict[str, GithubCredentials] = field(default_factory=dict)
    ssh_credentials: dict[str, SSHCredentials] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # assets that have no equivalent here, with the reason

    @property
    def new_iid(self) -> str:
        return derive_identity_id(self.s_key.der)


def _parse(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or "format" in doc:
        return None
    if not isinstance(doc.get("iid"), str) or not isinstance(doc.get("assets"), dict):
        return None
    if not isinstance(doc.get("profile"), dict) or not isinstance(doc.get("signature"), str):
        return None
    return doc


def is_original_keystore(path: str | Path) -> bool:
    """True if the file has the shape of a keystore written by the original middleware."""
    return _parse(Path(path)) is not None


def _info(path: Path, doc: dict[str, Any]) -> OriginalKeystoreInfo:
    profile = doc["profile"]
    return OriginalKeystoreInfo(path, doc["iid"], str(profile.get("name", "")), str(profile.get("email", "")))


def find_original_keystores(directory: str | Path, unconverted_only: bool = True) -> list[OriginalKeystoreInfo]:
    """The original keystores in a directory (no password needed); by default only those not converted yet."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    converted = {_imported_from(path) for path, _ in list_keystores(directory)} if unconverted_only else set()
    found = []
    for path in sorted(directory.glob("*.json")):
        doc = _parse(path)
        if doc is not None and doc["iid"] not in converted:
            found.append(_info(path, doc))
    return found


def _imported_from(path: Path) -> str | None:
    try:
        value = json.loads(path.read_bytes()).get("imported_from")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def find_converted(directory: str | Path, old_iid: str) -> Path | None:
    """The keystore in `directory` converted from the original identity `old_iid`, if there is one."""
    for path, _ in list_keystores(directory):
        if _imported_from(path) == old_iid:
            return path
    return None


def _decrypt_json(master: RSAKeyPair, asset: dict[str, Any], key: str) -> Any:
    return json.loads(legacy_rsa_decrypt(master, b64d(asset[key])))


def read_original_keystore(path: str | Path, password: str) -> OriginalKeystore:
    """Decrypt an original keystore. Raises `KeystoreNotFoundError`, `KeystoreCorruptedError` (not an original
    keystore, damaged, or its signature fails) or `WrongPasswordError`."""
    path = Path(path)
    if not path.is_file():
        raise KeystoreNotFoundError(f"No keystore at '{path}'", {"path": str(path)})
    doc = _parse(path)
    if doc is None:
        raise KeystoreCorruptedError(f"'{path}' is not a keystore of the original middleware", {"path": str(path)})
    assets = doc["assets"]
    details = {"path": str(path)}
    if any(not isinstance(assets.get(name), dict) for name in _REQUIRED_ASSETS):
        raise KeystoreCorruptedError(f"Original keystore '{path}' lacks its keys", details)
    try:
        master = load_password_protected_rsa(b64d(assets["master-key"]["pppk"]), password)
    except DecryptionError:
        raise WrongPasswordError(f"Wrong password for keystore '{path.stem}'", details) from None
    except (CryptoError, KeyError, TypeError) as e:
        raise KeystoreCorruptedError(f"Original keystore '{path}' has an unreadable master key", details) from e
    try:
        s_key = ECKeyPair.from_private_b64(
            legacy_rsa_decrypt(master, b64d(assets["signing-key"]["private_key"])).decode()
        )
        e_key = RSAKeyPair.from_private_b64(
            legacy_rsa_decrypt(master, b64d(assets["encryption-key"]["private_key"])).decode()
        )
        content = {k: v for k, v in doc.items() if k != "signature"}
        if not legacy_verify(s_key.public, hashlib.sha256(canonical_json(content)).digest(), doc["signature"]):
            raise KeystoreCorruptedError(f"Original keystore '{path}' was modified (signature check failed)", details)
        result = OriginalKeystore(_info(path, doc), s_key, e_key)
        _read_assets(master, assets, result)
    except KeystoreCorruptedError:
        raise
    except (CryptoError, KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
        raise KeystoreCorruptedError(f"Original keystore '{path}' holds unreadable assets", details) from e
    return result


def _read_assets(master: RSAKeyPair, assets: dict[str, Any], result: OriginalKeystore) -> None:
    for name, asset in assets.items():
        kind = asset.get("type") if isinstance(asset, dict) else None
        if kind == "ContentKeysAsset":
            result.content_keys.update(
                {str(k): str(v) for k, v in _decrypt_json(master, asset, "content_keys").items()}
            )
        elif kind == "GithubCredentialsAsset":
            for key, value in _decrypt_json(master, asset, "credentials").items():
                result.github_credentials[key] = GithubCredentials.model_validate(
                    {"login": value["login"], "personal_access_token": value["personal_access_token"]}
                )
        elif kind == "SSHCredentialsAsset":
            for key, value in _decrypt_json(master, asset, "credentials").items():
                if value.get("key_is_password"):  # we log in with keys only
                    result.skipped.append(f"SSH credentials '{key}': a password, not a key")
                    continue
                try:
                    result.ssh_credentials[key] = SSHCredentials.model_validate(
                        {"host": value["host"], "login": value["login"], "key": value["key"]}
                    )
                except ValidationError:
                    result.skipped.append(f"SSH credentials '{key}': incomplete")
        elif name not in _REQUIRED_ASSETS:
            result.skipped.append(f"asset '{name}' of type {kind!r}: no equivalent")


def _assets_of(original: OriginalKeystore) -> dict[str, dict[str, Any]]:
    def plain(model: Any) -> dict[str, Any]:
        return {k: v.get_secret_value() if hasattr(v, "get_secret_value") else v for k, v in model if v is not None}

    return {
        "content_keys": dict(original.content_keys),
        "github_credentials": {k: plain(v) for k, v in original.github_credentials.items()},
        "ssh_credentials": {k: plain(v) for k, v in original.ssh_credentials.items()},
    }


def import_original_keystore(
    path: str | Path, password: str, keystore_dir: str | Path | None = None, new_password: str | None = None
) -> tuple[OriginalKeystore, Keystore]:
    """Convert an original keystore into `<keystore_dir>/<new-iid>.json` (default: next to it), protected by
    `new_password` (default: the same password). If that keystore exists already it is opened, not rewritten."""
    original = read_original_keystore(path, password)
    directory = Path(keystore_dir) if keystore_dir is not None else Path(path).parent
    target = directory / f"{original.new_iid}.json"
    if target.exists():
        keystore = Keystore.load(target, new_password or password)
        if keystore.imported_from not in (None, original.info.iid):
            raise KeystoreError(f"'{target}' was converted from another original keystore", {"path": str(target)})
        return original, keystore
    if not original.info.name.strip():
        raise InvalidInputError("The original keystore has no name: set one with the original CLI first")
    try:
        keystore = Keystore.create_from_keys(
            directory,
            original.info.name,
            original.info.email,
            new_password or password,
            original.s_key,
            original.e_key,
            _assets_of(original),
            imported_from=original.info.iid,
        )
    except OSError as e:
        raise KeystoreError(f"Cannot write the converted keystore to '{directory}': {e.strerror}") from e
    return original, keystore


def open_original_keystore(path: str | Path, password: str) -> Keystore:
    """`Keystore.load` on an original keystore: the converted keystore next to it (made now if need be)."""
    return import_original_keystore(path, password)[1]
