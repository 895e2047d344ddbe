"""The SDK's calendar bookings (issue 18, items 5 and 6): resource packages, the availability grid, booking,
listing and cancelling, as methods of `SDKContext` (mixed in), with the verbs of `RTIProxy` (`saas.rti.offers_proxy`).

What callers may rely on:
- `node` is a `NodeInfo` or a node's identity ID; without it, the context's RTI node (`context.rti()`).
- Every call is signed by the context's keystore (the grid then shows your bookings as "yours").
- Dates are `datetime` (naive: UTC), `date` or UTC milliseconds, rounded down as `saas-cli rti book --from DATE`
  does: to the UTC day with `days`, to the hour with `hours` (`saas.rti.booking_time`).
- The answers are the schema objects of `saas.rti.offer_schemas`; errors are those of `saas.core.errors` (a booking
  that does not fit is `ConflictError`, 409).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from saas.core.errors import InvalidInputError
from saas.nodedb.schemas import NodeInfo
from saas.rti.booking_time import slot_start
from saas.rti.offer_schemas import Availability, Booking, Package

if TYPE_CHECKING:
    from saas.core.keystore import Keystore
    from saas.rti.proxy import RTIProxy

__all__ = ["BookingsMixin", "When"]

When = datetime.datetime | datetime.date | int  # a datetime (naive: UTC), a date, or UTC milliseconds


class BookingsMixin:
    """Needs the context's `keystore`, `rti(iid)` and `_rti_proxy(node)` (`saas.sdk.base.SDKContext`)."""

    if TYPE_CHECKING:

        @property
        def keystore(self) -> Keystore: ...

        def rti(self, preferred_iid: str | None = None) -> NodeInfo: ...

        def _rti_proxy(self, node: NodeInfo, timeout: float | None = 60.0) -> RTIProxy: ...

    def _booking_node(self, node: NodeInfo | str | None) -> NodeInfo:
        if isinstance(node, NodeInfo):
            if not node.rti_service:
                raise InvalidInputError(f"Node {node.identity.id} has no RTI service")
            return node
        return self.rti(node)

    def get_packages(self, node: NodeInfo | str | None = None) -> list[Package]:
        """The node's resource packages."""
        with self._rti_proxy(self._booking_node(node)) as rti:
            return rti.get_packages()

    def get_availability(
        self,
        packages: list[str] | None = None,
        start: When | None = None,
        days: int | None = None,
        hours: int | None = None,
        node: NodeInfo | str | None = None,
    ) -> Availability:
        """Per package (all without `packages`) and day, or hour with `hours`: "free", "taken" or "yours". `start`
        defaults to today (this hour with `hours`), `days` to the node's default (a week)."""
        first = None if start is None else slot_start(start, hourly=hours is not None)
        with self._rti_proxy(self._booking_node(node)) as rti:
            return rti.get_availability(first, days, hours, packages, self.keystore)

    def book(
        self,
        package: str,
        start: When,
        days: int | None = None,
        hours: int | None = None,
        node: NodeInfo | str | None = None,
    ) -> Booking:
        """Book `package` for whole `days` (from the UTC day of `start`) or `hours` (from its hour). Raises
        `ConflictError` when the node's capacity minus the other bookings cannot hold it."""
        if (days is None) == (hours is None):
            raise InvalidInputError("Give the length of the booking: days or hours (one of them)")
        length = hours if hours is not None else 24 * (days or 0)
        with self._rti_proxy(self._booking_node(node)) as rti:
            return rti.book(package, slot_start(start, hourly=hours is not None), length, self.keystore)

    def get_bookings(self, node: NodeInfo | str | None = None) -> list[Booking]:
        """Your bookings on the node, earliest first."""
        with self._rti_proxy(self._booking_node(node)) as rti:
            return rti.get_bookings(self.keystore)

    def get_booking(self, booking_id: str, node: NodeInfo | str | None = None) -> Booking:
        """One of your bookings, as the node stored it (check it with `Booking.verify(node identity, yours)`)."""
        with self._rti_proxy(self._booking_node(node)) as rti:
            return rti.get_booking(booking_id, self.keystore)

    def unbook(self, booking_id: str, node: NodeInfo | str | None = None) -> Booking:
        """Cancel one of your bookings; its capacity is free at once."""
        with self._rti_proxy(self._booking_node(node)) as rti:
            return rti.unbook(booking_id, self.keystore)
