"""Calendar bookings of resource packages (issue 18, item 5; first part): a user books a package on this node for
whole hours, checked against the node's capacity minus the other bookings, and sees the availability grid.

What callers may rely on:
- a booking is made by a signed request of its user, for hours `[start, end)` aligned to the hour (UTC), for a
  package the user's level allows, by a user whose level allows booking (`extended`, `custom`, the node owner);
  it is stored in the RTI's SQLite.
- capacity: the node's cores (`job_cores` or every core) and memory (`job_memory` or half the memory) — the `large`
  package of the default packages; bookings that overlap an hour together never take more (409 otherwise, naming
  the hour).
- `availability` answers, per package and slot (a day or an hour), "free" (the package still fits in every hour
  of the slot), "taken", or "yours" (the caller has that package booked for the whole slot).
- enforced by the scheduler (`reservations`): while a booking runs, its share of the node's slots (its cores over
  the node's, at least one slot) is its user's; the user's jobs take those slots ahead of the queue and nobody
  else's jobs take them (`SlotPool.reserved`). `watch` re-dispatches when a booking starts or ends.
- not yet: an unused booking does not expire."""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from saas.core.errors import AuthorisationError, ConflictError, InvalidInputError, NotFoundError, RTIError
from saas.core.identity import Identity
from saas.rti.packages import Package

if TYPE_CHECKING:
    import sqlite3

    from saas.node import Node
    from saas.rti.levels import LevelStore
    from saas.sqlite import Database

__all__ = ["SCHEMA", "Availability", "Booking", "BookingParameters", "BookingStore", "UnknownBookingError"]

HOUR_MS = 3600 * 1000
MAX_HOURS = 366 * 24  # the longest booking, and the longest availability grid, in hours
MAX_BOOKINGS_PER_USER = 100

SCHEMA = """
CREATE TABLE IF NOT EXISTS bookings (
    id TEXT PRIMARY KEY, user_iid TEXT NOT NULL, package TEXT NOT NULL, cores INTEGER NOT NULL,
    memory INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, t_created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bookings_time ON bookings(start, end);
"""


class UnknownBookingError(RTIError, NotFoundError):
    pass


class BookingParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    package: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
    start: int = Field(ge=0, description="UTC ms, on the hour")
    hours: int = Field(ge=1, le=MAX_HOURS)


class Booking(BaseModel):
    id: str
    user_iid: str
    package: str
    cores: int
    memory: int  # MiB
    start: int  # UTC ms
    end: int  # UTC ms (exclusive)
    t_created: int


class Availability(BaseModel):
    """Per package, one state per slot: "free", "taken" or "yours"."""

    start: int
    slot_hours: int
    slots: int
    grid: dict[str, list[Literal["free", "taken", "yours"]]]


def _row(r: sqlite3.Row) -> Booking:
    return Booking(**{k: r[k] for k in r.keys()})  # noqa: SIM118 (sqlite3.Row)


def _overlapping(conn: sqlite3.Connection, start: int, end: int) -> list[Booking]:
    rows = conn.execute("SELECT * FROM bookings WHERE start < ? AND end > ? ORDER BY start", (end, start))
    return [_row(r) for r in rows]


def _hours_over(
    bookings: list[Booking], start: int, end: int, cores: int, memory: int, total: tuple[int, int]
) -> int | None:
    """The first hour in [start, end) in which `bookings` plus (cores, memory) exceed `total`, or None."""
    for hour in range(start, end, HOUR_MS):
        used = [b for b in bookings if b.start <= hour < b.end]
        if sum(b.cores for b in used) + cores > total[0] or sum(b.memory for b in used) + memory > total[1]:
            return hour
    return None


def _insert(conn: sqlite3.Connection, booking: Booking, total: tuple[int, int]) -> None:
    """Store the booking unless it does not fit (checked in the same transaction as the insert)."""
    hour = _hours_over(_overlapping(conn, booking.start, booking.end), booking.start, booking.end,
                       booking.cores, booking.memory, total)  # fmt: skip
    if hour is not None:
        when = time.strftime("%Y-%m-%d %H:00 UTC", time.gmtime(hour / 1000))
        raise ConflictError(
            f"Package '{booking.package}' is not free at {when}: other bookings take the node's capacity",
            {"hour": hour},
        )
    mine = conn.execute("SELECT count(*) FROM bookings WHERE user_iid = ?", (booking.user_iid,)).fetchone()[0]
    if mine >= MAX_BOOKINGS_PER_USER:
        raise ConflictError(f"You have {mine} bookings on this node, the most it keeps per user")
    conn.execute(
        "INSERT INTO bookings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (booking.id, booking.user_iid, booking.package, booking.cores, booking.memory, booking.start, booking.end,
         booking.t_created),
    )  # fmt: skip


class BookingStore:
    def __init__(self, node: Node, db: Database, levels: LevelStore):
        self._node = node
        self._db = db
        self._levels = levels
        self._current: list[Booking] = []  # bookings that have not ended (loaded at start, kept up to date)

    async def load(self) -> None:
        now = int(time.time() * 1000)

        def rows(conn: sqlite3.Connection) -> list[Booking]:
            return [_row(r) for r in conn.execute("SELECT * FROM bookings WHERE end > ?", (now,))]

        self._current = await self._db.run(rows)

    def reservations(self, slots: int, now_ms: int | None = None) -> dict[str, int]:
        """The slots (of `slots`) each user has booked now."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        cores = self.capacity()[0]
        reserved: dict[str, int] = {}
        for b in self._current:
            if b.start <= now < b.end:
                share = max(1, math.ceil(b.cores / cores * slots))
                reserved[b.user_iid] = min(slots, reserved.get(b.user_iid, 0) + share)
        return reserved

    async def watch(self, changed: Callable[[], None], stopping: Callable[[], bool]) -> None:
        """Call `changed` whenever the set of running bookings changes (looked at every second until `stopping`)."""
        running: set[str] = set()
        while not stopping():
            now = int(time.time() * 1000)
            self._current = [b for b in self._current if b.end > now]
            now_running = {b.id for b in self._current if b.start <= now}
            if now_running != running:
                running = now_running
                changed()
            await asyncio.sleep(1.0)

    def capacity(self) -> tuple[int, int]:
        """(cores, MiB) the bookings share."""
        config = self._node.config
        cores = int(config.job_cores) if config.job_cores else os.cpu_count() or 1
        if config.job_memory:
            return cores, config.job_memory
        try:
            return cores, max(64, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**21)
        except (ValueError, OSError):
            return cores, 4096

    async def book(self, caller: Identity, params: BookingParameters, packages: dict[str, Package]) -> Booking:
        package = packages.get(params.package)
        if package is None:
            raise InvalidInputError(f"This node has no package '{params.package}' (it has: {', '.join(packages)})")
        level = self._levels.get(caller.id)
        if caller.id != self._node.iid and level.level not in ("extended", "custom"):
            raise AuthorisationError(f"Your account level on this node ({level.level}) does not allow booking")
        allowed = self._levels.allowed(caller.id)
        if allowed is not None and package.name not in allowed:
            raise AuthorisationError(f"Your account level does not allow package '{package.name}'")
        if params.start % HOUR_MS:
            raise InvalidInputError("A booking starts on the hour (UTC)")
        now = int(time.time() * 1000)
        if params.start + params.hours * HOUR_MS <= now:
            raise InvalidInputError("A booking cannot end in the past")
        booking = Booking(
            id=secrets.token_urlsafe(12),
            user_iid=caller.id,
            package=package.name,
            cores=package.cores,
            memory=package.memory,
            start=params.start,
            end=params.start + params.hours * HOUR_MS,
            t_created=now,
        )
        await self._db.run(_insert, booking, self.capacity())
        self._current.append(booking)
        return booking

    async def mine(self, caller: Identity) -> list[Booking]:
        def rows(conn: sqlite3.Connection) -> list[Booking]:
            found = conn.execute("SELECT * FROM bookings WHERE user_iid = ? ORDER BY start", (caller.id,))
            return [_row(r) for r in found]

        return await self._db.run(rows)

    async def get(self, caller: Identity, booking_id: str) -> Booking:
        def row(conn: sqlite3.Connection) -> Booking | None:
            found = conn.execute("SELECT * FROM bookings WHERE id = ?", (booking_id,)).fetchone()
            return _row(found) if found is not None else None

        booking = await self._db.run(row)
        if booking is None or caller.id not in (booking.user_iid, self._node.iid):
            raise UnknownBookingError(f"No booking {booking_id} of yours on this node", {"booking_id": booking_id})
        return booking

    async def cancel(self, caller: Identity, booking_id: str) -> Booking:
        booking = await self.get(caller, booking_id)
        await self._db.run(lambda conn: conn.execute("DELETE FROM bookings WHERE id = ?", (booking_id,)))
        self._current = [b for b in self._current if b.id != booking_id]
        return booking

    async def earliest(self, user_iid: str) -> Booking | None:
        """The user's booking that ends first and has not ended."""
        now = int(time.time() * 1000)

        def row(conn: sqlite3.Connection) -> Booking | None:
            found = conn.execute(
                "SELECT * FROM bookings WHERE user_iid = ? AND end > ? ORDER BY start LIMIT 1", (user_iid, now)
            ).fetchone()
            return _row(found) if found is not None else None

        return await self._db.run(row)

    async def availability(
        self, caller: Identity | None, packages: list[Package], start: int, slots: int, slot_hours: int
    ) -> Availability:
        if start % HOUR_MS:
            raise InvalidInputError("The grid starts on the hour (UTC)")
        if slots * slot_hours > MAX_HOURS:
            raise InvalidInputError(f"The grid covers at most {MAX_HOURS} hours")
        end = start + slots * slot_hours * HOUR_MS
        booked = await self._db.run(_overlapping, start, end)
        total = self.capacity()
        grid: dict[str, list[Literal["free", "taken", "yours"]]] = {}
        for package in packages:
            states: list[Literal["free", "taken", "yours"]] = []
            for i in range(slots):
                a = start + i * slot_hours * HOUR_MS
                b = a + slot_hours * HOUR_MS
                if caller is not None and any(
                    x.user_iid == caller.id and x.package == package.name and x.start <= a and x.end >= b
                    for x in booked
                ):
                    states.append("yours")
                elif _hours_over(booked, a, b, package.cores, package.memory, total) is None:
                    states.append("free")
                else:
                    states.append("taken")
            grid[package.name] = states
        return Availability(start=start, slot_hours=slot_hours, slots=slots, grid=grid)
