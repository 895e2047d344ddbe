"""The SDK side of resource packages, account levels and offers (issue 18): methods of `RTIProxy` (mixed in), with
the same verbs as the routes of `saas.rti.offers_api`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from saas.rti.offer_schemas import AccountLevel, Availability, Booking, Offer, OfferParameters, Package

if TYPE_CHECKING:
    import httpx

    from saas.core.signing import Signer

__all__ = ["OffersMixin"]

_PACKAGES = TypeAdapter(list[Package])
_LEVELS = TypeAdapter(list[AccountLevel])
_BOOKINGS = TypeAdapter(list[Booking])


class OffersMixin:
    """Needs `request` (`saas.rest.proxy.RESTProxy`)."""

    if TYPE_CHECKING:

        def request(
            self,
            method: str,
            path: str,
            *,
            params: Any = None,
            json_body: Any = None,
            content: Any = None,
            body_sha256: str | None = None,
            signer: Any = None,
            signed: bool = False,
            headers: dict[str, str] | None = None,
            stream: bool = False,
        ) -> httpx.Response: ...

    def get_packages(self) -> list[Package]:
        """The node's resource packages (anonymous)."""
        return list(_PACKAGES.validate_python(self.request("GET", "/rti/packages").json()))

    def get_levels(self, authority: Signer) -> list[AccountLevel]:
        """The levels the node owner assigned (node owner only)."""
        return list(_LEVELS.validate_python(self.request("GET", "/rti/levels", signer=authority).json()))

    def get_level(self, iid: str, authority: Signer) -> AccountLevel:
        """An identity's level and the packages it may ask for (node owner, or the identity itself)."""
        return AccountLevel.model_validate(self.request("GET", f"/rti/levels/{iid}", signer=authority).json())

    def set_level(self, iid: str, level: str, authority: Signer, packages: list[str] | None = None) -> AccountLevel:
        """Assign a level (node owner only): guest, basic, extended or custom (with its `packages`)."""
        body = {"level": level, "packages": list(packages or [])}
        response = self.request("PUT", f"/rti/levels/{iid}", json_body=body, signer=authority)
        return AccountLevel.model_validate(response.json())

    def reset_level(self, iid: str, authority: Signer) -> AccountLevel:
        """Forget an identity's level (node owner only): it has the node's default level again."""
        return AccountLevel.model_validate(self.request("DELETE", f"/rti/levels/{iid}", signer=authority).json())

    def get_offer(self, task: OfferParameters | dict[str, Any], authority: Signer) -> Offer:
        """Ask the node whether it can run `task` for `authority`: a signed, expiring `Offer` (check it with
        `Offer.verify(node_identity)`)."""
        params = OfferParameters.model_validate(task)
        body = params.model_dump(mode="json", exclude_none=True)
        return Offer.model_validate(self.request("POST", "/rti/offers", json_body=body, signer=authority).json())

    def get_availability(
        self,
        start: int | None = None,
        days: int | None = None,
        hours: int | None = None,
        packages: list[str] | None = None,
        authority: Signer | None = None,
    ) -> Availability:
        """Per package and day (or hour, with `hours`): free, taken or (signed by `authority`) yours."""
        params: dict[str, Any] = {"start": start, "days": days, "hours": hours}
        params = {k: v for k, v in params.items() if v is not None}
        if packages:
            params["packages"] = ",".join(packages)
        response = self.request("GET", "/rti/availability", params=params, signer=authority)
        return Availability.model_validate(response.json())

    def book(self, package: str, start: int, hours: int, authority: Signer) -> Booking:
        """Book `package` for `hours` whole hours from `start` (UTC ms on the hour); 409 when it is taken."""
        body = {"package": package, "start": start, "hours": hours}
        return Booking.model_validate(self.request("POST", "/rti/bookings", json_body=body, signer=authority).json())

    def get_bookings(self, authority: Signer) -> list[Booking]:
        return list(_BOOKINGS.validate_python(self.request("GET", "/rti/bookings", signer=authority).json()))

    def get_booking(self, booking_id: str, authority: Signer) -> Booking:
        """One booking (its user or the node owner), as the node stored it: signed by the node, with the user's
        signed request; check it with `Booking.verify(node_identity, user_identity)`."""
        return Booking.model_validate(self.request("GET", f"/rti/bookings/{booking_id}", signer=authority).json())

    def unbook(self, booking_id: str, authority: Signer) -> Booking:
        return Booking.model_validate(self.request("DELETE", f"/rti/bookings/{booking_id}", signer=authority).json())
