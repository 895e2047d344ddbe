"""`ask_nodes` (network-wide calls from clients under one deadline): what a node that did not answer is reported as,
and stopping early once an answer is good enough."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from saas.core.errors import UnreachableError
from saas.core.keystore import Keystore
from saas.nodedb.fanout import ask_nodes
from saas.nodedb.schemas import NodeInfo


def nodes(keystores: Callable[[str], Keystore], n: int) -> list[NodeInfo]:
    """Records of nodes nobody asks (the function given to `ask_nodes` answers for them)."""
    return [
        NodeInfo(
            identity=keystores(f"fanout{i}").identity,
            dor_service=True,
            rti_service=False,
            rest_address=("127.0.0.1", 1),
            p2p_address=("127.0.0.1", 2),
            retain_job_history=False,
            strict_deployment=True,
            started=0,
        )
        for i in range(n)
    ]


def test_a_request_timing_out_at_the_deadline_is_no_answer(keystores: Callable[[str], Keystore]) -> None:
    """A request whose own timeout is the deadline fails just as the deadline passes: whichever thread notices first,
    the node is reported as not answering within the deadline (not with the request's error)."""
    deadline = 0.05

    def times_out(_: NodeInfo) -> None:
        time.sleep(deadline)  # the request's own timeout: the deadline, counted from after the call began
        raise UnreachableError("Node at 127.0.0.1:1 did not answer in time")

    for _ in range(20):
        outcome = ask_nodes(times_out, nodes(keystores, 1), deadline)
        assert [u.reason for u in outcome.unanswered] == [f"no answer within {deadline:g} s"]


def test_errors_before_the_deadline_and_stopping_early(keystores: Callable[[str], Keystore]) -> None:
    three = nodes(keystores, 3)
    release = threading.Event()

    def answer(node: NodeInfo) -> int:
        if node is three[0]:
            raise UnreachableError("refused")
        if node is three[2]:
            release.wait(5)  # slow: only answers once released
        return 7

    started = time.monotonic()
    outcome = ask_nodes(answer, three, 5.0, enough=lambda value: value == 7)
    release.set()
    assert time.monotonic() - started < 2.0  # did not wait for the slow node
    assert [(n is three[1], v) for n, v in outcome.answers] == [(True, 7)]
    assert [u.reason for u in outcome.unanswered] == ["refused", "not waited for: a best answer had arrived"]
