"""Health of a network of three real nodes (REST, P2P, SQLite on 127.0.0.1): every node answers under one deadline;
a stopped node shows its last known health and since when it does not answer."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from saas.ops.health import NetworkHealth, NodeHealth
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def _wait_connected(nodes: list[Any], timeout: float = 20) -> None:
    def connected() -> bool:
        views = [n.node.nodedb.network() for n in nodes]
        return all(len(v) == len(nodes) and all(i.online for i in v) for v in views)

    wait_until(connected, timeout, interval=0.1, what="the nodes to connect")


def _network_health(node: Any, deadline: float = 3.0) -> dict[str, NetworkHealth]:
    response = httpx.get(node.url + "/api/v1/db/health", params={"deadline": deadline}, timeout=30)
    assert response.status_code == 200, response.text
    return {e.iid: e for e in (NetworkHealth.model_validate(d) for d in response.json())}


@pytest.fixture
def three(node_factory: Callable[..., Any]) -> list[Any]:
    a = node_factory("alice")
    boot = "{}:{}".format(*a.node.p2p.address)
    b = node_factory("bob", boot_node=boot, node_type="storage")
    c = node_factory("carol", boot_node=boot, node_type="execution")
    _wait_connected([a, b, c])
    return [a, b, c]


def test_own_health_is_public_and_complete(three: list[Any]) -> None:
    a = three[0]
    response = httpx.get(a.url + "/api/v1/db/node/health")
    assert response.status_code == 200
    health = NodeHealth.model_validate(response.json())
    assert health.iid == a.node.iid and health.name == "alice"
    assert health.services == ["dor", "rti"]
    assert health.uptime >= 0 and health.started == a.node.started_ms
    assert set(health.jobs) == {
        "pending",
        "initialising",
        "running",
        "postprocessing",
        "successful",
        "failed",
        "cancelled",
    }
    assert health.queue_length == 0 and health.processors == []
    assert health.cpu["count"] >= 1 and health.memory["total"] > health.memory["available"] > 0
    assert health.disk["total"] >= health.disk["free"] > 0
    assert health.peers_online == 2 and health.nodes_known == 3


def test_network_health_with_one_node_stopped(three: list[Any]) -> None:
    a, b, c = three
    entries = _network_health(a)
    assert set(entries) == {a.node.iid, b.node.iid, c.node.iid}
    assert all(e.reachable and e.health is not None and e.health.iid == iid for iid, e in entries.items())
    assert entries[b.node.iid].health.services == ["dor"]  # type: ignore[union-attr]
    assert entries[c.node.iid].health.services == ["rti"]  # type: ignore[union-attr]
    answered = entries[c.node.iid].answered
    assert answered is not None

    c.stop()
    started = time.monotonic()
    entries = _network_health(a, deadline=2.0)
    assert time.monotonic() - started < 5
    gone = entries[c.node.iid]
    assert not gone.reachable and gone.reason
    assert gone.health is not None and gone.health.iid == c.node.iid  # its last known health
    assert gone.answered == answered  # ... from when it last answered
    assert gone.unreachable_since is not None and gone.unreachable_since >= answered
    assert entries[b.node.iid].reachable and entries[a.node.iid].reachable

    since = gone.unreachable_since
    again = _network_health(a, deadline=2.0)[c.node.iid]
    assert not again.reachable and again.unreachable_since == since  # since the first failed ask


class Stalled(int):
    """The port of a server that accepts connections and never answers; `accepted` holds its connections."""

    accepted: list[socket.socket]


@pytest.fixture
def stalled_port() -> Iterator[Stalled]:
    """A port that accepts connections and never answers (a stalled node)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = Stalled(server.getsockname()[1])
    port.accepted = held
    yield port
    stop.set()
    thread.join(2)
    for s in held:
        s.close()
    server.close()


def test_a_stalled_node_costs_the_deadline_only(three: list[Any], stalled_port: int) -> None:
    """A node whose REST service accepts but never answers is reported unreachable once the deadline passed."""
    a, b, _ = three
    record = a.node.nodedb.get_node(b.node.iid)
    a.node.nodedb._nodes[b.node.iid] = record.model_copy(update={"rest_address": ("127.0.0.1", stalled_port)})
    started = time.monotonic()
    entries = _network_health(a, deadline=1.5)
    elapsed = time.monotonic() - started
    assert 1.4 < elapsed < 4, elapsed
    assert not entries[b.node.iid].reachable
    assert "1.5" in (entries[b.node.iid].reason or "")
    assert all(e.reachable for iid, e in entries.items() if iid != b.node.iid)


def test_deadline_out_of_range_is_a_client_error(three: list[Any]) -> None:
    response = httpx.get(three[0].url + "/api/v1/db/health", params={"deadline": 1000})
    assert response.status_code == 422 and "deadline" in response.json()["reason"]


def test_concurrent_callers_share_one_fan_out(three: list[Any], stalled_port: Stalled) -> None:
    """Anonymous callers cannot make a node ask the network once per request: calls made while one is in flight
    share its answer."""
    import concurrent.futures

    a, b, _ = three
    record = a.node.nodedb.get_node(b.node.iid)
    a.node.nodedb._nodes[b.node.iid] = record.model_copy(update={"rest_address": ("127.0.0.1", stalled_port)})
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _network_health(a, deadline=2.0), range(8)))
    assert time.monotonic() - started < 5  # eight callers, one deadline
    assert len(stalled_port.accepted) <= 2  # one fan-out (or two, if a caller came after the first had ended)
    first = results[0][b.node.iid]
    assert all(r[b.node.iid].unreachable_since == first.unreachable_since for r in results)


def test_a_peer_failing_verification_is_warned_about(three: list[Any]) -> None:
    """NodeDB counts what a peer sent that did not verify (`saas.dor.remote`); diagnostics warn about that peer."""
    from saas.ops.proxy import HealthProxy

    a, b, _ = three
    with HealthProxy(a.address) as proxy:
        assert [w for w in proxy.get_diagnostics().warnings if w.kind == "peer-verification"] == []
        a.node.nodedb.count_lie(b.node.iid, 3)
        warnings = [w for w in proxy.get_diagnostics().warnings if w.kind == "peer-verification"]
    assert len(warnings) == 1
    assert b.node.iid[:16] in warnings[0].message and "3 record(s)" in warnings[0].message


@pytest.fixture
def hostile_health() -> Iterator[tuple[int, dict[str, bytes]]]:
    """An HTTP server whose `/api/v1/db/node/health` answers with `bodies["body"]` (a peer that lies in size or
    shape)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies: dict[str, bytes] = {"body": b"{}"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = bodies["body"]
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the reader stopped early
                self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], bodies
    server.shutdown()
    server.server_close()


def test_a_peer_cannot_send_a_huge_or_deep_health_document(
    three: list[Any], hostile_health: tuple[int, dict[str, bytes]]
) -> None:
    a, b, _ = three
    port, bodies = hostile_health
    record = a.node.nodedb.get_node(b.node.iid)
    a.node.nodedb._nodes[b.node.iid] = record.model_copy(update={"rest_address": ("127.0.0.1", port)})
    for body, reason in (
        (b'{"x": "' + b"y" * (3 << 20) + b'"}', "more than 1048576 bytes"),
        (b"[" * 200_000 + b"]" * 200_000, "invalid health document"),
        (b'{"iid": "someone else"}', "invalid health document"),
    ):
        bodies["body"] = body
        entry = _network_health(a, deadline=3.0)[b.node.iid]
        assert not entry.reachable and reason in (entry.reason or ""), entry.reason
