"""A keystore opened while the command goes on (issue 21).

Opening a keystore derives its file key with scrypt (N=2^17: about 0.4 s of one core, the keystore format fixes
it). scrypt releases the GIL, so `Unlocking` runs it in a thread while the command imports what it needs, asks the
node who it is and hashes what it uploads; whatever needs the private keys waits for it there.

Callers may rely on: `identity`, `iid` and `path` at once (the keystore file's public record, checked when it was
selected); `sign`, `unwrap_key`, `content_keys` and `keystore()` wait for the unlock and raise its error (e.g.
`WrongPasswordError`) each time they are used, so a wrong password fails the first step that needs the keys, and
nothing was signed before it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from saas.core.identity import Identity
    from saas.core.keystore import AssetStore, Keystore

__all__ = ["Unlocking"]


class Unlocking:
    """The keystore at `path`, whose public identity is `identity`, being opened by `open_keystore` in a thread."""

    def __init__(self, path: Path, identity: Identity, open_keystore: Callable[[], Keystore]):
        self.path = path
        self.identity = identity
        self._keystore: Keystore | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        # A daemon: Ctrl-C while it runs ends the command at once (the thread only reads the keystore file).
        threading.Thread(target=self._open, args=(open_keystore,), name="saas-unlock", daemon=True).start()

    @classmethod
    def opened(cls, keystore: Keystore) -> Unlocking:
        """A keystore that is open already (e.g. after a password typed at the prompt)."""
        unlocking = cls.__new__(cls)
        unlocking.path, unlocking.identity = keystore.path, keystore.identity
        unlocking._keystore, unlocking._error = keystore, None
        unlocking._done = threading.Event()
        unlocking._done.set()
        return unlocking

    def _open(self, open_keystore: Callable[[], Keystore]) -> None:
        try:
            self._keystore = open_keystore()
        except BaseException as e:  # raised in the caller's thread by `keystore()`
            self._error = e
        finally:
            self._done.set()

    @property
    def iid(self) -> str:
        return self.identity.id

    def keystore(self) -> Keystore:
        """The open keystore (waits for the unlock; raises its error)."""
        self._done.wait()
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
