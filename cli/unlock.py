"""A keystore opened while the command goes on (issue 21).

Opening a keystore derives its file key with scrypt (N=2^17: about 0.4 s of one core, the keystore format fixes
it). scrypt releases the GIL, so `Deriving` runs it in a thread, started as soon as the command knows the file and
the password: before it imports the SDK (`saas.core.file_key` needs only the standard library, and is loaded before
the thread starts). Meanwhile the command imports what it needs, asks the node who it is and hashes what it uploads;
`Unlocking` opens the keystore with the key where the keys are first needed.

Callers may rely on: `identity`, `iid` and `path` at once (the keystore file's public record, checked when it was
selected); `sign`, `unwrap_key`, `content_keys` and `keystore()` wait for the unlock and raise its error (e.g.
`WrongPasswordError`) each time they are used, so a wrong password fails the first step that needs the keys, and
nothing was signed before it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from saas.core.background import Background
from saas.core.file_key import FileKey, derive_file_key

if TYPE_CHECKING:
    from saas.core.identity import Identity
    from saas.core.keystore import AssetStore, Keystore

__all__ = ["Deriving", "Unlocking"]


class Deriving(Background[FileKey]):
    """The file key of the keystore at `path` for `password`, being derived (`derive_file_key`)."""

    def __init__(self, path: Path, password: str):
        self.path = path
        super().__init__(lambda: derive_file_key(path, password), "saas-unlock")


class Unlocking:
    """The keystore at `path`, whose public identity is `identity`, opened by `open_keystore` when its keys are first
    used (e.g. `Keystore.open` with a `Deriving`'s key); its result or error is kept."""

    def __init__(self, path: Path, identity: Identity, open_keystore: Callable[[], Keystore]):
        self.path = path
        self.identity = identity
        self._open_keystore: Callable[[], Keystore] | None = open_keystore
        self._keystore: Keystore | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    @classmethod
    def opened(cls, keystore: Keystore) -> Unlocking:
        """A keystore that is open already (e.g. after a password typed at the prompt)."""
        unlocking = cls(keystore.path, keystore.identity, lambda: keystore)
        unlocking.keystore()
        return unlocking

    @property
    def iid(self) -> str:
        return self.identity.id

    def keystore(self) -> Keystore:
        """The open keystore (waits for the unlock; raises its error, each time)."""
        with self._lock:
            if self._open_keystore is not None:
                try:
                    self._keystore = self._open_keystore()
                except Exception as e:
                    self._error = e
                self._open_keystore = None
        if self._error is not None:
            raise self._error
        assert self._keystore is not None
        return self._keystore

    def sign(self, message: bytes) -> str:
        return self.keystore().sign(message)

    def unwrap_key(self, envelope: bytes) -> bytes:
        return self.keystore().unwrap_key(envelope)

    @property
    def content_keys(self) -> AssetStore[str]:
        return self.keystore().content_keys
