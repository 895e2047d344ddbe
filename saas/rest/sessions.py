"""Dashboard sessions (issue 20): what a browser's session cookie stands for.

A session is opened when the node accepts a user's login token (`saas.core.login`); the browser then holds only a
random session ID in an HttpOnly, SameSite=Strict cookie. A session is bound to one identity, expires after a
fixed lifetime (no sliding renewal: a stolen cookie is good for that long at most) and carries a per-session CSRF
token that every state-changing request must echo in the `saas-csrf` header (`saas.rest.auth`).

Sessions outlive a restart of the node (an upgrade does not sign every browser out): they are kept in
`<datastore>/sessions.sqlite` (`saas.sqlite.Database`, written in the databases' thread) and looked up in memory
(`get` runs on every dashboard request). Only the SHA-256 of a session ID is kept, in memory and on disk, so
neither a memory dump nor the file hands out live cookies. `open` and `close` return once the database holds the
change: a signed-out session does not come back after a restart. At start only live sessions of this node's
identity are loaded (another keystore on the same datastore gets none), each ending no later than the lifetime
configured now; expired and foreign rows are deleted then, and expired ones again whenever a session is opened.
Each identity holds at most `max_per_identity` sessions (opening one more closes its oldest), also after a
restart with a smaller limit."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from saas.sqlite import Database

if TYPE_CHECKING:
    import sqlite3
    from pathlib import Path

__all__ = ["COOKIE_PREFIX", "HEADER_CSRF", "Session", "Sessions"]

COOKIE_PREFIX = "saas-session-"  # + the start of the node's IID: nodes on one host (other ports) share cookies
HEADER_CSRF = "saas-csrf"

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY, node_iid TEXT NOT NULL, iid TEXT NOT NULL, csrf TEXT NOT NULL, opened INTEGER NOT NULL,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires);
"""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    iid: str
    csrf: str
    opened: int  # ms since epoch
    expires: int  # ms since epoch


def _load(conn: sqlite3.Connection, node_iid: str, now: int, lifetime_ms: int, cap: int) -> dict[str, Session]:
    """Delete what must not be restored, then read the rest: the newest `cap` live sessions of each identity."""
    conn.execute("UPDATE sessions SET expires = opened + ? WHERE expires > opened + ?", (lifetime_ms, lifetime_ms))
    conn.execute("DELETE FROM sessions WHERE expires <= ? OR node_iid != ?", (now, node_iid))
    sessions: dict[str, Session] = {}
    count: dict[str, int] = {}
    for row in conn.execute("SELECT * FROM sessions ORDER BY opened DESC, key"):
        count[row["iid"]] = count.get(row["iid"], 0) + 1
        if count[row["iid"]] > cap:
            conn.execute("DELETE FROM sessions WHERE key = ?", (row["key"],))
        else:
            sessions[row["key"]] = Session(row["iid"], row["csrf"], row["opened"], row["expires"])
    return sessions


def _open(conn: sqlite3.Connection, node_iid: str, key: str, session: Session, closed: list[str], now: int) -> None:
    conn.executemany("DELETE FROM sessions WHERE key = ?", [(k,) for k in closed])
    conn.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
    conn.execute(
        "INSERT INTO sessions (key, node_iid, iid, csrf, opened, expires) VALUES (?, ?, ?, ?, ?, ?)",
        (key, node_iid, session.iid, session.csrf, session.opened, session.expires),
    )


def _close(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("DELETE FROM sessions WHERE key = ?", (key,))


class Sessions:
    def __init__(self, path: Path, node_iid: str, lifetime_s: float, max_per_identity: int):
        self.cookie_name = COOKIE_PREFIX + node_iid[:16]
        self.lifetime_s = lifetime_s
        self._node_iid = node_iid
        self._max_per_identity = max_per_identity
        self._db = Database(path, SCHEMA)
        self._sessions: dict[str, Session] = {}  # SHA-256 of the session ID -> session

    async def start(self) -> None:
        """Open the database and load the sessions that are still live (see the module's docstring)."""
        await asyncio.to_thread(self._db.open)
        lifetime_ms = int(self.lifetime_s * 1000)
        self._sessions = await self._db.run(_load, self._node_iid, _now_ms(), lifetime_ms, self._max_per_identity)

    async def stop(self) -> None:
        await asyncio.to_thread(self._db.close)

    async def open(self, iid: str) -> tuple[str, Session]:
        """A new session for `iid`: its ID (for the cookie) and the session; returns once it is stored."""
        now = _now_ms()
        self._prune(now)
        mine = sorted((s.opened, k) for k, s in self._sessions.items() if s.iid == iid)
        closed = {key: self._sessions.pop(key) for _, key in mine[: max(0, len(mine) - self._max_per_identity + 1)]}
        session_id = secrets.token_urlsafe(32)
        key = _key(session_id)
        session = Session(
            iid=iid, csrf=secrets.token_urlsafe(24), opened=now, expires=now + int(self.lifetime_s * 1000)
        )
        self._sessions[key] = session
        try:
            await self._db.run(_open, self._node_iid, key, session, list(closed), now)
        except BaseException:  # not stored: as if never opened (the oldest ones are still stored, so still open)
            self._sessions.pop(key, None)
            self._sessions.update(closed)
            raise
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        """The live session of this ID, or None (unknown or expired). In memory only: no database access."""
        if len(session_id) > 128:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is not None and session.expires <= _now_ms():
            del self._sessions[key]  # its row goes with the next prune (and it is never loaded again)
            return None
        return session

    async def close(self, session_id: str) -> None:
        """End the session at once; returns once it is deleted from the database too (sign-out)."""
        key = _key(session_id)
        session = self._sessions.pop(key, None)
        try:
            await self._db.run(_close, key)
        except BaseException:  # still stored: keep it open, so that signing out again can succeed
            if session is not None:
                self._sessions.setdefault(key, session)
            raise

    def __len__(self) -> int:
        return len(self._sessions)

    def _prune(self, now: int) -> None:
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]
