"""`saas-cli network health` against three real nodes joined over P2P, one of them stopped: the table and --json."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "saas_cli.main", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_network_health_shows_every_node_and_the_stopped_one(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice")
    boot = "{}:{}".format(*a.node.p2p.address)
    b = node_factory("bob", boot_node=boot)
    c = node_factory("carol", boot_node=boot)
    wait_until(
        lambda: all(
            len(n.node.nodedb.network()) == 3 and all(i.online for i in n.node.nodedb.network()) for n in (a, b, c)
        ),
        20,
        interval=0.1,
        what="the nodes to connect",
    )
    address = "{}:{}".format(*a.address)

    result = cli("--json", "network", "--address", address, "health")
    assert result.returncode == 0, result.stderr
    entries = {e["iid"]: e for e in json.loads(result.stdout)}
    assert set(entries) == {a.node.iid, b.node.iid, c.node.iid}
    assert all(e["reachable"] and e["health"]["version"] for e in entries.values())

    c.stop()
    result = cli("network", "--address", address, "health", "--deadline", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "NAME", "REACHABLE"]
    row = {line.split()[1]: line for line in lines[2:] if line.strip()}
    assert " yes " in row["alice"] and " yes " in row["bob"]
    assert "NO since" in row["carol"] and "last known" in row["carol"]
    assert c.node.iid[:16] in result.stderr and "carol" in result.stderr  # why it did not answer

    result = cli("--json", "network", "--address", address, "health", "--deadline", "2")
    gone = {e["iid"]: e for e in json.loads(result.stdout)}[c.node.iid]
    assert gone["reachable"] is False and gone["health"]["iid"] == c.node.iid and gone["unreachable_since"]


def test_network_health_deadline_out_of_range_is_a_usage_error(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice")
    result = cli("network", "--address", "{}:{}".format(*a.address), "health", "--deadline", "99")
    assert result.returncode == 2, result.stderr
    assert "deadline" in result.stderr


def test_network_diagnose_public_and_as_the_node_owner(node_factory: Callable[..., Any], tmp_path: Any) -> None:
    import logging
    import os

    a = node_factory("alice")
    b = node_factory("bob", boot_node="{}:{}".format(*a.node.p2p.address), log_level="INFO")
    wait_until(
        lambda: all(n.online for n in a.node.nodedb.network()) and len(a.node.nodedb.network()) >= 2,
        20,
        interval=0.1,
        what="the nodes to connect",
    )
    logging.getLogger("saas.test").error("diagnose marker 51c2")
    address = "{}:{}".format(*a.address)
    empty = tmp_path / "no-keystores"
    empty.mkdir()

    # anyone: the public part, found by a prefix of the node's identity ID through the node at --address
    result = cli("--keystore", str(empty), "network", "--address", address, "diagnose", b.node.iid[:12])
    assert result.returncode == 0, result.stderr
    assert f"Diagnostics of node {b.node.iid}" in result.stdout and "public part" in result.stdout
    assert "marker 51c2" not in result.stdout

    # the node owner (its keystore is in the keystore folder): the log lines too
    env = {**os.environ, "SAAS_PASSWORD": "test password"}
    keystores = str(b.node.keystore.path.parent)
    owner = subprocess.run(
        [
            sys.executable,
            "-m",
            "saas_cli.main",
            "--json",
            "--keystore",
            keystores,
            "network",
            "--address",
            address,
            "diagnose",
            "{}:{}".format(*b.address),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert owner.returncode == 0, owner.stderr
    report = json.loads(owner.stdout)
    assert report["owner"] is True and report["iid"] == b.node.iid
    assert any("marker 51c2" in line for line in report["logs"])

    missing = cli("--keystore", str(empty), "network", "--address", address, "diagnose", "zzzzzz")
    assert missing.returncode == 4 and "zzzzzz" in missing.stderr


@pytest.mark.slow
def test_operating_flags_reach_the_node(saas_cli, cli_env, background, shared_keystore, tmp_path, node_factory) -> None:
    """`service --log-ring-lines 3` keeps three log lines for the owner's diagnostics (the node logs at INFO)."""
    import signal

    from saas.core.keystore import Keystore
    from saas.ops.proxy import HealthProxy
    from tests.conftest import free_port

    rest, p2p = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    node = background(
        [saas_cli, *shared_keystore.args(), "--log-level", "INFO", "service", "--use-defaults", "--datastore",
         tmp_path / "datastore", "--rest-address", rest, "--p2p-address", p2p, "--log-ring-lines", "3",
         "--health-recent-jobs", "7"],
        env=cli_env,
    )  # fmt: skip
    node.wait_for("Created ")
    node_factory("bob", boot_node=p2p)  # the node logs the new peer and more
    owner = Keystore.load(shared_keystore.path, shared_keystore.password)
    with HealthProxy(rest, owner) as proxy:
        reports: list[Any] = []

        def accepted_logged() -> Any:
            report = proxy.get_diagnostics(signed=True)
            reports.append(report)
            assert report.owner and report.logs is not None and len(report.logs) <= 3
            return report if any("accepted" in line for line in report.logs) else None

        report = wait_until(
            accepted_logged,
            20,
            interval=0.2,
            what="the new peer's 'accepted' line among the last log lines",
            detail=lambda: str(reports[-1].logs if reports else None),
        )
    assert len(report.logs) == 3
    assert node.stop(signal.SIGTERM) == 0
