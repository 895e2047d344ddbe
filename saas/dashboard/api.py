"""Dashboard routes: the static pages at `/` and sign-in (`/api/v1/dashboard/...`).

Sign-in: `saas-cli dashboard` prints `http://<node>/#login=<token>`; the page posts the token to `POST /login`
(with a `saas-csrf` header, which no cross-site form can send) and the node answers with the session cookie
(`saas.rest.sessions`). The token opens one session only: its nonce goes into the node's replay cache, which
outlives restarts. `GET /session` tells the page who it is signed in as and the session's CSRF token (readable
by the page's own origin only: the node sends no CORS headers). Every page action then goes to the ordinary REST
routes, authorised by `saas.rest.auth` as the session's identity.

The pages are plain modern JavaScript (ES modules) with no library and no build step: nothing to download at
install or run time, nothing third-party to keep patched, and the strict Content-Security-Policy below
(`'self'` only) holds."""

from __future__ import annotations

import asyncio
import hmac
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Request, Response
from pydantic import BaseModel
from starlette.responses import FileResponse

from saas.core.errors import AuthenticationError, NotFoundError
from saas.core.login import MAX_TOKEN_LENGTH, LoginToken
from saas.rest.sessions import HEADER_CSRF, Sessions

__all__ = ["SECURITY_HEADERS", "STATIC", "pages", "router"]

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}

router = APIRouter(prefix="/dashboard", tags=["dashboard"])
pages = APIRouter(include_in_schema=False)


class SessionInfo(BaseModel):
    """Who the browser is signed in as (`signed_in` false: anonymous), and what the page needs to act."""

    signed_in: bool
    node_iid: str
    iid: str | None = None
    name: str | None = None
    csrf: str | None = None
    expires: int | None = None


def _sessions(request: Request) -> Sessions:
    return request.app.state.sessions


@router.post("/login", response_model=SessionInfo)
async def login(
    request: Request, response: Response, token: Annotated[str, Body(embed=True, max_length=MAX_TOKEN_LENGTH)]
) -> SessionInfo:
    """Exchange a login token made by `saas-cli dashboard` for a session cookie (HttpOnly, SameSite=Strict)."""
    if not request.headers.get(HEADER_CSRF):
        raise AuthenticationError(f"Sign-in needs the {HEADER_CSRF} header (sent by the dashboard's own page)")
    node = request.app.state.node
    parsed = LoginToken.from_string(token)
    user = node.nodedb.get_identity(parsed.iid)
    max_ms = int(node.config.dashboard_token_max_lifetime * 1000)
    await asyncio.to_thread(parsed.check, user, node.iid, max_ms)
    now = int(time.time() * 1000)
    try:
        await node.seen_requests.remember(parsed.iid, "login:" + parsed.nonce, parsed.expires + 1, now)
    except AuthenticationError:
        raise AuthenticationError(
            "The login token was already used: make a new one with 'saas-cli dashboard'"
        ) from None
    sessions = _sessions(request)
    session_id, session = await sessions.open(parsed.iid)
    response.set_cookie(
        sessions.cookie_name,
        session_id,
        max_age=int(sessions.lifetime_s),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return SessionInfo(
        signed_in=True, node_iid=node.iid, iid=user.id, name=user.name, csrf=session.csrf, expires=session.expires
    )


@router.get("/session", response_model=SessionInfo)
async def get_session(request: Request) -> SessionInfo:
    """Whether the session cookie signs someone in, as whom, and the CSRF token for its forms."""
    node = request.app.state.node
    sessions = _sessions(request)
    session = sessions.get(request.cookies.get(sessions.cookie_name, ""))
    user = None if session is None else node.nodedb.get_identity(session.iid)
    if session is None or user is None:
        return SessionInfo(signed_in=False, node_iid=node.iid)
    return SessionInfo(
        signed_in=True, node_iid=node.iid, iid=user.id, name=user.name, csrf=session.csrf, expires=session.expires
    )


@router.post("/logout", response_model=SessionInfo)
async def logout(request: Request, response: Response) -> SessionInfo:
    """Close the session (needs its CSRF token: no other site can sign a user out)."""
    sessions = _sessions(request)
    session_id = request.cookies.get(sessions.cookie_name, "")
    session = sessions.get(session_id)
    if session is not None:
        if not hmac.compare_digest(request.headers.get(HEADER_CSRF, "").encode(), session.csrf.encode()):
            raise AuthenticationError(f"Missing or wrong CSRF token ({HEADER_CSRF} header) for the dashboard session")
        await sessions.close(session_id)
    response.delete_cookie(sessions.cookie_name, path="/", httponly=True, samesite="strict")
    return SessionInfo(signed_in=False, node_iid=request.app.state.node.iid)


def _page(name: str, media_type: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type=media_type, headers=SECURITY_HEADERS)


@pages.get("/")
async def index() -> FileResponse:
    """The dashboard (a single page; sign in with a token from `saas-cli dashboard`)."""
    return _page("index.html", "text/html; charset=utf-8")


_ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}


@pages.get("/dashboard/{name}")
async def asset(name: str) -> FileResponse:
    """The dashboard's scripts and styles (anything else is 404)."""
    media_type = _ASSETS.get(name) or (
        "text/javascript; charset=utf-8" if name.endswith(".js") and name.replace(".", "").isalnum() else None
    )
    if media_type is None or not (STATIC / name).is_file():
        raise NotFoundError(f"No dashboard file '{name[:64]}'")
    return _page(name, media_type)
