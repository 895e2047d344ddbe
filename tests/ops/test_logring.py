"""`LogRing`: the node's last log lines (bounded by `log_ring_lines`) and its last error."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx

from saas.ops.logring import MESSAGE_LIMIT, LogRing


def test_keeps_the_last_lines_and_the_last_error() -> None:
    ring = LogRing(capacity=3, logger_name="saas.test.ring")
    ring.attach()
    log = logging.getLogger("saas.test.ring")
    log.setLevel(logging.INFO)
    try:
        for i in range(5):
            log.info("line %d", i)
        assert [line.split(": ", 1)[1] for line in ring.lines()] == ["line 2", "line 3", "line 4"]
        assert ring.last_error is None
        log.error("broken %s", "x" * 1000)
        log.warning("after the error")
        error = ring.last_error
        assert error is not None and error["logger"] == "saas.test.ring"
        assert str(error["message"]).startswith("broken x") and len(str(error["message"])) == MESSAGE_LIMIT
        assert ring.lines()[-1].endswith("after the error")
        assert ring.lines(1) == ring.lines()[-1:]
    finally:
        ring.detach()
    log.info("not seen")
    assert all("not seen" not in line for line in ring.lines())


def test_a_node_keeps_as_many_lines_as_configured(node_factory: Callable[..., Any]) -> None:
    node = node_factory("alice", log_ring_lines=4, log_level="INFO")
    assert node.node.log_ring.lines() == node.node.log_ring.lines(4)
    for i in range(10):
        logging.getLogger("saas.test").warning("warning %d", i)
    lines = node.node.log_ring.lines()
    assert len(lines) == 4 and lines[-1].endswith("warning 9")
    assert httpx.get(node.url + "/api/v1/db/node/health").json()["last_error"] is None
