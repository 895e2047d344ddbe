"""`saas-cli identity publish` and `identity discover` against a running node (and against a closed port)."""

from __future__ import annotations

import json

from tests.cli.cli_support import assert_clean_error

ID = r"[0-9a-z]{64}"


def discovered(cli, address: str) -> dict[str, dict]:
    result = cli("--json", "identity", "discover", "--address", address)
    assert result.returncode == 0, result.stderr
    return {document["id"]: document for document in json.loads(result.stdout)}


def test_publish_makes_the_identity_discoverable(cli, keystore, node_factory) -> None:
    node = node_factory()
    address = "{}:{}".format(*node.address)
    assert keystore.iid not in discovered(cli, address)

    result = cli(*keystore.args(), "identity", "publish", "--address", address)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Identity {keystore.iid} published to node at {address}."

    result = cli("identity", "discover", "--address", address)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Found 2 identities at {address}:"  # the node's own identity and ours
    assert lines[1].split() == ["NAME", "EMAIL", "IDENTITY", "ID"]
    rows = [line.split() for line in lines[3:]]
    assert ["Foo", "Bar", keystore.email, keystore.iid] in rows
    assert [node.keystore.identity.name, node.keystore.identity.email, node.keystore.iid] in rows

    found = discovered(cli, address)
    assert set(found) == {keystore.iid, node.keystore.iid}
    mine = found[keystore.iid]
    assert (mine["name"], mine["email"], mine["nonce"]) == (keystore.name, keystore.email, 0)
    assert mine["record"]["id"] == keystore.iid and mine["record"]["signature"]
    assert "keystore" not in mine  # a node's record, not a local keystore


def test_publish_json_env_address_and_update(cli, keystore, node_factory) -> None:
    """`$SAAS_ADDRESS` picks the node; an updated profile (higher nonce) replaces the record on the node."""
    node = node_factory()
    address = "{}:{}".format(*node.address)
    env = {"SAAS_ADDRESS": address}
    result = cli(*keystore.args(), "--json", "identity", "publish", env_extra=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"published": True, "id": keystore.iid, "address": address}

    assert cli(*keystore.args(), "identity", "update", "--name", "Renamed").returncode == 0
    assert discovered(cli, address)[keystore.iid]["name"] == keystore.name  # the node has the old record ...
    assert cli(*keystore.args(), "identity", "publish", env_extra=env).returncode == 0
    record = discovered(cli, address)[keystore.iid]  # ... until the new one is published
    assert (record["name"], record["nonce"]) == ("Renamed", 1)


def test_publish_with_wrong_password(cli, shared_keystore, closed_port: int) -> None:
    """The keystore is opened before the node is contacted: a wrong password is reported as such."""
    args = ["identity", "publish", "--address", f"127.0.0.1:{closed_port}"]
    result = cli(*shared_keystore.args(password=False), *args, env_extra={"SAAS_PASSWORD": "wrong"})
    assert_clean_error(result, 3, "Wrong password")


def test_publish_and_discover_closed_port(cli, shared_keystore, closed_port: int) -> None:
    address = f"127.0.0.1:{closed_port}"
    result = cli(*shared_keystore.args(), "identity", "publish", "--address", address)
    assert_clean_error(result, 6, f"Could not connect to {address}: connection refused")
    assert "ConnectError" not in result.stderr  # in words, not library class names
    assert result.stdout == ""
    result = cli("identity", "discover", "--address", address)
    assert_clean_error(result, 6, f"Could not connect to {address}: connection refused")
