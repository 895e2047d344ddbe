"""Password-protected keystores: one identity, its private keys and its assets in one signed file (DESIGN §4).

File `<dir>/<iid>.json`, mode 0600, always written atomically:

    {"format": "saas-keystore/1",
     "identity": {...public identity record...},
     "kdf": {"name": "scrypt", "salt", "n", "r", "p"},
     "secrets": base64(AES-256-GCM(password key, {s_private_key, e_private_key, assets}, aad=header)),
     "signature": ECDSA over the canonical JSON of every other field}

Loading checks, in order: well-formed JSON (else `KeystoreCorruptedError`), a valid identity record whose ID is
the file's name, the file signature (else `KeystoreCorruptedError`: modified outside this program), then the
password (else `WrongPasswordError`). Because the signature is checked first, a decryption failure can only mean
a wrong password. The password's key is derived by `derive_file_key` (`saas.core.file_key`: standard library only,
so a caller may start it in a thread before importing this module) and `Keystore.open` opens the file with it.

Assets (`content_keys`, `ssh_credentials`, `github_credentials`) are saved the moment they change. Each change is
a locked read-modify-write of the file, so two processes adding keys to the same keystore never lose one.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, SecretStr

from saas.core.errors import (
    CryptoError,
    DecryptionError,
    IdentityError,
    InvalidInputError,
    KeystoreCorruptedError,
    KeystoreError,
    WrongPasswordError,
)
from saas.core.file_key import FORMAT, FileKey, derive_file_key, read_document
from saas.core.helpers import write_file_atomic
from saas.core.identity import Identity, derive_identity_id, is_identity_id, validate_profile
from saas.core.keys import (
    ECKeyPair,
    RSAKeyPair,
    aes_decrypt,
    aes_encrypt,
    b64d,
    b64e,
    derive_key,
    hybrid_decrypt,
    hybrid_encrypt,
)
from saas.core.schemas import GithubCredentials, SSHCredentials
from saas.core.signing import canonical_json

try:  # POSIX only; without it concurrent processes fall back to last-writer-wins
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["AssetStore", "FileKey", "Keystore", "default_keystore_path", "derive_file_key", "list_keystores"]

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
_ASSET_KINDS = ("content_keys", "ssh_credentials", "github_credentials")

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def default_keystore_path() -> Path:
    return Path.home() / ".keystore"


def _identity_signature(s_key: ECKeyPair, identity: Identity) -> Identity:
    return identity.model_copy(update={"signature": s_key.sign(identity.signed_content())})


def _header(doc: dict[str, Any]) -> bytes:
    """The public part of a keystore; the secrets are bound to it as AES-GCM associated data."""
    return canonical_json({"format": doc["format"], "identity": doc["identity"], "kdf": doc["kdf"]})


def _file_content(doc: dict[str, Any]) -> bytes:
    return canonical_json({k: v for k, v in doc.items() if k != "signature"})


def _read_document(path: Path) -> tuple[dict[str, Any], Identity]:
    """Parse a keystore file and check everything that needs no password."""
    doc = read_document(path)
    try:
        if doc.get("format") != FORMAT:
            raise KeystoreCorruptedError(f"'{path}' is not a keystore (unknown format)", {"path": str(path)})
        identity = Identity.parse(doc["identity"])
        kdf = doc["kdf"]
        if kdf.get("name") != "scrypt" or not all(isinstance(kdf.get(k), int) for k in ("n", "r", "p")):
            raise KeystoreCorruptedError(f"Keystore '{path}' has an unknown key derivation", {"path": str(path)})
        signature = doc["signature"]
        if not isinstance(doc["secrets"], str) or not isinstance(signature, str):
            raise TypeError("secrets and signature must be strings")
    except KeystoreCorruptedError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IdentityError) as e:
        raise KeystoreCorruptedError(f"Keystore '{path}' is malformed or was modified", {"path": str(path)}) from e
    if is_identity_id(path.stem) and path.stem != identity.id:
        raise KeystoreCorruptedError(
            f"Keystore '{path}' holds another identity than its name says", {"path": str(path)}
        )
    if not identity.verify_signature(_file_content(doc), signature):
        raise KeystoreCorruptedError(
            f"Keystore '{path}' was modified outside saas (signature check failed)", {"path": str(path)}
        )
    return doc, identity


def list_keystores(directory: str | Path) -> list[tuple[Path, Identity]]:
    """The keystores in a directory with their public identities, sorted by name; no password needed.

    Files that are not valid keystores are left out."""
    found = []
    directory = Path(directory)
    if not directory.is_dir():
        return []
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_bytes())
            identity = Identity.parse(doc["identity"])
        except (OSError, ValueError, KeyError, TypeError, IdentityError):
            continue
        if doc.get("format") == FORMAT and path.stem == identity.id:
            found.append((path, identity))
    found.sort(key=lambda item: (item[1].name.lower(), item[1].id))
    return found


class AssetStore(Generic[T]):
    """One kind of keystore asset, keyed by name. Every change is saved before the call returns."""

    def __init__(self, keystore: Keystore, kind: str, decode: Callable[[Any], T], encode: Callable[[T], Any]):
        self._keystore = keystore
        self._kind = kind
        self._decode = decode
        self._encode = encode

    def _items(self) -> dict[str, Any]:
        return self._keystore._assets[self._kind]

    def get(self, name: str) -> T | None:
        value = self._items().get(name)
        return None if value is None else self._decode(value)

    def list(self) -> list[str]:
        return sorted(self._items())

    def update(self, name: str, value: T) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidInputError("Asset names must be non-empty strings")
        encoded = self._encode(value)

        def change(secrets: dict[str, Any], identity: Identity) -> None:
            secrets["assets"][self._kind][name] = encoded

        self._keystore._mutate(change)

    def remove(self, name: str) -> bool:
        """Remove an asset; False if there was none by that name (decided on the file, not on a stale view)."""
        removed = False

        def change(secrets: dict[str, Any], identity: Identity) -> None:
            nonlocal removed
            removed = secrets["assets"][self._kind].pop(name, None) is not None

        self._keystore._mutate(change)
        return removed


def _model_codec(model: type[M]) -> tuple[Callable[[Any], M], Callable[[M], Any]]:
    def decode(value: Any) -> M:
        return model.model_validate(value)

    def encode(value: M) -> Any:
        if not isinstance(value, model):
            raise InvalidInputError(f"Expected {model.__name__}")
        return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in value}

    return decode, encode


def _decode_content_key(value: Any) -> str:
    return str(value)


def _encode_content_key(value: str) -> str:
    if isinstance(value, bytes):
        value = value.hex()
    if not isinstance(value, str) or not value:
        raise InvalidInputError("Content keys are non-empty strings")
    return value


class Keystore:
    """An identity with its private keys and assets, backed by one password-protected file."""

    def __init__(self, path: Path, doc: dict[str, Any], identity: Identity, file_key: bytes, secrets: dict[str, Any]):
        self._path = path
        self._doc = doc
        self._identity = identity
        self._file_key = file_key
        self._lock = threading.RLock()
        self._apply_secrets(secrets)
        self.content_keys: AssetStore[str] = AssetStore(self, "content_keys", _decode_content_key, _encode_content_key)
        self.ssh_credentials: AssetStore[SSHCredentials] = AssetStore(
            self, "ssh_credentials", *_model_codec(SSHCredentials)
        )
        self.github_credentials: AssetStore[GithubCredentials] = AssetStore(
            self, "github_credentials", *_model_codec(GithubCredentials)
        )

    # -- creating and loading ----------------------------------------------------------------------

    @classmethod
    def create(cls, keystore_path: str | Path, name: str, email: str, password: str) -> Keystore:
        """Generate keys for a new identity and save it as `<keystore_path>/<iid>.json`."""
        name, email = validate_profile(name, email)
        if not password:
            raise InvalidInputError("The password must not be empty")
        salt = os.urandom(16)
        # RSA key generation and scrypt both release the GIL: run them side by side.
        with ThreadPoolExecutor(max_workers=1) as pool:
            rsa_future = pool.submit(RSAKeyPair.generate)
            file_key = derive_key(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
            s_key = ECKeyPair.generate()
            e_key = rsa_future.result()
        return cls._save_new(Path(keystore_path), name, email, salt, file_key, s_key, e_key, {}, {})

    @classmethod
    def create_from_keys(
        cls,
        keystore_path: str | Path,
        name: str,
        email: str,
        password: str,
        s_key: ECKeyPair,
        e_key: RSAKeyPair,
        assets: dict[str, dict[str, Any]],
        imported_from: str | None = None,
    ) -> Keystore:
        """Save existing keys and assets as a new keystore (used to convert the original middleware's keystores;
        `imported_from` records the old identity ID in the file)."""
        name, email = validate_profile(name, email)
        if not password:
            raise InvalidInputError("The password must not be empty")
        salt = os.urandom(16)
        file_key = derive_key(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        encoded = {kind: dict(assets.get(kind, {})) for kind in _ASSET_KINDS}
        extra = {"imported_from": imported_from} if imported_from else {}
        return cls._save_new(Path(keystore_path), name, email, salt, file_key, s_key, e_key, encoded, extra)

    @classmethod
    def _save_new(
        cls,
        directory: Path,
        name: str,
        email: str,
        salt: bytes,
        file_key: bytes,
        s_key: ECKeyPair,
        e_key: RSAKeyPair,
        assets: dict[str, dict[str, Any]],
        extra: dict[str, Any],
    ) -> Keystore:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        iid = derive_identity_id(s_key.der)
        identity = _identity_signature(
            s_key,
            Identity(id=iid, name=name, email=email, s_public_key=s_key.b64, e_public_key=e_key.b64, nonce=0),
        )
        doc = {
            "format": FORMAT,
            "identity": identity.model_dump(),
            "kdf": {"name": "scrypt", "salt": b64e(salt), "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
            **extra,
        }
        secrets = {
            "s_private_key": s_key.private_b64,
            "e_private_key": e_key.private_b64,
            "assets": {kind: dict(assets.get(kind, {})) for kind in _ASSET_KINDS},
        }
        keystore = cls(directory / f"{iid}.json", doc, identity, file_key, secrets)
        with keystore._file_lock():
            keystore._write(secrets)
        return keystore

    @classmethod
    def load(cls, path_to_json: str | Path, password: str) -> Keystore:
        """Open a keystore file. Raises `KeystoreNotFoundError`, `KeystoreCorruptedError` or
        `WrongPasswordError`."""
        path = Path(path_to_json)
        from saas.core.original_keystore import is_original_keystore, open_original_keystore

        if is_original_keystore(path):  # written by the original middleware: converted next to it, once
            return open_original_keystore(path, password)
        return cls.open(path, derive_file_key(path, password))

    @classmethod
    def open(cls, path_to_json: str | Path, file_key: FileKey) -> Keystore:
        """Open a keystore file with the key `derive_file_key` derived from its password (e.g. in a thread started
        before this module was imported). Raises what `load` raises; `KeystoreError` if the file's KDF
        parameters changed since the key was derived."""
        path = Path(path_to_json)
        doc, identity = _read_document(path)
        if doc["kdf"] != file_key.kdf:
            raise KeystoreError(
                f"Keystore '{path}' was re-encrypted while it was opened; try again", {"path": str(path)}
            )
        secrets = cls._open_secrets(path, doc, file_key.key)
        return cls(path, doc, identity, file_key.key, secrets)

    @staticmethod
    def _open_secrets(path: Path, doc: dict[str, Any], file_key: bytes) -> dict[str, Any]:
        try:
            plain = aes_decrypt(file_key, b64d(doc["secrets"]), _header(doc))
        except (DecryptionError, CryptoError):
            raise WrongPasswordError(f"Wrong password for keystore '{path.stem}'", {"path": str(path)}) from None
        try:
            secrets = json.loads(plain)
            assets = secrets.setdefault("assets", {})
            for kind in _ASSET_KINDS:
                assets.setdefault(kind, {})
            return secrets
        except (ValueError, AttributeError) as e:  # pragma: no cover - only a bug could write this
            raise KeystoreCorruptedError(f"Keystore '{path}' holds unreadable secrets") from e

    def _apply_secrets(self, secrets: dict[str, Any]) -> None:
        try:
            s_key = ECKeyPair.from_private_b64(secrets["s_private_key"])
            e_key = RSAKeyPair.from_private_b64(secrets["e_private_key"])
        except (CryptoError, KeyError) as e:
            raise KeystoreCorruptedError(f"Keystore '{self._path}' holds invalid private keys") from e
        if s_key.der != self._identity.signing_key.der or e_key.der != self._identity.encryption_key.der:
            raise KeystoreCorruptedError(f"Keystore '{self._path}' private keys do not match its identity")
        self._s_key, self._e_key = s_key, e_key
        self._assets: dict[str, dict[str, Any]] = secrets["assets"]

    # -- persistence -------------------------------------------------------------------------------

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        with self._lock:
            if fcntl is None:  # pragma: no cover
                yield
                return
            lock_path = self._path.with_name(f".{self._path.stem}.lock")
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _write(self, secrets: dict[str, Any], identity: Identity | None = None) -> None:
        doc = dict(self._doc)
        if identity is not None:
            doc["identity"] = identity.model_dump()
        doc["secrets"] = b64e(aes_encrypt(self._file_key, canonical_json(secrets), _header(doc)))
        doc["signature"] = self._s_key.sign(_file_content(doc))
        write_file_atomic(self._path, json.dumps(doc, indent=2).encode("utf-8"), mode=0o600)
        self._doc = doc
        if identity is not None:
            self._identity = identity
        self._assets = secrets["assets"]

    def _mutate(self, change: Callable[[dict[str, Any], Identity], Identity | None]) -> None:
        """Locked read-modify-write: re-read the file (another process may have changed it), apply `change`
        to the secrets (it may return a new identity record), save."""
        with self._file_lock():
            doc, on_disk = _read_document(self._path)
            if doc["kdf"] != self._doc["kdf"]:
                raise KeystoreError("The keystore was re-encrypted by another program; load it again")
            self._doc, self._identity = doc, on_disk
            secrets = self._open_secrets(self._path, doc, self._file_key)
            self._write(secrets, change(secrets, on_disk))

    # -- identity ----------------------------------------------------------------------------------

    @property
    def identity(self) -> Identity:
        return self._identity

    @property
    def iid(self) -> str:
        return self._identity.id

    @property
    def path(self) -> Path:
        return self._path

    @property
    def imported_from(self) -> str | None:
        """The identity ID this keystore had in the original middleware, if it was converted from one."""
        value = self._doc.get("imported_from")
        return value if isinstance(value, str) else None

    def sync(self) -> None:
        """Kept for code written for the original middleware: every change is already saved when it is made."""

    def update_profile(self, name: str | None = None, email: str | None = None) -> Identity:
        """Change name and/or email; the record gets nonce + 1 and a new signature."""

        def change(secrets: dict[str, Any], current: Identity) -> Identity:
            new_name, new_email = validate_profile(
                name if name is not None else current.name, email if email is not None else current.email
            )
            updated = current.model_copy(
                update={"name": new_name, "email": new_email, "nonce": current.nonce + 1, "signature": None}
            )
            return _identity_signature(self._s_key, updated)

        self._mutate(change)
        return self._identity

    def delete(self) -> None:
        """Remove the keystore file (and its lock file). The object must not be used afterwards."""
        with self._lock:
            self._path.unlink(missing_ok=True)
            self._path.with_name(f".{self._path.stem}.lock").unlink(missing_ok=True)

    # -- crypto ------------------------------------------------------------------------------------

    def sign(self, message: bytes) -> str:
        return self._s_key.sign(message)

    def verify(self, message: bytes, signature: str) -> bool:
        return self._s_key.verify(message, signature)

    def encrypt(self, content: bytes) -> bytes:
        """Encrypt bytes of any size for this identity (RSA-wrapped AES-256-GCM key)."""
        return hybrid_encrypt(self._e_key, content)

    def decrypt(self, content: bytes) -> bytes:
        """Decrypt what `encrypt` (or `Identity.encrypt`) made for this identity."""
        return hybrid_decrypt(self._e_key, content)

    def unwrap_key(self, envelope: bytes) -> bytes:
        """A symmetric key from a key envelope made with `Identity.wrap_key`."""
        return self._e_key.unwrap(envelope)

    def __repr__(self) -> str:
        return f"Keystore({self._identity.label()!r})"
