"""The models of resource packages, account levels, offers and bookings (issue 18) that the node and the SDK share.

Only pydantic and the shared schema modules (`saas.core`, `saas.dor.schemas`, `saas.rti.schemas`): the SDK and the
CLI import them without any server part (`saas.rti.offers`, `saas.rti.bookings` and `saas.rti.levels` hold the
node's logic and re-export these names).

What callers may rely on:
- `Offer.verify(node)`: signed by that node and not expired.
- `Booking.verify(node, user)` / `verify_booking(...)`: the booking is signed by the node (over every other field)
  and carries the user's signed request (`Booking.request`, the `POST /rti/bookings` exactly as the node received
  it) for the package and hours it holds: a user can check what the node stored, and a node detects a record
  altered outside it."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from saas.dor.schemas import TaskProof
from saas.rti.schemas import ObjId, Package, PartitionName, Resources

if TYPE_CHECKING:
    from saas.core.identity import Identity

__all__ = [
    "MAX_HOURS",
    "AccountLevel",
    "Availability",
    "Booking",
    "BookingParameters",
    "Level",
    "Locality",
    "Offer",
    "OfferParameters",
    "Package",
    "QueueEstimate",
    "SignedRequest",
    "verify_booking",
]

MAX_HOURS = 366 * 24  # the longest booking, and the longest availability grid, in hours
Level = Literal["guest", "basic", "extended", "custom"]
SignedRequest = TaskProof  # a signed REST request as its node received it (DESIGN §5): method, path, headers, body


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


class AccountLevel(BaseModel):
    """An identity's level on this node, signed by the node (`signature` empty: the node's default level)."""

    iid: str
    level: Level
    packages: list[str] = Field(default_factory=list)
    t_assigned: int = 0
    node_iid: str
    signature: str = ""
    allowed: list[str] | None = Field(default=None, description="packages the identity may ask for (None: all)")

    def signed_content(self) -> bytes:
        return _canonical(self.model_dump(include={"iid", "level", "packages", "t_assigned", "node_iid"}))


class OfferParameters(BaseModel):
    """The task to ask about (a job need not be written yet: inputs are object IDs)."""

    model_config = ConfigDict(extra="forbid")

    proc_id: ObjId
    package: PartitionName | None = None
    resources: Resources | None = None
    input: Annotated[list[ObjId], Field(max_length=1000)] = Field(default_factory=list, description="input objects")
    deadline: int | None = Field(default=None, ge=0, description="UTC ms by which the job should be done")


class Locality(BaseModel):
    held_bytes: int = 0  # inputs in this node's DOR
    fetch_bytes: int = 0  # inputs another node holds
    held: list[str] = Field(default_factory=list)
    fetch: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)  # found nowhere (or not visible to the user)


class QueueEstimate(BaseModel):
    pending: int  # jobs waiting for a slot of the processor's pool
    running: int
    slots: int
    mean_duration: float | None  # seconds, of the processor's recent successful jobs (None: no history)
    samples: int
    wait: float  # seconds until the job would start (estimated)


class BookingParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    package: PartitionName
    start: int = Field(ge=0, description="UTC ms, on the hour")
    hours: int = Field(ge=1, le=MAX_HOURS)


class Booking(BaseModel):
    """A package booked on a node for `[start, end)`, signed by the node; `request` is the user's signed request."""

    id: str
    node_iid: str = ""
    user_iid: str
    package: str
    cores: int
    memory: int  # MiB
    start: int  # UTC ms
    end: int  # UTC ms (exclusive)
    t_created: int
    state: Literal["booked", "expired"] = "booked"  # expired: unused for the node's booking grace, capacity freed
    request: SignedRequest | None = None  # the user's POST /rti/bookings as the node received it
    signature: str = ""  # the node's, over every other field

    def signed_content(self) -> bytes:
        return _canonical(self.model_dump(mode="json", exclude={"signature"}))

    def verify(self, node: Identity, user: Identity | None = None) -> bool:
        """Signed by `node`, and (with `user`) asked for by `user` in the request it carries."""
        return verify_booking(self, node, user) is None


def verify_booking(booking: Booking, node: Identity, user: Identity | None = None) -> str | None:
    """Why `booking` is not what `node` stored for `user`'s signed request, or None when it is. Without `user`,
    only the node's signature is checked. Blocks (signature checks)."""
    if booking.node_iid != node.id or not node.verify_signature(booking.signed_content(), booking.signature):
        return "the booking is not signed by its node"
    if user is None:
        return None
    from saas.core.signing import request_string

    request = booking.request
    if request is None:
        return "the booking carries no signed request of its user"
    if user.id != booking.user_iid or request.iid != user.id or request.node != booking.node_iid:
        return "the booking's request was not made by its user to its node"
    body_sha256 = hashlib.sha256(request.body.encode("utf-8")).hexdigest()
    message = request_string(request.method, request.path, request.timestamp, request.nonce, request.node, body_sha256)
    if not user.verify_signature(message, request.signature):
        return "the booking's request is not signed by its user"
    try:
        asked = BookingParameters.model_validate_json(request.body)
    except ValueError:
        return "the booking's request does not ask for a booking"
    held = (booking.package, booking.start, booking.end)
    if request.method != "POST" or (asked.package, asked.start, asked.start + asked.hours * 3600 * 1000) != held:
        return "the booking is not what its request asked for"
    return None


class Availability(BaseModel):
    """Per package, one state per slot: "free", "taken" or "yours"."""

    start: int
    slot_hours: int
    slots: int
    grid: dict[str, list[Literal["free", "taken", "yours"]]]


class Offer(BaseModel):
    """A node's answer to "can I do this?", signed by the node."""

    offer_id: str
    node_iid: str
    user_iid: str
    proc_id: str
    can: bool
    reasons: list[str] = Field(default_factory=list)
    level: str
    package: Package | None = None  # what the job would get
    asked: dict[str, Any] = Field(default_factory=dict)  # what the descriptor and the task ask
    deployed: bool
    processor_state: str | None = None
    locality: Locality
    queue: QueueEstimate
    booking: Booking | None = None  # the user's earliest booking here that has not ended
    pending_left: int | None = None  # jobs the user may still submit before the pending bound (None: unbounded)
    running_left: int | None = None  # jobs of the user that may still run at once (None: the fair share)
    t_issued: int
    t_expires: int
    signature: str = ""

    def signed_content(self) -> bytes:
        return _canonical(self.model_dump(mode="json", exclude={"signature"}))

    def verify(self, node: Identity, now_ms: int | None = None) -> bool:
        """Signed by `node` and not expired."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        return (
            self.node_iid == node.id
            and now < self.t_expires
            and node.verify_signature(self.signed_content(), self.signature)
        )
