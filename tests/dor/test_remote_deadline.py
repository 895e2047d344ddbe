"""Node-side lookups on other DORs run under one deadline (issue 15, item 2): a stalled peer costs at most
`network_deadline`, never a timeout per peer; what arrived by then is used; a lookup this node answers itself does
not ask the network.

Three real nodes: A asks (deadline 1.5 s), B is honest, S is a real node whose `/saas/dor/1.0.0` handler never
answers (its P2P host, NodeDB protocol and pings still work: a stalled DOR, not a dead node). `ask_peers` itself is
also driven with plain coroutines."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from saas.core.errors import P2PError
from saas.core.keystore import Keystore
from saas.dor import remote
from saas.dor.proxy import DORProxy
from saas.nodedb.fanout import ask_peers
from saas.nodedb.schemas import NodeInfo
from saas.p2p.protocols import DOR
from saas.rti import placement
from saas.rti.schemas import Task
from tests.conftest import RunningNode
from tests.p2p.conftest import start_network, stop_all

pytestmark = pytest.mark.timeout(120)

DEADLINE = 1.5
SLACK = 0.5  # scheduling on a busy machine


@dataclass
class Net:
    a: RunningNode  # asks
    b: RunningNode  # honest
    s: RunningNode  # its DOR never answers
    user: Keystore
    files: Path
    asked_s: list[str]  # message types S was sent (and never answered)

    def add(self, node: RunningNode, value: Any) -> str:
        path = self.files / f"{len(list(self.files.iterdir()))}.json"
        path.write_text(json.dumps(value))
        with DORProxy(node.address, self.user) as dor:
            return dor.add_data_object(path, self.user.identity, False, False, "JSONObject", "json").obj_id


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, keystores: Callable[[str], Keystore]) -> Iterator[Net]:
    root = tmp_path_factory.mktemp("remote-deadline")
    user = keystores("dave")
    nodes = start_network(root, keystores, ("alice", "bob", "stalled"), [user], network_deadline=DEADLINE)
    release: asyncio.Event | None = None
    try:
        a, b, s = nodes
        asked: list[str] = []

        async def make_event() -> asyncio.Event:
            return asyncio.Event()

        release = s.call(make_event())

        async def stalled(peer_id: str, message: dict[str, Any]) -> dict[str, Any] | None:
            asked.append(str(message.get("type")))
            assert release is not None
            await release.wait()
            return {"objects": []}

        assert s.node.p2p is not None
        s.node.p2p.host.set_handler(DOR, stalled)
        files = root / "files"
        files.mkdir()
        yield Net(a, b, s, user, files, asked)
    finally:
        if release is not None:
            nodes[2].loop.call_soon_threadsafe(release.set)
        stop_all(nodes)


def timed(net: Net, coroutine: Any) -> tuple[Any, float]:
    start = time.monotonic()
    result = net.a.call(coroutine)
    return result, time.monotonic() - start


def test_a_found_object_costs_at_most_the_deadline(net: Net) -> None:
    obj_id = net.add(net.b, {"v": 1})
    before = len(net.asked_s)
    found, took = timed(net, remote.lookup(net.a.node, [obj_id]))
    assert found[obj_id].custodian.identity.id == net.b.node.iid  # what arrived is used
    assert took < DEADLINE + SLACK, took  # was 5 s per peer
    assert len(net.asked_s) == before + 1  # S was asked too


def test_a_lookup_nobody_answers_costs_the_deadline_and_names_the_stalled_node(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    unknown = "0" * 64
    with caplog.at_level(logging.INFO, logger="saas.dor.remote"):
        found, took = timed(net, remote.lookup(net.a.node, [unknown]))
    assert found == {}
    assert DEADLINE - 0.1 <= took < DEADLINE + SLACK, took  # was 5 s per peer
    lines = [r.getMessage() for r in caplog.records if "did not answer" in r.getMessage()]
    assert len(lines) == 1, lines
    assert net.s.node.iid[:8] in lines[0] and net.b.node.iid[:8] not in lines[0]
    # the stalled DOR still answers pings: it stays an accepted peer (liveness is about the node, not one protocol)
    time.sleep(1)  # a quiet period, not a wait: the stalled node must stay accepted while time passes
    assert net.a.node.p2p is not None
    assert net.s.node.iid in net.a.node.p2p.peers().values()


def test_provenance_of_a_missing_ancestor_is_bounded_by_the_deadline(net: Net) -> None:
    c_hash = "1" * 64
    found, took = timed(net, remote.find_c_hashes(net.a.node, [c_hash]))
    assert found == {}
    assert took < DEADLINE + SLACK, took


def test_local_first_input_does_not_ask_the_network(net: Net) -> None:
    obj_id = net.add(net.a, {"v": 2})
    before = len(net.asked_s)
    item = Task.InputReference(name="a", obj_id=obj_id)
    location, took = timed(net, placement.find_input(net.a.node, item, net.user.iid))
    assert location.custodian is None and location.meta.obj_id == obj_id
    assert took < 0.5, took
    assert len(net.asked_s) == before


def test_an_input_held_elsewhere_is_found_within_the_deadline(net: Net) -> None:
    obj_id = net.add(net.b, {"v": 3})
    item = Task.InputReference(name="a", obj_id=obj_id)
    location, took = timed(net, placement.find_input(net.a.node, item, net.user.iid))
    assert location.custodian.identity.id == net.b.node.iid
    assert took < DEADLINE + SLACK, took


# -- ask_peers on its own ---------------------------------------------------------------------------------------


def _records(net: Net) -> list[NodeInfo]:
    """The real node records of A (as B knows it), B and S (as A knows them)."""
    records = [net.b.node.nodedb.get_node(net.a.node.iid)]
    records += [net.a.node.nodedb.get_node(n.node.iid) for n in (net.b, net.s)]
    assert None not in records
    return records  # type: ignore[return-value]


def test_ask_peers_takes_what_arrived_by_the_deadline(net: Net) -> None:
    fast, failing, stalled = _records(net)
    cancelled: list[str] = []

    async def ask(node: NodeInfo) -> str:
        if node is failing:
            raise P2PError("refused")
        if node is stalled:
            try:
                await asyncio.sleep(60)  # the behaviour: a peer that never answers
            except asyncio.CancelledError:
                cancelled.append("stalled")
                raise
        return node.identity.id

    start = time.monotonic()
    outcome = asyncio.run(ask_peers(ask, [fast, failing, stalled], 0.3))
    assert time.monotonic() - start < 0.3 + SLACK
    assert outcome.answers == [(fast, fast.identity.id)]
    assert [(u.node, u.reason) for u in outcome.unanswered] == [
        (failing, "refused"),
        (stalled, "no answer within 0.3 s"),
    ]
    assert cancelled == ["stalled"]  # nothing is left running
