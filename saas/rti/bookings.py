"""Calendar bookings of resource packages (issue 18, item 5): a user books a package on this node for whole hours,
checked against the node's capacity minus the other bookings, and sees the availability grid.

What callers may rely on:
- a booking is made by a signed request of its user, for hours `[start, end)` aligned to the hour (UTC), for a
  package the user's level allows, by a user whose level allows booking (`extended`, `custom`, the node owner).
  It is stored in the RTI's SQLite as a record signed by the node that carries the user's signed request
  (`Booking.request`, `Booking.signature`; `saas.rti.offer_schemas.verify_booking` checks both). A stored record
  that does not verify, or whose row was changed, is not trusted: it takes no capacity, reserves nothing, is not
  shown, and is audited once (`booking.altered`).
- capacity: the node's cores (`job_cores` or every core) and memory (`job_memory` or half the memory) — the `large`
  package of the default packages; bookings that overlap an hour together never take more (409 otherwise, naming
  the hour).
- `availability` answers, per package and slot (a day or an hour), "free" (the package still fits in every hour
  of the slot), "taken", or "yours" (the caller has that package booked for the whole slot).
- enforced by the scheduler: while a booking runs, its share of the node (its cores over the node's) is its
  user's, in every pool (`shares` → `Scheduler.reserve`: the local slots, the ssh/slurm slots) and for agent jobs
  (`admit_agent`): the user's jobs take it ahead of the queue and nobody else's jobs take it. The scheduler is
  told (`watch`'s `changed`) when a booking starts, ends, expires or is cancelled.
- an unused booking expires: when no job of its user started during the first `booking_grace` seconds of it
  (counted from its start, or from when it was made if later), it becomes `expired`, its capacity is free
  again, and the audit log has `booking.expired`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from saas.core.errors import AuthorisationError, ConflictError, InvalidInputError, NotFoundError, RTIError
from saas.core.identity import Identity
from saas.rti.booking_time import HOUR_MS
from saas.rti.offer_schemas import MAX_HOURS, Availability, Booking, BookingParameters, SignedRequest
from saas.rti.packages import Package

if TYPE_CHECKING:
    import sqlite3

    from saas.node import Node
    from saas.rti.levels import LevelStore
    from saas.rti.records import ProcessorRecord
    from saas.sqlite import Database

__all__ = [
    "HOUR_MS",
    "MAX_HOURS",
    "SCHEMA",
    "Availability",
    "Booking",
    "BookingParameters",
    "BookingStore",
    "UnknownBookingError",
]

logger = logging.getLogger(__name__)

MAX_BOOKINGS_PER_USER = 100
RECENT_JOBS = 200  # the user's latest jobs looked at to tell whether a booking was used

SCHEMA = """
CREATE TABLE IF NOT EXISTS bookings (
    id TEXT PRIMARY KEY, user_iid TEXT NOT NULL, package TEXT NOT NULL, cores INTEGER NOT NULL,
    memory INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL, t_created INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'booked', record TEXT
);
CREATE INDEX IF NOT EXISTS bookings_time ON bookings(start, end);
"""
_COLUMNS = ("user_iid", "package", "cores", "memory", "start", "end", "t_created", "state")
_LIVE = "state = 'booked'"


class UnknownBookingError(RTIError, NotFoundError):
    pass


class _Checker:
    """Turns rows into bookings, keeping only those whose record is signed by this node and equal to the row's
    columns (called in the database's thread; a record checked once is not checked again)."""

    def __init__(self, node: Identity):
        self._node = node
        self._good: set[bytes] = set()
        self.altered: dict[str, None] = {}  # booking IDs found altered, not yet reported

    def __call__(self, row: sqlite3.Row) -> Booking | None:
        text = row["record"] or ""
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        try:
            booking = Booking.model_validate_json(text)
        except ValidationError:
            booking = None
        same = booking is not None and booking.id == row["id"] and all(getattr(booking, k) == row[k] for k in _COLUMNS)
        if booking is not None and same and (digest in self._good or self._signed(booking)):
            self._good.add(digest)
            return booking
        self.altered[row["id"]] = None
        return None

    def _signed(self, booking: Booking) -> bool:
        return booking.node_iid == self._node.id and self._node.verify_signature(
            booking.signed_content(), booking.signature
        )

    def rows(self, rows: list[sqlite3.Row]) -> list[Booking]:
        return [b for b in map(self, rows) if b is not None]


def migrate(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Add the columns of signed records to a table made before them; returns the rows without a record."""
    columns = {r["name"] for r in conn.execute("PRAGMA table_info(bookings)")}
    if "state" not in columns:
        conn.execute("ALTER TABLE bookings ADD COLUMN state TEXT NOT NULL DEFAULT 'booked'")
    if "record" not in columns:
        conn.execute("ALTER TABLE bookings ADD COLUMN record TEXT")
    return conn.execute("SELECT * FROM bookings WHERE record IS NULL").fetchall()


def _put(conn: sqlite3.Connection, booking: Booking) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO bookings (id, user_iid, package, cores, memory, start, end, t_created, state, record) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (booking.id, *(getattr(booking, k) for k in _COLUMNS), booking.model_dump_json()),
    )


def _overlapping(conn: sqlite3.Connection, check: _Checker, start: int, end: int) -> list[Booking]:
    rows = conn.execute(f"SELECT * FROM bookings WHERE start < ? AND end > ? AND {_LIVE} ORDER BY start", (end, start))
    return check.rows(rows.fetchall())


def _hours_over(
    bookings: list[Booking], start: int, end: int, cores: int, memory: int, total: tuple[int, int]
) -> int | None:
    """The first hour in [start, end) in which `bookings` plus (cores, memory) exceed `total`, or None."""
    for hour in range(start, end, HOUR_MS):
        used = [b for b in bookings if b.start <= hour < b.end]
        if sum(b.cores for b in used) + cores > total[0] or sum(b.memory for b in used) + memory > total[1]:
            return hour
    return None


def _insert(conn: sqlite3.Connection, check: _Checker, booking: Booking, total: tuple[int, int]) -> None:
    """Store the booking unless it does not fit (checked in the same transaction as the insert)."""
    hour = _hours_over(_overlapping(conn, check, booking.start, booking.end), booking.start, booking.end,
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
    _put(conn, booking)


def _expire(conn: sqlite3.Connection, expired: Booking) -> bool:
    """Store the booking's expired record, unless it is gone or no longer live (returns whether it was stored)."""
    cursor = conn.execute(
        f"UPDATE bookings SET state = ?, record = ? WHERE id = ? AND {_LIVE}",
        (expired.state, expired.model_dump_json(), expired.id),
    )
    return cursor.rowcount == 1


def _used(conn: sqlite3.Connection, user_iid: str, since: int) -> bool:
    """Whether a job of the user started (was initialised) at or after `since` (UTC ms)."""
    rows = conn.execute(
        "SELECT status FROM jobs WHERE user_iid = ? AND state != 'pending' ORDER BY seq DESC LIMIT ?",
        (user_iid, RECENT_JOBS),
    )
    for row in rows:
        timeline = json.loads(row["status"]).get("timeline", [])
        if any(t["state"] in ("initialising", "running") and t["time"] >= since for t in timeline):
            return True
    return False


class BookingStore:
    def __init__(self, node: Node, db: Database, levels: LevelStore):
        self._node = node
        self._db = db
        self._levels = levels
        self._current: list[Booking] = []  # live bookings that have not ended (loaded at start, kept up to date)
        self._check = _Checker(node.keystore.identity)
        self._changed: Callable[[], None] = lambda: None  # the scheduler's (set by `watch`)
        self._wake: asyncio.Event | None = None
        self._used: set[str] = set()  # running bookings a job of their user used
        self._agent_jobs: dict[tuple[str, str], int] = {}  # (agent, user) -> jobs admitted and not ended
        self._reported: set[str] = set()  # altered bookings already audited
        self._waiters: list[asyncio.Future[None]] = []  # agent jobs waiting at the gate (`admit_agent`)
        self.interval = 1.0  # seconds between two looks of `watch` (it also looks when woken)

    # -- records -------------------------------------------------------------------------------------------------

    async def _sign(self, booking: Booking) -> Booking:
        signature = await asyncio.to_thread(self._node.keystore.sign, booking.signed_content())
        return booking.model_copy(update={"signature": signature})

    async def _read(self, fn: Callable[..., list[Booking]], *args: object) -> list[Booking]:
        """`fn(conn, checker, *args)` in the database's thread, then the altered records it met audited."""
        found = await self._db.run(fn, self._check, *args)
        self._report()
        return found

    def _report(self) -> None:
        altered, self._check.altered = [i for i in self._check.altered if i not in self._reported], {}
        self._reported.update(altered)
        for booking_id in altered:
            logger.warning("the stored booking %s is not the one this node signed: not trusted", booking_id)
            self._node.audit.record("booking.altered", booking_id=booking_id)

    async def load(self) -> None:
        """At start: sign the records kept before bookings were signed, and read the live ones."""
        unsigned = await self._db.run(migrate)
        for row in unsigned:
            booking = await self._sign(Booking(**{k: row[k] for k in ("id", *_COLUMNS)}, node_iid=self._node.iid))
            await self._db.run(_put, booking)
        now = int(time.time() * 1000)

        def rows(conn: sqlite3.Connection, check: _Checker) -> list[Booking]:
            return check.rows(conn.execute(f"SELECT * FROM bookings WHERE end > ? AND {_LIVE}", (now,)).fetchall())

        self._current = await self._read(rows)

    # -- enforcement ---------------------------------------------------------------------------------------------

    def shares(self, now_ms: int | None = None) -> dict[str, float]:
        """The share of the node (0 to 1: booked cores over the node's) each user has booked now."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        cores = self.capacity()[0]
        shares: dict[str, float] = {}
        for b in self._current:
            if b.start <= now < b.end:
                shares[b.user_iid] = min(1.0, shares.get(b.user_iid, 0.0) + b.cores / cores)
        return shares

    def reservations(self, slots: int, now_ms: int | None = None) -> dict[str, int]:
        """The slots (of `slots`) each user has booked now (at least one per running booking)."""
        return {user: min(slots, max(1, math.ceil(share * slots))) for user, share in self.shares(now_ms).items()}

    def _tell(self) -> None:
        """The running bookings changed: the scheduler looks again, agent jobs waiting at the gate too."""
        self._changed()
        self.wake()

    def wake(self) -> None:
        """`watch` and the agent jobs waiting at the gate look again now."""
        if self._wake is not None:
            self._wake.set()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def watch(self, changed: Callable[[], None], stopping: Callable[[], bool]) -> None:
        """Call `changed` whenever the set of running bookings changes (a booking starts, ends, expires or is
        cancelled), and expire the unused ones; looks every `interval` seconds (and when woken) until `stopping`."""
        self._changed = changed
        self._wake = asyncio.Event()
        running: set[str] = set()
        while not stopping():
            now = int(time.time() * 1000)
            self._current = [b for b in self._current if b.end > now]
            try:
                await self._expire_unused(now)
            except Exception:  # e.g. the database while the node stops: look again next time
                logger.exception("looking for unused bookings failed")
            now_running = {b.id for b in self._current if b.start <= now}
            self._used &= now_running
            if now_running != running:
                running = now_running
                self._tell()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)

    async def _expire_unused(self, now: int) -> None:
        grace = int(self._node.config.booking_grace * 1000)
        for booking in list(self._current):
            begun = max(booking.start, booking.t_created)
            if booking.id in self._used or now < begun + grace or booking.start > now:
                continue
            if await self._db.run(_used, booking.user_iid, booking.start):
                self._used.add(booking.id)
                continue
            expired = await self._sign(booking.model_copy(update={"state": "expired"}))
            if not await self._db.run(_expire, expired):
                continue  # cancelled meanwhile
            self._current = [b for b in self._current if b.id != booking.id]
            self._node.audit.record(
                "booking.expired", owner=booking.user_iid, booking_id=booking.id, package=booking.package,
                grace=self._node.config.booking_grace,
            )  # fmt: skip
            logger.info("booking %s of %s expired unused", booking.id, booking.user_iid[:8])
            self._tell()

    async def admit_agent(self, processor: ProcessorRecord, user: str) -> None:
        """Before an agent's job takes a place (call from the job's task): wait while it would take the agent's
        capacity (one job per instance) that other users' running bookings hold, as `SlotPool.next` does for
        slots. The job counts until its task ends."""
        agent_id, capacity = processor.proc_id, max(1, processor.gpp.proc_descriptor.instances)
        task = asyncio.current_task()
        assert task is not None
        while True:
            reserved = self.reservations(capacity)
            admitted = {u: n for (a, u), n in self._agent_jobs.items() if a == agent_id}
            mine = admitted.get(user, 0)
            unused = sum(max(0, n - admitted.get(u, 0)) for u, n in reserved.items() if u != user)
            others = any(u != user for u in reserved)  # nobody else's booking runs: the agent's own queue decides
            if mine < reserved.get(user, 0) or not others or sum(admitted.values()) + unused < capacity:
                break
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        key = (agent_id, user)
        self._agent_jobs[key] = self._agent_jobs.get(key, 0) + 1

        def ended(_: object) -> None:
            self._agent_jobs[key] -= 1
            if not self._agent_jobs[key]:
                del self._agent_jobs[key]
            self.wake()

        task.add_done_callback(ended)

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

    # -- the user's requests -------------------------------------------------------------------------------------

    async def book(
        self,
        caller: Identity,
        params: BookingParameters,
        packages: dict[str, Package],
        request: SignedRequest | None = None,
    ) -> Booking:
        """Book; `request` is the caller's signed request as received (kept in the booking)."""
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
            id=secrets.token_hex(12),
            node_iid=self._node.iid,
            user_iid=caller.id,
            package=package.name,
            cores=package.cores,
            memory=package.memory,
            start=params.start,
            end=params.start + params.hours * HOUR_MS,
            t_created=now,
            request=request,
        )
        booking = await self._sign(booking)
        await self._db.run(_insert, self._check, booking, self.capacity())
        self._report()
        self._current.append(booking)
        self._node.audit.record("booking.made", actor=caller.id, owner=caller.id, booking_id=booking.id)
        if booking.start <= now:
            self._tell()  # it runs already: the scheduler keeps its share from now on
        return booking

    async def mine(self, caller: Identity) -> list[Booking]:
        def rows(conn: sqlite3.Connection, check: _Checker) -> list[Booking]:
            return check.rows(
                conn.execute("SELECT * FROM bookings WHERE user_iid = ? ORDER BY start", (caller.id,)).fetchall()
            )

        return await self._read(rows)

    async def get(self, caller: Identity, booking_id: str) -> Booking:
        def row(conn: sqlite3.Connection, check: _Checker) -> list[Booking]:
            return check.rows(conn.execute("SELECT * FROM bookings WHERE id = ?", (booking_id,)).fetchall())

        found = await self._read(row)
        if not found or caller.id not in (found[0].user_iid, self._node.iid):
            raise UnknownBookingError(f"No booking {booking_id} of yours on this node", {"booking_id": booking_id})
        return found[0]

    async def cancel(self, caller: Identity, booking_id: str) -> Booking:
        """Forget the booking; if it was running, the jobs it held back are dispatched at once."""
        booking = await self.get(caller, booking_id)
        await self._db.run(lambda conn: conn.execute("DELETE FROM bookings WHERE id = ?", (booking_id,)))
        running = any(b.id == booking_id and b.start <= int(time.time() * 1000) for b in self._current)
        self._current = [b for b in self._current if b.id != booking_id]
        self._node.audit.record("booking.cancelled", actor=caller.id, owner=booking.user_iid, booking_id=booking_id)
        if running:
            self._tell()
        return booking

    async def earliest(self, user_iid: str) -> Booking | None:
        """The user's live booking that starts first and has not ended."""
        now = int(time.time() * 1000)

        def row(conn: sqlite3.Connection, check: _Checker) -> list[Booking]:
            found = conn.execute(
                f"SELECT * FROM bookings WHERE user_iid = ? AND end > ? AND {_LIVE} ORDER BY start", (user_iid, now)
            )
            return check.rows(found.fetchall())[:1]

        found = await self._read(row)
        return found[0] if found else None

    async def availability(
        self, caller: Identity | None, packages: list[Package], start: int, slots: int, slot_hours: int
    ) -> Availability:
        if start % HOUR_MS:
            raise InvalidInputError("The grid starts on the hour (UTC)")
        if slots * slot_hours > MAX_HOURS:
            raise InvalidInputError(f"The grid covers at most {MAX_HOURS} hours")
        end = start + slots * slot_hours * HOUR_MS
        booked = await self._read(_overlapping, start, end)
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
