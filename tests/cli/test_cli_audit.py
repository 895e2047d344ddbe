"""`saas-cli audit`: show (an owner sees the events about their objects, others nothing), export and verify (of the
node's log, of an export and of the node's audit.sqlite, offline), with exit 11 for a log that was tampered with."""

from __future__ import annotations

import datetime
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from saas.core.errors import InvalidInputError
from saas_cli.commands.audit import parse_when
from tests.cli.cli_support import write_password_file
from tests.conftest import PASSWORD


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def test_show_export_and_verify(cli, shared_two_keystores, node_factory, publish, tmp_path: Path) -> None:
    node = node_factory("cli-audit-node")
    address = "{}:{}".format(*node.address)
    alice, bob = shared_two_keystores, shared_two_keystores.others[0]
    publish(address, alice)
    publish(address, bob)
    owner = node.keystore
    as_owner = ["--keystore", owner.path.parent, "--keystore-id", owner.iid]
    as_owner += ["--password-file", write_password_file(tmp_path / "owner.password", PASSWORD)]
    data = tmp_path / "data.json"
    data.write_text('{"v": 1}')
    added = ok(
        cli(
            *alice.args(), "--json", "dor", "--address", address, "add", "--data-type", "JSONObject",
            "--data-format", "json", "--restrict-access", data,
        )
    )  # fmt: skip
    obj_id = json.loads(added.stdout)["obj_id"]

    shown = ok(cli(*alice.args(), "audit", "--address", address, "show", "--object", obj_id))
    assert "object.added" in shown.stdout and obj_id[:12] in shown.stdout
    document = json.loads(ok(cli(*alice.args(), "--json", "audit", "--address", address, "show")).stdout)
    assert {e["event"] for e in document} == {"identity.published", "object.added"}
    assert all(alice.iid in (e["owner"], e["actor"]) for e in document)
    since = json.loads(ok(cli(*alice.args(), "--json", "audit", "--address", address, "show", "--since", "1h")).stdout)
    assert since == document
    nothing = ok(cli(*bob.args(), "--json", "audit", "--address", address, "show", "--object", obj_id))
    assert json.loads(nothing.stdout) == []  # bob sees nothing about alice's object
    bad = cli(*alice.args(), "audit", "--address", address, "show", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "--since" not in bad.stdout and "24h" in bad.stderr

    # Export and verify: the node owner's. Others are refused (exit 5).
    refused = cli(*alice.args(), "audit", "--address", address, "export", tmp_path / "x.jsonl")
    assert refused.returncode == 5, refused.stderr
    verified = ok(cli(*as_owner, "audit", "--address", address, "verify"))
    assert f"Audit log of node {owner.iid}" in verified.stdout and "verified" in verified.stdout
    head = verified.stdout.split("Head: ")[1].split()[0]
    export = tmp_path / "audit.jsonl"
    ok(cli(*as_owner, "audit", "--address", address, "export", export))
    ok(cli("audit", "verify", "--file", export, "--node", owner.iid, "--anchor", head))  # offline, no keystore

    # A changed entry in the export: exit 11, the entry named.
    lines = export.read_text().splitlines()
    entry = json.loads(lines[2])
    entry["event"] = "object.deleted"
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join([*lines[:2], json.dumps(entry), *lines[3:]]) + "\n")
    result = cli("--json", "audit", "verify", "--file", tampered)
    assert result.returncode == 11, result.stderr
    report, _ = json.JSONDecoder().raw_decode(result.stdout)  # the report, then the error envelope
    assert report["ok"] is False and "entry 2 was altered" in report["problems"][0]
    assert "failed verification" in result.stderr
    wrong_node = cli("audit", "verify", "--file", export, "--node", alice.iid)
    assert wrong_node.returncode == 11 and f"not by {alice.iid}" in wrong_node.stdout

    # The node's own database file, offline, after entries were cut from its end.
    node.stop()
    database = node.node.config.datastore / "audit.sqlite"
    ok(cli("audit", "verify", "--file", database, "--node", owner.iid))
    conn = sqlite3.connect(database)
    with conn:
        conn.execute("DELETE FROM entries WHERE seq = (SELECT MAX(seq) FROM entries)")
    conn.close()
    cut = cli("audit", "verify", "--file", database, "--node", owner.iid)
    assert cut.returncode == 11 and "entries were removed" in cut.stdout


def test_times_for_since_and_until() -> None:
    now = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.timezone.utc)
    hour = 3600 * 1000
    assert parse_when("24h", now) == int(now.timestamp() * 1000) - 24 * hour
    assert parse_when("1.5d", now) == int(now.timestamp() * 1000) - 36 * hour
    assert parse_when("2026-12-06T10:00+00:00", now) == int(now.timestamp() * 1000) - 2 * hour
    assert parse_when("2026-12-06", now) > 0  # local midnight
    with pytest.raises(InvalidInputError):
        parse_when("last tuesday", now)
