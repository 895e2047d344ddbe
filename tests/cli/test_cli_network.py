"""`saas-cli network show` against two real nodes joined over P2P: the table and --json."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "saas_cli.main", *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_network_show_lists_both_nodes(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice")
    b = node_factory("bob", boot_node="{}:{}".format(*a.node.p2p.address))
    wait_until(
        lambda: len(a.node.nodedb.network()) >= 2 and all(n.online for n in a.node.nodedb.network()),
        10,
        what="the nodes to connect",
    )
    address = "{}:{}".format(*a.address)

    result = cli("--json", "network", "--address", address, "show")
    assert result.returncode == 0, result.stderr
    nodes = {n["iid"]: n for n in json.loads(result.stdout)}
    assert set(nodes) == {a.node.iid, b.node.iid}
    assert nodes[b.node.iid]["online"] is True
    assert nodes[b.node.iid]["p2p_address"] == "{}:{}".format(*b.node.p2p.address)

    result = cli("network", "--address", address, "show")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "NODE",
        "IDENTITY",
        "ID",
        "DOR?",
        "RTI?",
        "REST",
        "ADDRESS",
        "P2P",
        "ADDRESS",
        "LAST",
        "SEEN",
        "ONLINE",
    ]
    assert any(b.node.iid in line and line.rstrip().endswith("Yes") for line in lines[2:])
