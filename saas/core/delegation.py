"""`Delegation`: a user's signed, expiring, scoped permission for one node to read on the user's behalf from other
named nodes (DESIGN §7, §12).

A node that reads a restricted object held by another node signs its request as itself; the user's delegation
travels beside it (REST header `saas-delegation`, base64 of the JSON; or the `delegation` field of a P2P message).
The delegation is self-signed by the user over its canonical JSON, so it needs no coverage by the request
signature. It names:

- `delegate_iid`: the one node that may present it (the requesting node, authenticated by its request signature or
  by Noise);
- `servers`: the nodes that may serve it (each serving node checks that it is one of them);
- `scopes`: what it allows — `metadata` (P2P lookups of obj_ids), `content` (downloading content; only with an
  `obj_id`) and `provenance` (P2P lookups of the objects behind recipes). A provenance or metadata delegation never
  reads content;
- `obj_id`: the one object it covers, or None for every object the issuer may read (metadata and provenance only);
- `expires`: at most `MAX_LIFETIME_MS` after it is checked.

The serving node acts as the user only if all of these check out (`check`)."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from saas.core.errors import AuthenticationError, AuthorisationError
from saas.core.identity import Identity
from saas.core.signing import Signer, canonical_json

__all__ = [
    "DEFAULT_LIFETIME_S",
    "HEADER_DELEGATION",
    "JOB_INPUT_SCOPES",
    "MAX_LIFETIME_MS",
    "MAX_SERVERS",
    "Delegation",
    "Scope",
]

HEADER_DELEGATION = "saas-delegation"
MAX_LIFETIME_MS = 3600 * 1000  # a delegation may not be valid for longer than this from the time it is checked
DEFAULT_LIFETIME_S = 600.0
MAX_HEADER = 8192
MAX_SERVERS = 32  # serving nodes one delegation may name (a job input's fits `Task.InputReference.user_signature`)

Scope = Literal["metadata", "content", "provenance"]
JOB_INPUT_SCOPES: tuple[Scope, ...] = ("metadata", "content")  # a job input's delegation: find it, then fetch it
_Iid = Annotated[str, Field(pattern=r"^[0-9a-z]{64}$")]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Delegation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer_iid: str = Field(max_length=64)  # the user who delegates
    delegate_iid: str = Field(max_length=64)  # the node that may present it
    servers: tuple[_Iid, ...] = Field(min_length=1, max_length=MAX_SERVERS)  # the nodes that may serve it
    scopes: tuple[Scope, ...] = Field(min_length=1, max_length=3)  # what it allows
    obj_id: str | None = Field(default=None, max_length=64)  # the object; None: any (metadata, provenance only)
    expires: int  # ms since epoch
    signature: str | None = Field(default=None, max_length=2048)

    @model_validator(mode="after")
    def _content_names_its_object(self) -> Delegation:
        if "content" in self.scopes and self.obj_id is None:
            raise ValueError("a delegation to read content must name its data object (obj_id)")
        return self

    def signed_content(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", exclude={"signature"}))

    @classmethod
    def create(
        cls,
        issuer: Signer,
        delegate_iid: str,
        obj_id: str | None = None,
        *,
        servers: Iterable[str],
        scopes: Iterable[Scope],
        lifetime_s: float = DEFAULT_LIFETIME_S,
    ) -> Delegation:
        """A delegation signed by `issuer` (a user's keystore) letting node `delegate_iid` read `obj_id` (or, for
        metadata and provenance, every object the issuer may read) within `scopes` from the nodes `servers`,
        valid for `lifetime_s` seconds."""
        unsigned = cls(
            issuer_iid=issuer.iid,
            delegate_iid=delegate_iid,
            servers=tuple(dict.fromkeys(servers)),
            scopes=tuple(dict.fromkeys(scopes)),
            obj_id=obj_id,
            expires=_now_ms() + int(lifetime_s * 1000),
        )
        return unsigned.model_copy(update={"signature": issuer.sign(unsigned.signed_content())})

    def covers(self, obj_id: str) -> bool:
        return self.obj_id is None or self.obj_id == obj_id

    def check(
        self,
        issuer: Identity | None,
        delegate_iid: str,
        server_iid: str | None,
        scope: Scope,
        obj_id: str | None = None,
    ) -> Identity:
        """The issuer's identity if this delegation lets node `delegate_iid` read within `scope` (on `obj_id`, if
        given) from node `server_iid` (None: checked by the node about to present it, not by a serving node).
        Raises `AuthenticationError` (unknown issuer, bad signature, expired, too long-lived) or
        `AuthorisationError` (another delegate, another serving node, another scope, another object)."""
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
        if server_iid is not None and server_iid not in self.servers:
            raise AuthorisationError(
                "The delegation is to be served by other nodes, not this one", {"servers": list(self.servers)}
            )
        if scope not in self.scopes:
            raise AuthorisationError(
                f"The delegation does not allow reading {scope} (it allows: {', '.join(self.scopes)})",
                {"scopes": list(self.scopes)},
            )
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
            raise AuthenticationError(
                "The delegation header is malformed (a delegation names its delegate, servers and scopes)"
            ) from None

    @classmethod
    def from_message(cls, value: Any) -> Delegation | None:
        """A delegation carried in a P2P message (a JSON object), or None if absent or malformed."""
        if value is None:
            return None
        try:
            return cls.model_validate(value)
        except ValidationError:
            return None
