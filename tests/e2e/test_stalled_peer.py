"""A stalled peer (issue 15): three real node processes; one is frozen with SIGSTOP (its sockets stay open, it
answers nothing — as a hung or swapped-out machine would).

While it is frozen: network searches from the SDK and the CLI return within the deadline with what the others hold
and name the frozen node; a node-side lookup (deploying a processor that no DOR holds: the GPP is looked for on every
DOR) is bounded by the node's `--network-deadline`; the frozen node is shown offline within the goal (≤ 20 s with
the default liveness settings). After SIGCONT it is shown online again and searches find its objects."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import NodeProcess, clean_env, cli_command, wait_for

from saas.core.errors import SaaSError
from saas.core.keystore import Keystore
from saas.nodedb.fanout import DEFAULT_DEADLINE
from saas.rti.proxy import RTIProxy
from saas.sdk.base import connect

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

OFFLINE_GOAL = 20.0  # seconds until a stopped peer is shown offline (issue 15, with the defaults)
NODE_DEADLINE = 2.0  # the asking node's --network-deadline
SLACK = 1.0  # a busy machine
CLI_START = 5.0  # seconds the CLI may take to start and print (imports) on a busy machine


def online(node: NodeProcess) -> dict[str, bool]:
    return {n.identity.id: bool(n.online) for n in node.nodedb().get_network()}


def test_sigstop_peer(node_process_factory: Callable[..., NodeProcess], user: Keystore, tmp_path: Path) -> None:
    a = node_process_factory("e2e-stall-a", start=False)
    a.service_args = ["--network-deadline", str(NODE_DEADLINE)]
    a.start()
    boot = ["--boot-node", f"127.0.0.1:{a.p2p_port}"]
    b = node_process_factory("e2e-stall-b", start=False)
    c = node_process_factory("e2e-stall-c", start=False)
    for n in (b, c):
        n.service_args = boot
        n.start()
    nodes = (a, b, c)
    everyone = {n.keystore.iid for n in nodes}
    wait_for(lambda: all(online(n) == dict.fromkeys(everyone, True) for n in nodes), 20, "all three online")
    for i, n in enumerate(nodes):
        n.publish(user)
        path = tmp_path / f"obj{i}.json"
        path.write_text(json.dumps({"v": i}))
        n.dor(user).add_data_object(path, user.identity, False, False, "StallTest", "json")

    context = connect(a.address, user)
    assert len(context.find_data_objects(data_type="StallTest")) == 3 and context.unanswered == []

    os.killpg(c.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        # the CLI and the SDK search at once, while the frozen node is still shown online
        cli = subprocess.Popen(
            [*cli_command(), "dor", "--address", "{}:{}".format(*a.address), "search", "--data-type", "StallTest"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(tmp_path / "cli-home"),
        )
        start = time.monotonic()
        found = context.find_data_objects(data_type="StallTest")
        took = time.monotonic() - start
        assert took < DEFAULT_DEADLINE + SLACK, took
        assert sorted(o.meta.custodian.identity.id for o in found) == sorted([a.keystore.iid, b.keystore.iid])  # type: ignore[union-attr]
        assert [u.node.identity.id for u in found.unanswered] == [c.keystore.iid]
        assert [u.node.identity.id for u in context.unanswered] == [c.keystore.iid]
        out, err = cli.communicate(timeout=30)
        cli_took = time.monotonic() - start
        assert cli.returncode == 0, err
        assert cli_took < DEFAULT_DEADLINE + CLI_START, cli_took
        assert "1 node(s) did not answer" in err + out and c.keystore.iid[:16] in err + out, err + out
        assert f"no answer within {DEFAULT_DEADLINE:g} s" in err + out
        assert "Traceback" not in err

        # node side: deploying an unknown processor looks for its GPP on every DOR, within a's deadline
        start = time.monotonic()
        with RTIProxy(a.address, a.keystore) as owner, pytest.raises(SaaSError) as e:
            owner.deploy("0" * 64, a.keystore)
        took = time.monotonic() - start
        assert "No GPP data object" in e.value.reason
        assert took < NODE_DEADLINE + SLACK, took

        wait_for(
            lambda: not online(a)[c.keystore.iid] and not online(b)[c.keystore.iid],
            OFFLINE_GOAL + 5,
            "the frozen node shown offline",
            interval=0.2,
        )
        shown_offline = time.monotonic() - stopped_at
        assert shown_offline <= OFFLINE_GOAL, shown_offline
        # shown offline: no longer asked, nobody is waited for
        start = time.monotonic()
        found = context.find_data_objects(data_type="StallTest")
        assert time.monotonic() - start < DEFAULT_DEADLINE
        assert len(found) == 2 and found.unanswered == []
    finally:
        os.killpg(c.pid, signal.SIGCONT)
    continued_at = time.monotonic()
    wait_for(lambda: all(online(n) == dict.fromkeys(everyone, True) for n in nodes), 20, "all online again", 0.2)
    back_online = time.monotonic() - continued_at
    found = context.find_data_objects(data_type="StallTest")
    assert len(found) == 3 and found.unanswered == []
    for n in nodes:
        assert "Traceback" not in n.stderr(), n.output()
    print(f"\nshown offline after {shown_offline:.1f} s, online again {back_online:.1f} s after SIGCONT")
