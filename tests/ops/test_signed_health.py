"""Health documents are signed by their node: a peer (or anyone between) cannot pass off a forged, altered,
re-signed or replayed document as another node's health; a node's last verified health survives the attempt."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from saas.ops.health import NodeHealth
from tests.ops.test_network_health import _network_health, hostile_health, three  # noqa: F401  (fixtures)


def test_own_health_is_signed_by_the_node(three: list[Any]) -> None:  # noqa: F811
    a = three[0]
    health = NodeHealth.model_validate(httpx.get(a.url + "/api/v1/db/node/health").json())
    assert health.signature and health.signed_by(a.node.keystore.identity)
    assert not health.signed_by(three[1].node.keystore.identity)  # another node's identity
    altered = health.model_copy(update={"queue_length": health.queue_length + 1})
    assert not altered.signed_by(a.node.keystore.identity)


@pytest.fixture
def served_as_bob(three: list[Any], hostile_health: tuple[int, dict[str, bytes]]) -> Iterator[dict[str, bytes]]:  # noqa: F811
    """Node a believes bob's REST address is the hostile server's (what a peer between a and bob could do)."""
    a, b, _ = three
    port, bodies = hostile_health
    record = a.node.nodedb.get_node(b.node.iid)
    a.node.nodedb._nodes[b.node.iid] = record.model_copy(update={"rest_address": ("127.0.0.1", port)})
    yield bodies
    a.node.nodedb._nodes[b.node.iid] = record


def _bobs_real_health(b: Any) -> dict[str, Any]:
    return httpx.get(b.url + "/api/v1/db/node/health").json()


def test_forged_altered_or_stale_health_is_not_taken(three: list[Any], served_as_bob: dict[str, bytes]) -> None:  # noqa: F811
    a, b, c = three
    real = _bobs_real_health(b)
    unsigned = {**real, "signature": None}
    altered = {**real, "queue_length": 999}  # bob's signature over other values
    carol_signed = NodeHealth.model_validate({**real, "signature": None})
    carol_signed = carol_signed.model_copy(
        update={"signature": c.node.keystore.sign(carol_signed.signed_content())}
    )  # signed, but not by bob
    old = NodeHealth.model_validate({**real, "signature": None, "time": real["time"] - 3600_000})
    old = old.model_copy(update={"signature": b.node.keystore.sign(old.signed_content())})  # bob's, an hour old
    for document, reason in (
        (unsigned, "did not sign"),
        (altered, "did not sign"),
        (carol_signed.model_dump(mode="json"), "did not sign"),
        (old.model_dump(mode="json"), "s ago"),
    ):
        served_as_bob["body"] = json.dumps(document).encode()
        entry = _network_health(a, deadline=3.0)[b.node.iid]
        assert not entry.reachable and reason in (entry.reason or ""), (reason, entry.reason)
        assert entry.health is None or entry.health.queue_length != 999


def test_the_last_verified_health_stays_when_a_forgery_follows(three: list[Any]) -> None:  # noqa: F811
    a, b, _ = three
    first = _network_health(a, deadline=3.0)[b.node.iid]
    assert first.reachable and first.health is not None and first.health.signed_by(b.node.keystore.identity)
    record = a.node.nodedb.get_node(b.node.iid)
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    forged = json.dumps({**first.health.model_dump(mode="json"), "queue_length": 999}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(forged)))
            self.end_headers()
            self.wfile.write(forged)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        a.node.nodedb._nodes[b.node.iid] = record.model_copy(update={"rest_address": server.server_address})
        entry = _network_health(a, deadline=3.0)[b.node.iid]
    finally:
        a.node.nodedb._nodes[b.node.iid] = record
        server.shutdown()
        server.server_close()
    assert not entry.reachable and "did not sign" in (entry.reason or "")
    assert entry.health is not None and entry.health.queue_length == first.health.queue_length
    assert entry.health.signed_by(b.node.keystore.identity)
