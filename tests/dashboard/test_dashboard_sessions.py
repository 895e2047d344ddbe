"""Dashboard sign-in (issue 20) against a real node over real HTTP: login tokens, the session cookie, cookie
requests authorised exactly as signed ones (same rules, CSRF-safe), and sessions kept across node restarts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from saas.core.keystore import Keystore
from saas.core.login import LoginToken
from saas.core.signing import sign_request
from saas.node import Node
from saas.nodedb.proxy import NodeDBProxy
from saas.rest.sessions import HEADER_CSRF
from tests.conftest import RunningNode

API = "/api/v1"


@pytest.fixture
def users(node: Any, keystores: Callable[[str], Keystore]) -> tuple[Keystore, Keystore]:
    alice, bob = keystores("alice"), keystores("bob")
    with NodeDBProxy(node.address) as db:
        for keystore in (alice, bob):
            db.update_identity(keystore.identity)
    return alice, bob


@pytest.fixture
def browser(node: Any) -> Iterator[Callable[[], httpx.Client]]:
    """`browser()`: a fresh cookie jar talking to the node (an httpx client, like a browser tab)."""
    made: list[httpx.Client] = []

    def make() -> httpx.Client:
        made.append(httpx.Client(base_url=node.url, timeout=30, trust_env=False))
        return made[-1]

    yield make
    for client in made:
        client.close()


def login(client: httpx.Client, token: str, csrf: str | None = "login") -> httpx.Response:
    headers = {HEADER_CSRF: csrf} if csrf else {}
    return client.post(f"{API}/dashboard/login", json={"token": token}, headers=headers)


def signed_in(node: Any, client: httpx.Client, user: Keystore) -> str:
    """Sign `client` in as `user`; the session's CSRF token."""
    response = login(client, LoginToken.create(user, node.node.iid).to_string())
    assert response.status_code == 200, response.text
    return str(response.json()["csrf"])


def signed_get(client: httpx.Client, user: Keystore, node_iid: str, path: str) -> httpx.Response:
    return client.get(API + path, headers=sign_request(user, "GET", API + path, node_iid))


def upload(client: httpx.Client, owner: str, content: bytes, csrf: str | None, restricted: bool = False) -> Any:
    params = {"owner_iid": owner, "data_type": "Text", "data_format": "txt", "access_restricted": restricted}
    headers = {"content-type": "application/octet-stream", **({HEADER_CSRF: csrf} if csrf else {})}
    return client.post(f"{API}/dor/add-c", content=json.dumps(params).encode() + b"\n" + content, headers=headers)


def test_token_opens_a_session_with_a_strict_httponly_cookie(node: Any, users: Any, browser: Any) -> None:
    alice, _ = users
    client = browser()
    assert client.get(f"{API}/dashboard/session").json()["signed_in"] is False
    response = login(client, LoginToken.create(alice, node.node.iid).to_string())
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["signed_in"] and info["iid"] == alice.iid and info["name"] == "alice" and info["csrf"]
    cookie = response.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "max-age", "path"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert cookie.startswith("saas-session-" + node.node.iid[:16] + "=")
    assert client.get(f"{API}/dashboard/session").json() == info


def test_a_token_works_once(node: Any, users: Any, browser: Any) -> None:
    token = LoginToken.create(users[0], node.node.iid).to_string()
    assert login(browser(), token).status_code == 200
    again = login(browser(), token)
    assert again.status_code == 401
    assert "already used" in again.json()["reason"]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda alice, node_iid: LoginToken.create(alice, node_iid, lifetime_s=-1), "expired"),
        (lambda alice, node_iid: LoginToken.create(alice, node_iid, lifetime_s=3600), "too long"),
        (lambda alice, node_iid: LoginToken.create(alice, "z" * 64), "another node"),
        (
            lambda alice, node_iid: LoginToken.create(alice, node_iid).model_copy(update={"expires": 2**41}),
            "signature",
        ),
    ],
)
def test_bad_tokens_are_refused(node: Any, users: Any, browser: Any, make: Any, reason: str) -> None:
    client = browser()
    response = login(client, make(users[0], node.node.iid).to_string())
    assert response.status_code == 401, response.text
    assert reason in response.json()["reason"]
    assert "set-cookie" not in response.headers
    assert client.get(f"{API}/dashboard/session").json()["signed_in"] is False


def test_malformed_or_unknown_tokens_and_cross_site_logins_are_refused(
    node: Any, users: Any, browser: Any, keystores: Callable[[str], Keystore]
) -> None:
    assert login(browser(), "not-a-token").status_code == 401
    stranger = keystores("carol")  # never published to this node
    unknown = login(browser(), LoginToken.create(stranger, node.node.iid).to_string())
    assert unknown.status_code == 401 and "not known" in unknown.json()["reason"]
    # A cross-site form cannot send a custom header: without it, no session (and the token stays unused).
    token = LoginToken.create(users[0], node.node.iid).to_string()
    assert login(browser(), token, csrf=None).status_code == 401
    assert login(browser(), token).status_code == 200


def test_cookie_requests_act_as_the_identity_with_the_same_rules(node: Any, users: Any, browser: Any) -> None:
    alice, bob = users
    as_alice, as_bob, anonymous = browser(), browser(), browser()
    csrf_alice, csrf_bob = signed_in(node, as_alice, alice), signed_in(node, as_bob, bob)

    stored = upload(as_alice, alice.iid, b"secret notes\n", csrf_alice, restricted=True)
    assert stored.status_code == 200, stored.text
    meta = stored.json()
    assert meta["owner_iid"] == alice.iid and meta["created"]["creators_iid"] == [alice.iid]
    obj = meta["obj_id"]
    assert as_alice.get(f"{API}/dor/{obj}/content").content == b"secret notes\n"
    assert [o["obj_id"] for o in as_alice.get(f"{API}/dor").json()] == [obj]

    # bob's session is bob: what bob's signed requests get (no access to alice's restricted object), and no
    # uploads in alice's name
    for path in (f"/dor/{obj}/content", f"/dor/{obj}/meta"):
        by_cookie, by_signature = as_bob.get(API + path), signed_get(anonymous, bob, node.node.iid, path)
        assert by_cookie.status_code == by_signature.status_code == 404
        assert by_cookie.json()["reason"] == by_signature.json()["reason"]
    assert as_bob.get(f"{API}/dor").json() == []
    assert upload(as_bob, alice.iid, b"forged", csrf_bob).status_code == 403
    # anonymous: what anonymous REST callers see
    assert anonymous.get(f"{API}/dor").json() == []
    assert anonymous.get(f"{API}/dor/{obj}/meta").status_code == 404
    assert anonymous.get(f"{API}/dor/{obj}/content").status_code == 401

    granted = as_alice.post(f"{API}/dor/{obj}/access/{bob.iid}", headers={HEADER_CSRF: csrf_alice})
    assert granted.status_code == 200, granted.text
    assert as_bob.get(f"{API}/dor/{obj}/content").content == b"secret notes\n"
    # a session's CSRF token is its own: bob's does not work in alice's session
    revoke = as_alice.delete(f"{API}/dor/{obj}/access/{bob.iid}", headers={HEADER_CSRF: csrf_bob})
    assert revoke.status_code == 401


def test_state_changing_cookie_requests_need_the_csrf_token(node: Any, users: Any, browser: Any) -> None:
    alice, _ = users
    client = browser()
    csrf = signed_in(node, client, alice)
    for token in (None, "wrong"):
        refused = upload(client, alice.iid, b"csrf attack", token)
        assert refused.status_code == 401, refused.text
        assert "CSRF" in refused.json()["reason"]
    assert client.get(f"{API}/dor").json() == []  # nothing was stored
    obj = upload(client, alice.iid, b"fine", csrf).json()["obj_id"]
    tags = client.put(f"{API}/dor/{obj}/tags", json=[{"key": "k", "value": 1}])
    assert tags.status_code == 401
    assert client.delete(f"{API}/dor/{obj}").status_code == 401
    assert client.get(f"{API}/dor/{obj}/meta").status_code == 200  # reading needs no token


def test_another_origin_cannot_read_the_csrf_token(node: Any, users: Any, browser: Any) -> None:
    """SameSite does not separate ports of one host, so the CSRF token is what stops a page on another port: such
    a page's fetch sends the cookie, but without CORS headers the browser never lets it read the answer."""
    client = browser()
    signed_in(node, client, users[0])
    evil = {"origin": "http://127.0.0.1:1", "access-control-request-method": "POST"}
    for response in (
        client.get(f"{API}/dashboard/session", headers=evil),
        client.options(f"{API}/dor/add-c", headers={**evil, "access-control-request-headers": HEADER_CSRF}),
    ):
        assert not any(h.startswith("access-control-") for h in response.headers), response.headers


def test_sessions_log_out_and_are_bounded_per_identity(node_factory: Any, keystores: Any) -> None:
    node = node_factory(dashboard_max_sessions=2)
    alice = keystores("alice")
    with NodeDBProxy(node.address) as db:
        db.update_identity(alice.identity)
    clients = [httpx.Client(base_url=node.url, timeout=30, trust_env=False) for _ in range(3)]
    try:
        csrf = [signed_in(node, c, alice) for c in clients]
        # the third session closed the oldest one
        assert [c.get(f"{API}/dashboard/session").json()["signed_in"] for c in clients] == [False, True, True]
        assert clients[0].get(f"{API}/rti/job").status_code == 401  # dead session where a signature is needed
        assert clients[0].get(f"{API}/dor").status_code == 200  # ... and anonymous where it is optional
        # log out (needs the session's CSRF token)
        assert clients[1].post(f"{API}/dashboard/logout").status_code == 401
        assert clients[1].post(f"{API}/dashboard/logout", headers={HEADER_CSRF: csrf[1]}).status_code == 200
        assert clients[1].get(f"{API}/rti/job").status_code == 401
        assert clients[2].get(f"{API}/rti/job").status_code == 200
    finally:
        for c in clients:
            c.close()


def test_sessions_expire(node_factory: Any, keystores: Any) -> None:
    node = node_factory(dashboard_session_lifetime=1.0)
    alice = keystores("alice")
    with NodeDBProxy(node.address) as db:
        db.update_identity(alice.identity)
    with (
        httpx.Client(base_url=node.url, timeout=30, trust_env=False) as client,
        httpx.Client(base_url=node.url, timeout=30, trust_env=False) as other,
    ):
        signed_in(node, client, alice)
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
        time.sleep(1.2)  # time passing is the behaviour: the session expires
        assert client.get(f"{API}/rti/job").status_code == 401  # the browser dropped it (Max-Age)
        expired = other.get(f"{API}/rti/job", headers={"cookie": cookie})  # the node refuses it too
        assert expired.status_code == 401 and "expired" in expired.json()["reason"]


def test_signed_requests_ignore_the_cookie(node: Any, users: Any, browser: Any) -> None:
    """A request with signature headers is judged by them alone: a cookie cannot repair a bad signature."""
    alice, _ = users
    client = browser()
    signed_in(node, client, alice)
    response = client.get(f"{API}/rti/job", headers={"saas-iid": alice.iid, "saas-signature": "forged"})
    assert response.status_code == 401


def test_dashboard_jobs_store_outputs_on_this_node_only(node: Any, users: Any, browser: Any) -> None:
    alice, bob = users
    client = browser()
    csrf = signed_in(node, client, alice)
    task = {
        "proc_id": "0" * 64,
        "user_iid": alice.iid,
        "input": [],
        "output": [{"name": "c", "owner_iid": alice.iid, "target_node_iid": bob.iid}],
    }
    response = client.post(f"{API}/rti/proc/{'0' * 64}/jobs", json=task, headers={HEADER_CSRF: csrf})
    assert response.status_code == 400
    assert "this node only" in response.json()["reason"]


def test_dashboard_jobs_on_a_node_without_dor_are_refused(node_factory: Any, keystores: Any) -> None:
    node = node_factory(node_type="execution")
    alice = keystores("alice")
    with NodeDBProxy(node.address) as db:
        db.update_identity(alice.identity)
    with httpx.Client(base_url=node.url, timeout=30, trust_env=False) as client:
        csrf = signed_in(node, client, alice)
        task = {
            "proc_id": "0" * 64,
            "user_iid": alice.iid,
            "input": [],
            "output": [{"name": "c", "owner_iid": alice.iid}],
        }
        response = client.post(f"{API}/rti/proc/{'0' * 64}/jobs", json=task, headers={HEADER_CSRF: csrf})
        assert response.status_code == 400
        assert "this node only" in response.json()["reason"]


def test_pages_are_served_with_a_strict_content_security_policy(node: Any, browser: Any) -> None:
    client = browser()
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    script = client.get("/dashboard/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert client.get("/dashboard/nothing.js").status_code == 404
    assert client.get("/dashboard/..%2Fapi.py").status_code == 404


def test_the_pages_ship_inside_the_package() -> None:
    """Every static file is covered by pyproject's package-data (no build step, no download at install)."""
    import fnmatch

    from saas.dashboard.api import STATIC
    from tests.test_packaging import tomllib

    root = STATIC.parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["saas.dashboard"]
    files = [p.relative_to(STATIC.parent).as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert {"static/index.html", "static/app.js"} <= set(files)
    assert all(any(fnmatch.fnmatch(f, pattern) and "/" not in f[7:] for pattern in patterns) for f in files)
    index = (STATIC / "index.html").read_text()
    assert "http://" not in index and "https://" not in index  # nothing from elsewhere


# -- sessions across restarts ------------------------------------------------------------------------------------


@pytest.fixture
def restart() -> Iterator[Callable[..., RunningNode]]:
    """`restart(node, keystore=None, **config)`: stop the node and start a new one on the same datastore and ports
    (with `keystore`: as another identity; `config` overrides fields of its configuration)."""
    started: list[RunningNode] = []

    def make(old: RunningNode, keystore: Keystore | None = None, **config: Any) -> RunningNode:
        old.stop()
        keystore = keystore or old.node.keystore
        update = {**config, "keystore": keystore.path}
        started.append(RunningNode(Node(old.node.config.model_copy(update=update), keystore)))
        started[-1].start()
        return started[-1]

    yield make
    for running in reversed(started):
        running.stop()


def _client(node: Any) -> httpx.Client:
    return httpx.Client(base_url=node.url, timeout=30, trust_env=False)


def _cookie(client: httpx.Client) -> str:
    """The session cookie as a `cookie` header (to send it again after the browser dropped it)."""
    return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


def _stored(node: Any) -> list[tuple[str, str, str]]:
    """(key, node_iid, iid) of every session row in the node's database (read beside the running node)."""
    with contextlib.closing(sqlite3.connect(node.node.config.datastore / "sessions.sqlite")) as conn:
        return conn.execute("SELECT key, node_iid, iid FROM sessions ORDER BY opened").fetchall()


def _published(node: Any, *users: Keystore) -> None:
    with NodeDBProxy(node.address) as db:
        for user in users:
            db.update_identity(user.identity)


def test_a_session_survives_a_restart_and_a_signed_out_one_does_not(
    node_factory: Any, keystores: Any, restart: Any
) -> None:
    node = node_factory()
    alice = keystores("alice")
    _published(node, alice)
    with _client(node) as kept, _client(node) as left, _client(node) as other:
        csrf = signed_in(node, kept, alice)
        csrf_left = signed_in(node, left, alice)
        info = kept.get(f"{API}/dashboard/session").json()
        cookie_left = _cookie(left)
        assert left.post(f"{API}/dashboard/logout", headers={HEADER_CSRF: csrf_left}).status_code == 200
        assert [iid for _, _, iid in _stored(node)] == [alice.iid]  # sign-out deleted its row at once

        node = restart(node)
        assert kept.get(f"{API}/dashboard/session").json() == info  # same identity, CSRF token and expiry
        assert kept.get(f"{API}/rti/job").status_code == 200
        stored = upload(kept, alice.iid, b"after the restart\n", csrf)
        assert stored.status_code == 200, stored.text
        assert upload(kept, alice.iid, b"no token", None).status_code == 401  # CSRF still checked
        gone = other.get(f"{API}/rti/job", headers={"cookie": cookie_left})
        assert gone.status_code == 401 and "expired" in gone.json()["reason"]
        assert other.get(f"{API}/dashboard/session", headers={"cookie": cookie_left}).json()["signed_in"] is False

        # signing out after the restart holds after the next one too
        cookie_kept = _cookie(kept)
        assert kept.post(f"{API}/dashboard/logout", headers={HEADER_CSRF: csrf}).status_code == 200
        node = restart(node)
        assert other.get(f"{API}/rti/job", headers={"cookie": cookie_kept}).status_code == 401
        assert _stored(node) == []


def test_the_database_holds_no_session_id_in_clear(node: Any, users: Any, browser: Any) -> None:
    client = browser()
    signed_in(node, client, users[0])
    [session_id] = client.cookies.values()
    key = hashlib.sha256(session_id.encode()).hexdigest()
    assert [k for k, _, _ in _stored(node)] == [key]
    node.stop()  # everything in the main file, and whatever the WAL still holds beside it
    files = [p for p in node.node.config.datastore.iterdir() if p.name.startswith("sessions.sqlite")]
    content = b"".join(p.read_bytes() for p in files)
    assert key.encode() in content
    assert session_id.encode() not in content


@pytest.mark.parametrize("lifetime", [1.0, 3600.0])
def test_an_expired_session_is_not_restored(node_factory: Any, keystores: Any, restart: Any, lifetime: float) -> None:
    """Expired at the restart: by its own lifetime (1 s), or by the shorter lifetime the node restarts with."""
    node = node_factory(dashboard_session_lifetime=lifetime)
    alice = keystores("alice")
    _published(node, alice)
    with _client(node) as client:
        info = login(client, LoginToken.create(alice, node.node.iid).to_string()).json()
        cookie = _cookie(client)
        node.stop()
        ends = info["expires"] / 1000 - lifetime + 1.0  # sign-in + 1 s
        time.sleep(max(0.0, ends - time.time()) + 0.05)  # time passing is the behaviour: the session expires
        node = restart(node, dashboard_session_lifetime=1.0)
        refused = client.get(f"{API}/rti/job", headers={"cookie": cookie})
        assert refused.status_code == 401 and "expired" in refused.json()["reason"]
        assert _stored(node) == []  # deleted at start


def test_the_cap_per_identity_holds_across_restarts(node_factory: Any, keystores: Any, restart: Any) -> None:
    node = node_factory(dashboard_max_sessions=2)
    alice, bob = keystores("alice"), keystores("bob")
    _published(node, alice, bob)
    clients = [_client(node) for _ in range(3)]
    try:
        signed_in(node, clients[0], alice)
        signed_in(node, clients[1], alice)
        with _client(node) as as_bob:
            signed_in(node, as_bob, bob)
            node = restart(node)

            def live() -> list[bool]:
                return [c.get(f"{API}/dashboard/session").json()["signed_in"] for c in clients]

            assert live() == [True, True, False]
            signed_in(node, clients[2], alice)  # the third closes the oldest, restored or not
            assert live() == [False, True, True]
            node = restart(node, dashboard_max_sessions=1)  # a smaller cap: only the newest is restored
            assert live() == [False, False, True]
            assert as_bob.get(f"{API}/dashboard/session").json()["signed_in"]  # bob's own cap
            assert sorted(iid for _, _, iid in _stored(node)) == sorted([alice.iid, bob.iid])
    finally:
        for c in clients:
            c.close()


def test_sessions_are_not_restored_for_another_node_identity(node_factory: Any, keystores: Any, restart: Any) -> None:
    """Another keystore on the same datastore is another node: the sessions of the old one are not its own."""
    node = node_factory()
    alice, other = keystores("alice"), keystores("other-node")
    _published(node, alice)
    with _client(node) as client, _client(node) as probe:
        signed_in(node, client, alice)
        [session_id] = client.cookies.values()
        node = restart(node, keystore=other)
        _published(node, alice)
        cookie = f"{node.node.sessions.cookie_name}={session_id}"  # even sent under the new node's cookie name
        assert probe.get(f"{API}/dashboard/session", headers={"cookie": cookie}).json()["signed_in"] is False
        assert probe.get(f"{API}/rti/job", headers={"cookie": cookie}).status_code == 401
        assert _stored(node) == []
