"""Times of bookings and availability grids (issue 18, item 5): UTC milliseconds, on the hour or on the day.

Shared by the node (`saas.rti.bookings`), the CLI (`rti availability`, `rti book`) and the SDK (`saas.sdk.bookings`);
standard library only. What callers may rely on: a naive `datetime` is taken as UTC (as the CLI takes `--from`), and
`slot_start` rounds down, never up."""

from __future__ import annotations

import datetime

__all__ = ["DAY_MS", "HOUR_MS", "slot_start", "utc_ms"]

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS


def utc_ms(when: datetime.datetime | datetime.date | int) -> int:
    """`when` as UTC milliseconds: an int is taken as such, a naive datetime (or a date, at 00:00) as UTC."""
    if isinstance(when, int):
        return when
    if not isinstance(when, datetime.datetime):
        when = datetime.datetime(when.year, when.month, when.day)
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp() * 1000)


def slot_start(when: datetime.datetime | datetime.date | int, hourly: bool) -> int:
    """The start of the hour (`hourly`) or of the UTC day that holds `when`, in UTC milliseconds."""
    ms = utc_ms(when)
    return ms - ms % (HOUR_MS if hourly else DAY_MS)
