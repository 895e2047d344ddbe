"""Client-side content encryption with the keystore's content keys, shared by `saas-cli dor` and `saas.sdk.base`.

Adding with `content_encrypted` draws a fresh AES-256 key, encrypts the file before upload (the DOR also stores an
envelope of the key for the owner) and keeps the key in the keystore under the object's ID. Downloading an
encrypted object decrypts with the keystore's key, else with the caller's key envelope from the DOR (e.g. after
someone granted access, or for a job output encrypted for its owner).

The keystore may be one still being opened (`KeyHolder`, e.g. the CLI's `Unlocking`): its keys are waited for only
where they are used, so an upload is hashed while the keystore's password is checked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from saas.core.identity import Identity
    from saas.core.keystore import AssetStore, Keystore
    from saas.dor.proxy import DORProxy
    from saas.dor.schemas import CDataObject, DataObject
    from saas.dor.upload import BodyHash

__all__ = ["KeyHolder", "add_content", "content_key", "download_content", "forget_content_key"]

Progress = Callable[[int, int], None]


class KeyHolder(Protocol):
    """What adding and downloading use of a keystore: a `Keystore`, or one still being opened."""

    @property
    def identity(self) -> Identity: ...

    @property
    def iid(self) -> str: ...

    @property
    def content_keys(self) -> AssetStore[str]: ...

    def sign(self, message: bytes) -> str: ...

    def unwrap_key(self, envelope: bytes) -> bytes: ...


def add_content(
    proxy: DORProxy,
    keystore: KeyHolder,
    content_path: str | Path,
    data_type: str,
    data_format: str,
    access_restricted: bool,
    content_encrypted: bool = False,
    creators: Sequence[Identity] | None = None,
    license_by: bool = False,
    license_sa: bool = False,
    license_nc: bool = False,
    license_nd: bool = False,
    progress: Progress | None = None,
    body_hash: BodyHash | None = None,
) -> CDataObject:
    """Upload a file owned by the keystore's identity; with `content_encrypted`, encrypted here with a new key that
    is then kept in the keystore. `body_hash`: see `DORProxy.add_data_object`."""
    from saas.core.keys import random_key

    key = random_key() if content_encrypted else None
    obj = proxy.add_data_object(
        content_path,
        keystore.identity,
        access_restricted,
        content_encrypted,
        data_type,
        data_format,
        creators=list(creators) if creators else [keystore.identity],
        license_by=license_by,
        license_sa=license_sa,
        license_nc=license_nc,
        license_nd=license_nd,
        content_key=key,
        progress=progress,
        body_hash=body_hash,
    )
    if key is not None:
        keystore.content_keys.update(obj.obj_id, key.hex())
    return obj


def content_key(proxy: DORProxy, keystore: KeyHolder, obj: DataObject) -> bytes | None:
    """The key that decrypts `obj` (None if it is not encrypted): the keystore's, else the caller's envelope."""
    if not getattr(obj, "content_encrypted", False):
        return None
    key_hex = keystore.content_keys.get(obj.obj_id)
    if key_hex:
        return bytes.fromhex(key_hex)
    return keystore.unwrap_key(proxy.get_envelope(obj.obj_id, keystore))


def download_content(
    proxy: DORProxy, keystore: KeyHolder, obj: DataObject, path: str | Path, progress: Progress | None = None
) -> Path:
    """Download `obj` to `path` (atomically, checked against its c_hash), decrypted if it is encrypted."""
    key = content_key(proxy, keystore, obj)
    return proxy.get_content(obj.obj_id, keystore, path, content_key=key, progress=progress)


def forget_content_key(keystore: Keystore, obj_id: str) -> None:
    """Drop the key of a deleted object from the keystore (nothing happens if there is none)."""
    keystore.content_keys.remove(obj_id)
