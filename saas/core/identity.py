"""Identities: self-certifying IDs and signed identity records (DESIGN §4).

An identity ID is the first 64 characters of the base36 encoding of SHA-512 over the DER of the signing public
key, so a record can only ever be published for the key it names. A record `{id, name, email, s_public_key,
e_public_key, nonce, signature}` is signed over the canonical JSON of every field but `signature`; a newer
version of a record has a higher nonce.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from saas.core.errors import CryptoError, IdentityError, InvalidInputError
from saas.core.keys import ECPublicKey, RSAPublicKey, hybrid_encrypt
from saas.core.signing import canonical_json

__all__ = ["ID_LENGTH", "Identity", "derive_identity_id", "is_identity_id", "validate_profile"]

ID_LENGTH = 64
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_ID_PATTERN = re.compile(r"^[0-9a-z]{64}$")
_EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+$")
MAX_NAME_LENGTH = 128
MAX_EMAIL_LENGTH = 254


def _base36(number: int) -> str:
    if number == 0:
        return "0"
    digits = []
    while number:
        number, remainder = divmod(number, 36)
        digits.append(_BASE36[remainder])
    return "".join(reversed(digits))


def derive_identity_id(s_public_der: bytes) -> str:
    """The identity ID that belongs to a signing public key."""
    digest = hashlib.sha512(s_public_der).digest()
    return _base36(int.from_bytes(digest, "big"))[:ID_LENGTH].rjust(ID_LENGTH, "0")


def is_identity_id(value: str) -> bool:
    """True if `value` has the shape of an identity ID (safe to use in a file name)."""
    return bool(_ID_PATTERN.fullmatch(value))


def _has_control_character(text: str) -> bool:
    """True if `text` holds a control character (C0, DEL or C1: terminal escapes, NUL, newlines)."""
    return any(unicodedata.category(c) == "Cc" for c in text)


def validate_profile(name: str, email: str) -> tuple[str, str]:
    """Checks a name and email; returns them stripped. Raises `InvalidInputError`."""
    name, email = name.strip(), email.strip()
    if not name or len(name) > MAX_NAME_LENGTH or _has_control_character(name):
        raise InvalidInputError(
            f"Invalid name: 1 to {MAX_NAME_LENGTH} printable characters expected", {"field": "name"}
        )
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL_PATTERN.match(email) or _has_control_character(email):
        raise InvalidInputError("Invalid email address", {"field": "email"})
    return name, email


def _check_name(value: str) -> str:
    if not value.strip() or len(value) > MAX_NAME_LENGTH or _has_control_character(value):
        raise ValueError(f"name must be 1 to {MAX_NAME_LENGTH} printable characters")
    return value


def _check_email(value: str) -> str:
    if len(value) > MAX_EMAIL_LENGTH or not _EMAIL_PATTERN.match(value) or _has_control_character(value):
        raise ValueError("invalid email address")
    return value


class Identity(BaseModel):
    """A public, self-signed identity record."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=ID_LENGTH, max_length=ID_LENGTH)
    name: Annotated[str, AfterValidator(_check_name)]
    email: Annotated[str, AfterValidator(_check_email)]
    s_public_key: str
    e_public_key: str
    nonce: int = Field(ge=0, le=2**53)  # a JSON-safe integer (and one SQLite can store)
    signature: str | None = None

    def signed_content(self) -> bytes:
        """The bytes the record signature covers."""
        return canonical_json(self.model_dump(exclude={"signature"}))

    @property
    def signing_key(self) -> ECPublicKey:
        return _signing_key(self.s_public_key)

    @property
    def encryption_key(self) -> RSAPublicKey:
        return _encryption_key(self.e_public_key)

    @property
    def s_key_info(self) -> str:
        return self.signing_key.info

    @property
    def e_key_info(self) -> str:
        return self.encryption_key.info

    def verify(self) -> None:
        """Raises `IdentityError` unless the ID belongs to the signing key and the signature is valid."""
        try:
            s_key = self.signing_key
            self.encryption_key  # noqa: B018 -- parse to reject a malformed key
        except CryptoError as e:
            raise IdentityError("Identity record has a malformed key", {"iid": self.id}) from e
        if derive_identity_id(s_key.der) != self.id:
            raise IdentityError("Identity ID does not belong to the record's signing key", {"iid": self.id})
        if not self.signature or not s_key.verify(self.signed_content(), self.signature):
            raise IdentityError("Identity record signature is invalid", {"iid": self.id})

    def verify_signature(self, message: bytes, signature: str) -> bool:
        """True if `signature` over `message` was made by this identity."""
        return self.signing_key.verify(message, signature)

    def wrap_key(self, key: bytes) -> bytes:
        """Wrap a symmetric key so only this identity can unwrap it (a key envelope)."""
        return self.encryption_key.wrap(key)

    def encrypt(self, data: bytes) -> bytes:
        """Encrypt bytes of any size so only this identity can read them (e.g. credentials for a node)."""
        return hybrid_encrypt(self.encryption_key, data)

    def label(self) -> str:
        """`name/email/id`, as the CLI shows identities."""
        return f"{self.name}/{self.email}/{self.id}"

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Identity:
        """A record from untrusted JSON, verified. Raises `IdentityError`."""
        from pydantic import ValidationError

        try:
            identity = cls.model_validate(data)
        except ValidationError as e:
            raise IdentityError("Malformed identity record", {"errors": e.errors(include_input=False)}) from e
        identity.verify()
        return identity


@functools.lru_cache(maxsize=1024)
def _signing_key(b64: str) -> ECPublicKey:
    """Parsed once per key: a node verifies the same few identities' signatures on every request."""
    return ECPublicKey.from_b64(b64)


@functools.lru_cache(maxsize=1024)
def _encryption_key(b64: str) -> RSAPublicKey:
    return RSAPublicKey.from_b64(b64)
