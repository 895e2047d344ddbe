"""Verification of signed requests (DESIGN §5).

A request acts as an identity when it carries the `saas-*` headers made by `saas.core.signing.sign_request`. The
verifier checks, in order: all headers present, the identity is known, the request is for this node, the timestamp
is within the window, the signature over `request_string(...)`, and that the (iid, nonce) pair was not seen within
the window — by this node process or before a restart (`saas.rest.replay.SeenRequests`, persisted in the
datastore). Each failure is a 401 with a reason. The body is checked against `saas-body-sha256` by the caller
(`signed` for ordinary bodies; streaming endpoints check while they stream).

Use the FastAPI dependencies: `signed` (signed, body checked), `signed_stream` (signed, body checked by the
endpoint), `optionally_signed` (anonymous allowed; if signed, verified like `signed`). The streamed-upload marker
(`saas.core.signing.streamed_body_sha256`) is refused (401) by `signed`: only `POST /dor/add-c`, which uses
`signed_stream`, interprets it.

A request without signature headers that carries a dashboard session cookie (`saas.rest.sessions`) acts as the
session's identity exactly as a validly signed request would, under the same rules; a state-changing one (not GET
or HEAD) must echo the session's CSRF token in `saas-csrf`. There is no signed body hash then (`session_of`
tells the endpoints that would check one). An unknown or expired session is a 401 where a signature is required
and anonymous where it is optional.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from saas.core.delegation import HEADER_DELEGATION, Delegation, Scope
from saas.core.errors import AuthenticationError, InvalidInputError
from saas.core.identity import Identity
from saas.core.signing import (
    HEADER_BODY_SHA256,
    HEADER_IID,
    HEADER_NODE,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    request_string,
    streamed_head_sha256,
)
from saas.rest.replay import SeenRequests
from saas.rest.sessions import HEADER_CSRF, Session, Sessions

__all__ = [
    "OptionalIdentity",
    "RequestVerifier",
    "SignedIdentity",
    "StreamIdentity",
    "acting_as",
    "body_mismatch",
    "delegation_of",
    "is_signed",
    "session_of",
]

_HEADERS = (HEADER_IID, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_NODE, HEADER_BODY_SHA256, HEADER_SIGNATURE)
MAX_NONCE_LENGTH = 128


class RequestVerifier:
    def __init__(
        self,
        node_iid: str,
        lookup: Callable[[str], Identity | None],
        seen: SeenRequests,
        window_s: float = 120.0,
        verified: Callable[[str], None] | None = None,
    ):
        self._node_iid = node_iid
        self._lookup = lookup
        self._verified = verified  # told the identity of every request that verified (NodeDB: it is in use)
        self._seen = seen  # (iid, nonce) pairs within the window, kept across restarts
        self._window_ms = int(window_s * 1000)

    async def verify(self, method: str, path_and_query: str, headers: dict[str, str]) -> tuple[Identity, str]:
        """The identity a request acts as, and the body hash it claims. Raises `AuthenticationError`."""
        missing = [h for h in _HEADERS if not headers.get(h)]
        if missing:
            raise AuthenticationError("Request is not signed (missing headers)", {"missing": missing})
        iid, nonce, node = headers[HEADER_IID], headers[HEADER_NONCE], headers[HEADER_NODE]
        identity = self._lookup(iid)
        if identity is None:
            raise AuthenticationError(
                f"Identity {iid[:64]} is not known to this node: publish it first", {"iid": iid[:64]}
            )
        if node != self._node_iid:
            raise AuthenticationError("Request was signed for another node", {"node": node[:64]})
        try:
            timestamp = int(headers[HEADER_TIMESTAMP])
        except ValueError:
            raise AuthenticationError("Invalid request timestamp") from None
        now = int(time.time() * 1000)
        if abs(now - timestamp) > self._window_ms:
            raise AuthenticationError(
                "Request timestamp is outside the allowed window (check the clock)",
                {"skew_ms": now - timestamp, "window_ms": self._window_ms},
            )
        if len(nonce) > MAX_NONCE_LENGTH:
            raise AuthenticationError("Invalid request nonce")
        body_sha256 = headers[HEADER_BODY_SHA256]
        message = request_string(method, path_and_query, headers[HEADER_TIMESTAMP], nonce, node, body_sha256)
        if not await asyncio.to_thread(identity.verify_signature, message, headers[HEADER_SIGNATURE]):
            raise AuthenticationError("Invalid request signature", {"iid": iid})
        await self._seen.remember(iid, nonce, timestamp + self._window_ms + 1, int(time.time() * 1000))
        if self._verified is not None:
            self._verified(iid)
        return identity, body_sha256


def path_and_query(request: Request) -> str:
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    return (raw_path + (b"?" + query if query else b"")).decode("latin-1")


def signed_fields(request: Request) -> dict[str, str]:
    """What a signed request was signed over, as received (its body aside): for records that keep a user's signed
    request (a job's task proof, a booking) so that anyone can check it later."""
    h = request.headers
    return {
        "method": request.method,
        "path": path_and_query(request),
        "timestamp": h[HEADER_TIMESTAMP],
        "nonce": h[HEADER_NONCE],
        "iid": h[HEADER_IID],
        "node": h[HEADER_NODE],
        "signature": h[HEADER_SIGNATURE],
    }


def body_mismatch() -> InvalidInputError:
    return InvalidInputError("Request body does not match its signed hash (saas-body-sha256)")


def _verifier(request: Request) -> RequestVerifier:
    return request.app.state.verifier


async def _signed_headers(request: Request) -> tuple[Identity, str]:
    headers = {h: request.headers.get(h, "") for h in _HEADERS}
    return await _verifier(request).verify(request.method, path_and_query(request), headers)


# Markers for /openapi.json (saas/rest/docs.py turns them into the six signature headers): they read a header
# FastAPI declares as a security scheme, never refuse anything themselves.
SIGNED_SCHEME = "saas-signed"
OPTIONALLY_SIGNED_SCHEME = "saas-optionally-signed"
_signed_mark = APIKeyHeader(name=HEADER_SIGNATURE, scheme_name=SIGNED_SCHEME, auto_error=False)
_optional_mark = APIKeyHeader(name=HEADER_SIGNATURE, scheme_name=OPTIONALLY_SIGNED_SCHEME, auto_error=False)
SignedMark = Annotated[str | None, Security(_signed_mark)]


def is_signed(request: Request) -> bool:
    """Whether the request carries (some of) the signature headers: then it is judged as a signed request only."""
    return bool(request.headers.get(HEADER_SIGNATURE) or request.headers.get(HEADER_IID))


def session_of(request: Request) -> Session | None:
    """The dashboard session a request was authorised by (None: signed or anonymous)."""
    return getattr(request.state, "session", None)


def _session_identity(request: Request, required: bool) -> Identity | None:
    """The identity of the request's dashboard session; None without a session cookie (or, when not `required`,
    with a dead one). Raises `AuthenticationError` (dead session where required, missing or wrong CSRF token)."""
    sessions: Sessions = request.app.state.sessions
    session_id = request.cookies.get(sessions.cookie_name)
    if not session_id:
        return None
    session = sessions.get(session_id)
    identity = None if session is None else request.app.state.node.nodedb.get_identity(session.iid)
    if session is None or identity is None:
        if not required:
            return None
        raise AuthenticationError("The dashboard session has expired: sign in again with 'saas-cli dashboard'")
    if request.method not in ("GET", "HEAD") and not hmac.compare_digest(
        request.headers.get(HEADER_CSRF, "").encode(), session.csrf.encode()
    ):
        raise AuthenticationError(f"Missing or wrong CSRF token ({HEADER_CSRF} header) for the dashboard session")
    request.state.session = session
    return identity


async def signed(request: Request, _: SignedMark = None) -> Identity:
    if not is_signed(request) and (identity := _session_identity(request, required=True)) is not None:
        return identity
    identity, claimed = await _signed_headers(request)
    if streamed_head_sha256(claimed) is not None:
        raise AuthenticationError(
            f"A streamed body hash ({HEADER_BODY_SHA256}) is accepted only by POST /api/v1/dor/add-c"
        )
    body = await request.body()
    actual = await asyncio.to_thread(hashlib.sha256, body) if len(body) > 65536 else hashlib.sha256(body)
    if actual.hexdigest() != claimed:
        raise body_mismatch()
    return identity


async def signed_stream(request: Request, _: SignedMark = None) -> Identity:
    if not is_signed(request) and (identity := _session_identity(request, required=True)) is not None:
        return identity
    return (await _signed_headers(request))[0]


async def optionally_signed(
    request: Request, _: Annotated[str | None, Security(_optional_mark)] = None
) -> Identity | None:
    if not is_signed(request):
        return _session_identity(request, required=False)
    return await signed(request)


def delegation_of(request: Request) -> Delegation | None:
    """The `saas-delegation` header, parsed (not yet checked); None if absent."""
    value = request.headers.get(HEADER_DELEGATION)
    return None if not value else Delegation.from_header(value)


async def acting_as(request: Request, signer: Identity, obj_id: str, scope: Scope = "content") -> Identity:
    """Whom a signed request reads `obj_id` (within `scope`) as: the signer, or — with a `saas-delegation` header —
    the user who delegated to the signer (a node fetching for that user), if the delegation names the signer as
    delegate, this node as a server, `scope` and `obj_id`. A delegation that does not check out is refused
    (401/403), never silently ignored."""
    delegation = delegation_of(request)
    if delegation is None:
        return signer
    node = request.app.state.node
    issuer = node.nodedb.get_identity(delegation.issuer_iid)
    return await asyncio.to_thread(delegation.check, issuer, signer.id, node.iid, scope, obj_id)


SignedIdentity = Annotated[Identity, Depends(signed)]
StreamIdentity = Annotated[Identity, Depends(signed_stream)]
OptionalIdentity = Annotated[Identity | None, Depends(optionally_signed)]
