"""`LoginToken`: a user's signed, single-use, short-lived permission to open one dashboard session on one node
(issue 20; the Aglais notes' login tokens).

`saas-cli dashboard` makes one with the user's keystore, so no keystore ever enters the browser. The token names
the node it is for (`node_iid`), a random `nonce` (the node remembers it: a token opens one session only) and
`expires` (at most `MAX_LIFETIME_MS` after the node checks it). It is self-signed by the user over its canonical
JSON and travels as URL-safe base64 of the JSON — in the URL's fragment (`/#login=...`), which browsers never
send to a server or keep in its logs; the page posts it to the node once.

Importing this module pulls no server dependency (the CLI makes tokens)."""

from __future__ import annotations

import base64
import binascii
import secrets
import time

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from saas.core.errors import AuthenticationError
from saas.core.identity import Identity
from saas.core.signing import Signer, canonical_json

__all__ = ["DEFAULT_LIFETIME_S", "MAX_LIFETIME_MS", "MAX_TOKEN_LENGTH", "PURPOSE", "LoginToken"]

PURPOSE = "saas-dashboard-login"  # signed too: a login token is never mistaken for another signed document
DEFAULT_LIFETIME_S = 120.0
MAX_LIFETIME_MS = 600 * 1000  # a token may not be valid for longer than this from the time it is checked
MAX_TOKEN_LENGTH = 4096


def _now_ms() -> int:
    return int(time.time() * 1000)


class LoginToken(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    purpose: str = Field(default=PURPOSE, max_length=64)
    iid: str = Field(pattern=r"^[0-9a-z]{64}$")  # the user who signs in
    node_iid: str = Field(pattern=r"^[0-9a-z]{64}$")  # the one node that may accept it
    nonce: str = Field(min_length=16, max_length=64)
    expires: int  # ms since epoch
    signature: str | None = Field(default=None, max_length=2048)

    def signed_content(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", exclude={"signature"}))

    @classmethod
    def create(cls, user: Signer, node_iid: str, lifetime_s: float = DEFAULT_LIFETIME_S) -> LoginToken:
        """A token signed by `user` (a keystore) to sign in on node `node_iid` within `lifetime_s` seconds."""
        unsigned = cls(
            iid=user.iid, node_iid=node_iid, nonce=secrets.token_hex(16), expires=_now_ms() + int(lifetime_s * 1000)
        )
        return unsigned.model_copy(update={"signature": user.sign(unsigned.signed_content())})

    def check(self, user: Identity | None, node_iid: str, max_lifetime_ms: int = MAX_LIFETIME_MS) -> Identity:
        """The user's identity if this token is valid for node `node_iid` now. Raises `AuthenticationError`
        (unknown user, wrong purpose or node, bad signature, expired, valid for too long). Whether it was used
        before is the node's to check (it remembers the nonce). Blocks (crypto)."""
        if user is None or user.id != self.iid:
            raise AuthenticationError(
                "The identity of the login token is not known to this node: publish it first", {"iid": self.iid}
            )
        if self.purpose != PURPOSE:
            raise AuthenticationError("Not a dashboard login token")
        if self.node_iid != node_iid:
            raise AuthenticationError("The login token is for another node", {"node_iid": self.node_iid})
        if not self.signature or not user.verify_signature(self.signed_content(), self.signature):
            raise AuthenticationError("Invalid login token signature", {"iid": self.iid})
        now = _now_ms()
        if self.expires <= now:
            raise AuthenticationError(
                "The login token has expired: make a new one with 'saas-cli dashboard'",
                {"expired_ms_ago": now - self.expires},
            )
        if self.expires - now > max_lifetime_ms:
            raise AuthenticationError(
                "The login token is valid for too long", {"max_lifetime_ms": max_lifetime_ms, "expires": self.expires}
            )
        return user

    def to_string(self) -> str:
        return base64.urlsafe_b64encode(canonical_json(self.model_dump(mode="json"))).decode("ascii").rstrip("=")

    @classmethod
    def from_string(cls, value: str) -> LoginToken:
        """Parse a token; raises `AuthenticationError` if it is malformed."""
        if len(value) > MAX_TOKEN_LENGTH:
            raise AuthenticationError("The login token is too large")
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            return cls.model_validate_json(raw)
        except (binascii.Error, ValueError, ValidationError):
            raise AuthenticationError("The login token is malformed") from None
