"""Dashboard sessions (issue 20): what a browser's session cookie stands for.

A session is opened when the node accepts a user's login token (`saas.core.login`); the browser then holds only a
random session ID in an HttpOnly, SameSite=Strict cookie. A session is bound to one identity, expires after a
fixed lifetime (no sliding renewal: a stolen cookie is good for that long at most) and carries a per-session CSRF
token that every state-changing request must echo in the `saas-csrf` header (`saas.rest.auth`).

Sessions live in the node process's memory: a restart signs every browser out. Only the SHA-256 of a session ID
is kept, so a memory dump does not hand out live cookies. Each identity holds at most `max_per_identity` sessions
(opening one more closes its oldest)."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

__all__ = ["COOKIE_PREFIX", "HEADER_CSRF", "Session", "Sessions"]

COOKIE_PREFIX = "saas-session-"  # + the start of the node's IID: nodes on one host (other ports) share cookies
HEADER_CSRF = "saas-csrf"


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


class Sessions:
    def __init__(self, node_iid: str, lifetime_s: float, max_per_identity: int):
        self.cookie_name = COOKIE_PREFIX + node_iid[:16]
        self.lifetime_s = lifetime_s
        self._max_per_identity = max_per_identity
        self._sessions: dict[str, Session] = {}  # SHA-256 of the session ID -> session

    def open(self, iid: str) -> tuple[str, Session]:
        """A new session for `iid`: its ID (for the cookie) and the session."""
        self._prune()
        mine = sorted((s.opened, k) for k, s in self._sessions.items() if s.iid == iid)
        for _, key in mine[: max(0, len(mine) - self._max_per_identity + 1)]:
            del self._sessions[key]
        session_id = secrets.token_urlsafe(32)
        now = _now_ms()
        session = Session(
            iid=iid, csrf=secrets.token_urlsafe(24), opened=now, expires=now + int(self.lifetime_s * 1000)
        )
        self._sessions[_key(session_id)] = session
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        """The live session of this ID, or None (unknown or expired)."""
        if len(session_id) > 128:
            return None
        key = _key(session_id)
        session = self._sessions.get(key)
        if session is not None and session.expires <= _now_ms():
            del self._sessions[key]
            return None
        return session

    def close(self, session_id: str) -> None:
        self._sessions.pop(_key(session_id), None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _prune(self) -> None:
        now = _now_ms()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]
