"""The one exception tree shared by node, SDK and CLI.

Every error the project raises on purpose is a `SaaSError` with a human `reason`, structured `details` (never
secrets, signatures or credentials) and an `id` that lets a user quote an error and an operator find it in the
log. The edges translate: the REST app maps classes to statuses in one table, the SDK maps the error envelope
back to the same classes, the CLI maps classes to exit codes.
"""

from __future__ import annotations

import errno
import secrets
from typing import Any

__all__ = [
    "AuthenticationError",
    "AuthorisationError",
    "ConfigError",
    "ConflictError",
    "CryptoError",
    "DORError",
    "DecryptionError",
    "IdentityError",
    "InsufficientStorageError",
    "InvalidInputError",
    "InvalidSignatureError",
    "JobError",
    "KeystoreCorruptedError",
    "KeystoreError",
    "KeystoreNotFoundError",
    "LimitReachedError",
    "MissingValueError",
    "NodeDBError",
    "NotFoundError",
    "P2PError",
    "RTIError",
    "RemoteError",
    "SaaSError",
    "StorageFullError",
    "TooLargeError",
    "UnavailableError",
    "UnreachableError",
    "WrongPasswordError",
]


class SaaSError(Exception):
    """Base of every error raised on purpose. `reason` is one readable sentence."""

    def __init__(self, reason: str, details: dict[str, Any] | None = None, error_id: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.details: dict[str, Any] = dict(details or {})
        self.id = error_id or secrets.token_hex(8)

    def __str__(self) -> str:
        return self.reason

    def to_envelope(self) -> dict[str, Any]:
        """The JSON error body of the REST API: `{reason, id, details}`."""
        return {"reason": self.reason, "id": self.id, "details": self.details}


# -- categories the edges map to statuses / exit codes ---------------------------------------------


class InvalidInputError(SaaSError):
    """The caller gave a value that cannot be used (bad name, bad format, failed validation)."""


class MissingValueError(InvalidInputError):
    """A required value was not given and cannot be asked for (no TTY or --non-interactive)."""

    def __init__(self, name: str, flag: str | None = None):
        hint = f" (use {flag})" if flag else ""
        super().__init__(f"Missing value for {name}{hint}", {"name": name, "flag": flag})


class NotFoundError(SaaSError):
    """The thing asked for does not exist (or the caller may not know that it does)."""


class AuthenticationError(SaaSError):
    """The caller could not be authenticated (unknown identity, bad or stale signature)."""


class AuthorisationError(SaaSError):
    """The caller is known but may not do this."""


class ConflictError(SaaSError):
    """The request conflicts with the current state (e.g. a stale identity record, an object in use)."""


class TooLargeError(InvalidInputError):
    """A body or object is larger than the configured limit."""


class LimitReachedError(SaaSError):
    """A bound of the node was reached (too many pending jobs of a user, publications from a client, records);
    `details` say which bound and how far. Trying again later may work."""


class InsufficientStorageError(SaaSError):
    """There is no room to store this: an owner's storage quota is used up, or a disk of the node is full."""


class StorageFullError(InsufficientStorageError):
    """A disk the node writes to is full (ENOSPC) or its filesystem quota is used up (EDQUOT)."""

    @classmethod
    def from_error(cls, error: BaseException, what: str = "data") -> StorageFullError | None:
        """The `StorageFullError` an `OSError` (ENOSPC, EDQUOT) or SQLite error (SQLITE_FULL) of a full disk stands
        for, saying `what` could not be written; None for any other error. Never names a path."""
        if isinstance(error, StorageFullError):
            return error
        if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
            code = _DISK_FULL_ERRNOS[error.errno]
        elif (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF == _SQLITE_FULL:
            code = "SQLITE_FULL"
        else:
            return None
        return cls(
            f"The node's storage is full: {what} could not be written. Nothing was stored; try again once the "
            "node's operator has freed space",
            {"error": code},
        )


_DISK_FULL_ERRNOS = {errno.ENOSPC: "ENOSPC", errno.EDQUOT: "EDQUOT"}
_SQLITE_FULL = 13  # the primary result code of SQLite for "database or disk is full"


class ConfigError(SaaSError):
    """A configuration value is missing or inconsistent."""


class UnavailableError(SaaSError):
    """The node cannot serve the request now (it is stopping); the same request may work later or on another node."""


class UnreachableError(SaaSError):
    """A remote host or node could not be reached."""


class RemoteError(SaaSError):
    """A remote node answered with an error envelope; `status` is its HTTP status."""

    def __init__(
        self,
        reason: str,
        details: dict[str, Any] | None = None,
        error_id: str | None = None,
        status: int = 500,
    ):
        super().__init__(reason, details, error_id)
        self.status = status


# -- crypto and identities -------------------------------------------------------------------------


class CryptoError(SaaSError):
    """A cryptographic operation failed."""


class DecryptionError(CryptoError):
    """Ciphertext could not be decrypted: wrong key, or it was truncated, reordered or tampered with."""


class InvalidSignatureError(CryptoError):
    """A signature does not verify."""


class IdentityError(InvalidInputError):
    """An identity record is invalid: bad signature, ID not derived from its key, or stale nonce."""


# -- keystores -------------------------------------------------------------------------------------


class KeystoreError(SaaSError):
    """Base of keystore errors."""


class KeystoreNotFoundError(KeystoreError, NotFoundError):
    """No keystore file where one was expected."""


class WrongPasswordError(KeystoreError, AuthenticationError):
    """The keystore is intact but the password does not open it."""


class KeystoreCorruptedError(KeystoreError):
    """The keystore file is malformed or was modified outside this program (its signature fails)."""


# -- services ---------------------------------------------------------------------------------------------------
# A service raises its own class, combined with a category where the category decides the status / exit code,
# e.g. `class UnknownObjectError(DORError, NotFoundError)`.


class NodeDBError(SaaSError):
    """Base of NodeDB errors."""


class DORError(SaaSError):
    """Base of Data Object Repository errors."""


class RTIError(SaaSError):
    """Base of Runtime Infrastructure errors."""


class P2PError(SaaSError):
    """Base of peer-to-peer errors."""


class JobError(RTIError):
    """A job someone waited for did not succeed (failed or cancelled), or did not finish in time. `details` holds
    `job_id`, `state`, the job's `errors` and the tail of its logs (`log_tail`)."""
