"""`saas-cli doctor` against real nodes: it passes on a good node (exit 0) and names the broken part, with its fix,
on a node whose datastore its owner cannot write, or where no node answers (exit 1)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from tests.cli.cli_support import doctor
from tests.conftest import PASSWORD, free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def test_doctor_passes_on_a_good_node(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice")
    b = node_factory("bob", boot_node="{}:{}".format(*a.node.p2p.address))
    wait_until(
        lambda: all(n.online for n in b.node.nodedb.network()) and len(b.node.nodedb.network()) >= 2,
        20,
        interval=0.1,
        what="the nodes to connect",
    )
    boot = "{}:{}".format(*a.node.p2p.address)
    result = doctor(b, "--json", "--datastore", str(b.node.config.datastore), "--boot-node", boot)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    names = [c["name"] for c in report["checks"]]
    for expected in (
        "keystore",
        "node",
        "datastore",
        "node disk",
        "DOR write/read/delete",
        "P2P boot node",
        "P2P peers",
        "sandbox",
    ):
        assert expected in names, names
    assert all(c["ok"] and c["fix"] is None for c in report["checks"])

    result = doctor(b, "--datastore", str(b.node.config.datastore))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All" in result.stdout and "checks passed" in result.stdout and "FAILED" not in result.stdout


def test_doctor_names_an_unwritable_datastore(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice")
    datastore = a.node.config.datastore
    os.chmod(datastore, 0o500)
    try:
        result = doctor(a, "--datastore", str(datastore))
    finally:
        os.chmod(datastore, 0o700)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = {line.split()[1]: line for line in result.stdout.splitlines()[2:] if line.startswith(("ok", "FAILED"))}
    assert rows["datastore"].startswith("FAILED") and "not writable by its owner" in rows["datastore"]
    assert rows["keystore"].startswith("ok") and rows["node"].startswith("ok")
    assert f"chmod 700 {datastore}" in result.stdout
    assert "1 of" in result.stderr and "datastore" in result.stderr


def test_doctor_without_a_node_says_so(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice")
    result = doctor(a, "--json", address=f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is False and checks["keystore"]["ok"]
    assert not checks["node"]["ok"] and "saas-cli service" in checks["node"]["fix"]
    assert not checks["DOR write/read/delete"]["ok"] and "not run" in checks["DOR write/read/delete"]["detail"]


def test_doctor_with_a_wrong_password_names_the_keystore(node_factory: Callable[..., Any]) -> None:
    a = node_factory("alice")
    result = doctor(a, "--json", password="wrong")
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert not checks["keystore"]["ok"] and "password" in checks["keystore"]["fix"]
    assert checks["node"]["ok"]


def test_doctor_logs_in_with_each_ssh_credential(
    node_factory: Callable[..., Any], sshd: Any, other_ssh_key: Any, tmp_path: Any
) -> None:
    """Each SSH credential of the keystore is a backend the doctor logs in with (a real sshd on 127.0.0.1)."""
    from saas.core.keystore import Keystore
    from saas.core.schemas import SSHCredentials

    a = node_factory("alice")
    keystore = Keystore.create(tmp_path / "keystores", "operator", "operator@example.org", PASSWORD)
    for name, key in (("lab", sshd.key), ("stranger", other_ssh_key)):
        keystore.ssh_credentials.update(
            name, SSHCredentials(host=sshd.host, login=sshd.login, key=key.read_text(), key_path=str(key))
        )
    result = doctor(a, "--json", keystore=keystore)
    assert result.returncode == 1, result.stdout + result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["backend ssh 'lab'"]["ok"], (checks, sshd.log_text()[-2000:])
    assert f"{sshd.login}@{sshd.host}" in checks["backend ssh 'lab'"]["detail"]
    stranger = checks["backend ssh 'stranger'"]
    assert not stranger["ok"] and "Permission denied" in stranger["detail"]
    assert "test-ssh --name stranger" in stranger["fix"]
    assert checks["DOR write/read/delete"]["ok"]  # a new identity: published to the node first
