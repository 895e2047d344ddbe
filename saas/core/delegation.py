"""`Delegation`: a user's signed, expiring permission for one node to read on the user's behalf (DESIGN §7).

A node that fetches a restricted object from another node signs the request as itself; the user's delegation
travels beside it (header `saas-delegation`, base64 of the JSON). The delegation is self-signed by the user over
its canonical JSON, so it needs no coverage by the request signature. The serving node acts as the user only if
the delegation verifies, is unexpired (and not longer-lived than `MAX_LIFETIME_MS`), names the requesting node as
delegate, and covers the object asked for (`obj_id`, or every object when `obj_id` is None — used for metadata
lookups and provenance)."""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from saas.core.errors import AuthenticationError, AuthorisationError
from saas.core.identity import Identity
from saas.core.signing import Signer, canonical_json

__all__ = ["DEFAULT_LIFETIME_S", "HEADER_DELEGATION", "MAX_LIFETIME_MS", "Delegation"]

HEADER_DELEGATION = "saas-delegation"
MAX_LIFETIME_MS = 3600 * 1000  # a delegation may not be valid for longer than this from the time it is checked
DEFAULT_LIFETIME_S = 600.0
MAX_HEADER = 8192


def _now_ms() -> int:
    return int(time.time() * 1000)


class Delegation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer_iid: str = Field(max_length=64)  # the user who delegates
    delegate_iid: str = Field(max_length=64)  # the node that may act for the user
    obj_id: str | None = Field(default=None, max_length=64)  # the object; None: any object the issuer may read
    expires: int  # ms since epoch
    signature: str | None = Field(default=None, max_length=2048)

    def signed_content(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", exclude={"signature"}))

    @classmethod
    def create(
        cls, issuer: Signer, delegate_iid: str, obj_id: str | None = None, lifetime_s: float = DEFAULT_LIFETIME_S
    ) -> Delegation:
        """A delegation signed by `issuer` (a user's keystore), valid for `lifetime_s` seconds."""
        unsigned = cls(
            issuer_iid=issuer.iid, delegate_iid=delegate_iid, obj_id=obj_id, expires=_now_ms() + int(lifetime_s * 1000)
        )
        return unsigned.model_copy(update={"signature": issuer.sign(unsigned.signed_content())})

    def covers(self, obj_id: str) -> bool:
        return self.obj_id is None or self.obj_id == obj_id

    def check(self, issuer: Identity | None, delegate_iid: str, obj_id: str | None = None) -> Identity:
        """The issuer's identity if this delegation lets `delegate_iid` act for it (on `obj_id`, if given).
        Raises `AuthenticationError` (unknown issuer, bad signature, expired, too long-lived) or
        `AuthorisationError` (another delegate, another object)."""
        if issuer is None or issuer.id != self.issuer_iid:
            raise AuthenticationError(
                "The delegating identity is not known to this node: publish it first", {"iid": self.issuer_iid}
            )
        if not self.signature or not issuer.verify_signature(self.signed_content(), self.signature):
            raise AuthenticationError("Invalid delegation signature", {"iid": self.issuer_iid})
        now = _now_ms()
        if self.expires <= now:
            raise AuthenticationError("The delegation has expired", {"expired_ms_ago": now - self.expires})
        if self.expires - now > MAX_LIFETIME_MS:
            raise AuthenticationError(
                "The delegation is valid for too long", {"max_lifetime_ms": MAX_LIFETIME_MS, "expires": self.expires}
            )
        if self.delegate_iid != delegate_iid:
            raise AuthorisationError("The delegation is for another node", {"delegate_iid": self.delegate_iid})
        if obj_id is not None and not self.covers(obj_id):
            raise AuthorisationError("The delegation is for another data object", {"obj_id": self.obj_id})
        return issuer

    def to_header(self) -> str:
        return base64.b64encode(canonical_json(self.model_dump(mode="json"))).decode("ascii")

    @classmethod
    def from_header(cls, value: str) -> Delegation:
        """Parse a `saas-delegation` header; raises `AuthenticationError` if it is malformed."""
        if len(value) > MAX_HEADER:
            raise AuthenticationError("The delegation header is too large")
        try:
            return cls.model_validate_json(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError, ValidationError):
            raise AuthenticationError("The delegation header is malformed") from None

    @classmethod
    def from_message(cls, value: Any) -> Delegation | None:
        """A delegation carried in a P2P message (a JSON object), or None if absent or malformed."""
        if value is None:
            return None
        try:
            return cls.model_validate(value)
        except ValidationError:
            return None
