"""REST routes of resource packages, account levels and offers (issue 18), under `/rti` next to `saas.rti.api`.
Thin: parse, authenticate, call the RTI service and the modules of each concept."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from saas.core.errors import InvalidInputError
from saas.rest.auth import OptionalIdentity, SignedIdentity, session_of, signed_fields
from saas.rti import offers
from saas.rti.bookings import HOUR_MS
from saas.rti.levels import LevelParameters
from saas.rti.offer_schemas import (
    AccountLevel,
    Availability,
    Booking,
    BookingParameters,
    Offer,
    OfferParameters,
    Package,
    SignedRequest,
)
from saas.rti.service import RTIService

__all__ = ["router"]

router = APIRouter(prefix="/rti", tags=["rti"])
IidPath = Annotated[str, Path(pattern=r"^[0-9a-z]{64}$", description="identity ID")]


def _rti(request: Request) -> RTIService:
    return request.app.state.node.rti


@router.get("/packages", response_model=list[Package])
async def get_packages(request: Request) -> list[Package]:
    """The node's resource packages (anonymous): what a job may name as its `package`."""
    return list(_rti(request).packages.values())


@router.get("/levels", response_model=list[AccountLevel])
async def get_levels(request: Request, caller: SignedIdentity) -> list[AccountLevel]:
    """The levels the node owner assigned (node owner only)."""
    return _rti(request).levels.list(caller)


@router.get("/levels/{iid}", response_model=AccountLevel)
async def get_level(iid: IidPath, request: Request, caller: SignedIdentity) -> AccountLevel:
    """An identity's level and the packages it may ask for (to the node owner, or to that identity)."""
    return _rti(request).levels.show(caller, iid)


@router.put("/levels/{iid}", response_model=AccountLevel)
async def set_level(iid: IidPath, params: LevelParameters, request: Request, caller: SignedIdentity) -> AccountLevel:
    """Assign a level (node owner only); stored signed by the node."""
    rti = _rti(request)
    return await rti.levels.set(caller, iid, params, set(rti.packages))


@router.delete("/levels/{iid}", response_model=AccountLevel)
async def reset_level(iid: IidPath, request: Request, caller: SignedIdentity) -> AccountLevel:
    """Forget an identity's level (node owner only): it has the node's default level again."""
    return await _rti(request).levels.reset(caller, iid)


@router.post("/offers", response_model=Offer)
async def make_offer(params: OfferParameters, request: Request, caller: SignedIdentity) -> Offer:
    """Can this node run the task for the caller? A signed, expiring offer: can or cannot with every reason, the
    package the job would get, whether the processor is deployed, data locality, estimated queue wait, quota left."""
    return await offers.make_offer(_rti(request), request.app.state.node, caller, params)


BookingId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{8,64}$", description="booking ID")]


@router.get("/availability", response_model=Availability)
async def get_availability(
    request: Request,
    caller: OptionalIdentity,
    start: Annotated[int | None, Query(ge=0, description="UTC ms on the hour (default: this hour, or today)")] = None,
    days: Annotated[int | None, Query(ge=1, le=366)] = None,
    hours: Annotated[int | None, Query(ge=1, le=24 * 366)] = None,
    packages: Annotated[str | None, Query(max_length=1024, description="comma-separated names (default: all)")] = None,
) -> Availability:
    """Per package and day (or hour, with `hours`): free, taken or (signed) yours."""
    rti = _rti(request)
    names = [p for p in (packages or "").split(",") if p] or list(rti.packages)
    unknown = [n for n in names if n not in rti.packages]
    if unknown:
        raise InvalidInputError(f"This node has no package {', '.join(unknown)}", {"packages": unknown[:10]})
    slot_hours, slots = (1, hours) if hours else (24, days or 7)
    now = int(time.time() * 1000)
    if start is None:
        start = now - now % (HOUR_MS * slot_hours)
    chosen = [rti.packages[n] for n in names]
    return await rti.bookings.availability(caller, chosen, start, slots, slot_hours)


async def _signed_request(request: Request) -> SignedRequest | None:
    """The caller's signed request as received (verified by `SignedIdentity`; None from a dashboard session)."""
    if session_of(request) is not None:
        return None
    return SignedRequest(
        **signed_fields(request),
        body=(await request.body()).decode("utf-8", errors="replace"),
    )


@router.post("/bookings", response_model=Booking)
async def book(params: BookingParameters, request: Request, caller: SignedIdentity) -> Booking:
    """Book a package for whole hours (409 when the node's capacity is taken then)."""
    rti = _rti(request)
    return await rti.bookings.book(caller, params, rti.packages, await _signed_request(request))


@router.get("/bookings", response_model=list[Booking])
async def get_bookings(request: Request, caller: SignedIdentity) -> list[Booking]:
    """The caller's bookings on this node."""
    return await _rti(request).bookings.mine(caller)


@router.get("/bookings/{booking_id}", response_model=Booking)
async def get_booking(booking_id: BookingId, request: Request, caller: SignedIdentity) -> Booking:
    """One booking (its user or the node owner)."""
    return await _rti(request).bookings.get(caller, booking_id)


@router.delete("/bookings/{booking_id}", response_model=Booking)
async def unbook(booking_id: BookingId, request: Request, caller: SignedIdentity) -> Booking:
    """Cancel a booking (its user or the node owner)."""
    return await _rti(request).bookings.cancel(caller, booking_id)
