"""Two ordinary events around a request, each with a clear outcome (issue 15, item 4):

- The node stops while requests are in flight: each gets 503 "node is stopping" as a `{reason, id, details}`
  envelope (a streamed upload included, its temp file removed), and the log holds no traceback and no ERROR.
- A client goes away in the middle of an upload: one INFO line says so; no ERROR, no traceback, nothing stored.

Real nodes on 127.0.0.1, real sockets (a raw one for the client that goes away)."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from saas.core.errors import UnavailableError
from saas.core.keystore import Keystore
from saas.core.signing import canonical_json, sign_request
from saas.dor.proxy import DORProxy
from saas.rest.app import API_PREFIX
from tests.conftest import RunningNode
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024
BLOCK = os.urandom(MiB)


def upload_head(owner: Keystore) -> bytes:
    params = {
        "owner_iid": owner.iid,
        "creators_iid": [],
        "data_type": "Abandoned",
        "data_format": "bin",
        "access_restricted": False,
        "content_encrypted": False,
        "license": {"by": False, "sa": False, "nc": False, "nd": False},
        "recipe": None,
        "key_envelope": None,
    }
    return canonical_json(params) + b"\n"


def raw_upload(node: RunningNode, owner: Keystore, blocks: int) -> socket.socket:
    """A signed `POST /dor/add-c` announcing `blocks` MiB of content over a raw socket; the head and one block are
    sent, the rest is up to the caller."""
    head = upload_head(owner)
    digest = hashlib.sha256(head)
    for _ in range(blocks):
        digest.update(BLOCK)
    path = API_PREFIX + "/dor/add-c"
    headers = sign_request(owner, "POST", path, node.node.iid, digest.hexdigest())
    headers |= {"content-type": "application/octet-stream", "content-length": str(len(head) + blocks * MiB)}
    host, port = node.address
    sock = socket.create_connection((host, port))
    lines = [f"POST {path} HTTP/1.1", f"host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + head + BLOCK)
    return sock


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 10) -> None:
    wait_until(condition, timeout, interval=0.02, what=what)


def temp_files(node: RunningNode) -> list[str]:
    folder = node.node.config.datastore / "dor" / "tmp"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def problems(records: list[logging.LogRecord]) -> list[str]:
    """Log records at WARNING or above, or with a traceback."""
    return [f"{r.name} {r.levelname} {r.getMessage()}" for r in records if r.levelno >= logging.WARNING or r.exc_info]


def test_a_client_that_goes_away_mid_upload_is_one_info_line(
    node_factory: Callable[..., RunningNode], keystores: Callable[[str], Keystore], caplog: pytest.LogCaptureFixture
) -> None:
    node = node_factory("disconnect-node")
    owner = keystores("disconnect-owner")
    with DORProxy(node.address, owner) as dor:
        dor.request("POST", "/db/identity", json_body=owner.identity.model_dump(mode="json"))
    caplog.set_level(logging.INFO)
    sock = raw_upload(node, owner, 16)
    wait_for(lambda: len(temp_files(node)) == 1, "the node streaming the body to a temp file")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST, at once
    sock.close()
    wait_for(lambda: temp_files(node) == [], "the temp file removed")
    time.sleep(0.3)  # a quiet period, not a wait: anything wrongly logged after the cleanup shows up in it
    assert problems(caplog.records) == []
    gone = [r for r in caplog.records if "went away" in r.getMessage()]
    assert len(gone) == 1 and gone[0].levelno == logging.INFO, [r.getMessage() for r in caplog.records]
    assert "/dor/add-c" in gone[0].getMessage()
    with DORProxy(node.address, owner) as dor:
        assert dor.search(data_type="Abandoned") == []


def test_requests_in_flight_when_the_node_stops_get_503(
    node_factory: Callable[..., RunningNode], keystores: Callable[[str], Keystore], caplog: pytest.LogCaptureFixture
) -> None:
    node = node_factory("stopping-node", stop_grace=0.5)
    owner = keystores("stopping-owner")
    with DORProxy(node.address, owner) as dor:
        dor.request("POST", "/db/identity", json_body=owner.identity.model_dump(mode="json"))
    caplog.set_level(logging.INFO)
    sock = raw_upload(node, owner, 64)  # never completed: the node stops first
    sock.settimeout(15)

    outcome: dict[str, Any] = {}

    def streamed_upload() -> None:
        """A second upload, through the proxy (the SDK's path), streaming slowly."""
        with DORProxy(node.address, owner) as dor:
            head = upload_head(owner)

            def body() -> Any:
                yield head
                for _ in range(64):
                    yield BLOCK
                    time.sleep(0.1)  # the pace is the behaviour: an upload still streaming when the node stops

            digest = hashlib.sha256(head)
            for _ in range(64):
                digest.update(BLOCK)
            try:
                dor.request(
                    "POST",
                    "/dor/add-c",
                    content=body(),
                    body_sha256=digest.hexdigest(),
                    signed=True,
                    headers={"content-type": "application/octet-stream", "content-length": str(len(head) + 64 * MiB)},
                )
            except Exception as e:
                outcome["error"] = e

    thread = threading.Thread(target=streamed_upload)
    thread.start()
    wait_for(lambda: len(temp_files(node)) == 2, "both uploads streaming to temp files")
    began = time.monotonic()
    stopper = threading.Thread(target=node.stop)
    stopper.start()
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
        if b"\r\n\r\n" in answer and answer.endswith(b"}"):
            break
    thread.join(15)
    stopper.join(20)
    took = time.monotonic() - began
    sock.close()

    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 503"), answer[:300]
    body = httpx.Response(503, content=rest.partition(b"\r\n\r\n")[2]).json()
    assert set(body) == {"reason", "id", "details"} and body["reason"] == "Node is stopping"
    error = outcome.get("error")
    assert isinstance(error, UnavailableError) and error.reason == "Node is stopping", repr(error)
    assert took < 5, took  # the grace (0.5 s), not uvicorn's 5 s backstop
    assert temp_files(node) == []
    assert problems(caplog.records) == []
    assert any("node is stopping" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
