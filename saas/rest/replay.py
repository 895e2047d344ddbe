"""`SeenRequests`: the (iid, nonce) pairs of signed requests this node accepted within the window, persisted so
that a request captured before a restart is refused after it too (DESIGN §5, issue 14 item 5).

Each pair is checked and noted in memory first (on the event loop, so two copies of one request racing each other
are told apart at once), then stored in `<datastore>/requests.sqlite` before the request is handled: `remember`
returns once the row is committed (group commit in the databases' thread, `saas.sqlite.Database`), so a request
that acted is on disk even if the node is killed right after. At start the pairs still within the window are
loaded. Rows are kept until their request's timestamp is out of the window, then pruned (written behind)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from saas.core.errors import AuthenticationError
from saas.sqlite import Database

__all__ = ["SeenRequests"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_requests (iid TEXT NOT NULL, nonce TEXT NOT NULL, forget_after INTEGER NOT NULL,
                                          PRIMARY KEY (iid, nonce)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_requests_forget ON seen_requests (forget_after);
"""
PRUNE_EVERY_MS = 10_000


def _load(conn: sqlite3.Connection, now: int) -> dict[tuple[str, str], int]:
    rows = conn.execute("SELECT iid, nonce, forget_after FROM seen_requests WHERE forget_after > ?", (now,))
    return {(r["iid"], r["nonce"]): r["forget_after"] for r in rows}


def _insert(conn: sqlite3.Connection, iid: str, nonce: str, forget_after: int) -> None:
    conn.execute("INSERT OR REPLACE INTO seen_requests VALUES (?, ?, ?)", (iid, nonce, forget_after))


def _prune(conn: sqlite3.Connection, now: int) -> None:
    conn.execute("DELETE FROM seen_requests WHERE forget_after <= ?", (now,))


class SeenRequests:
    def __init__(self, path: Path):
        self._db = Database(path, SCHEMA)
        self._seen: dict[tuple[str, str], int] = {}  # (iid, nonce) -> forget after (ms)
        self._next_prune = 0

    async def start(self, now: int) -> None:
        await asyncio.to_thread(self._db.open)
        self._seen = await self._db.run(_load, now)

    async def stop(self) -> None:
        await asyncio.to_thread(self._db.close)

    async def remember(self, iid: str, nonce: str, forget_after: int, now: int) -> None:
        """Note a request; raises `AuthenticationError` if it was seen before (here or before a restart)."""
        if now >= self._next_prune:
            self._seen = {k: v for k, v in self._seen.items() if v > now}
            self._next_prune = now + PRUNE_EVERY_MS
            self._db.write_behind(_prune, now)
        key = (iid, nonce)
        if key in self._seen:
            raise AuthenticationError("Replayed request (nonce already used)", {"iid": iid})
        self._seen[key] = forget_after
        await self._db.run(_insert, iid, nonce, forget_after)
