"""The signed, hash-chained audit log (issue 19 item 3) on real nodes: a scripted day of activity is recorded in
order and verifies; owners see only the events about their objects and jobs; editing, deleting or cutting entries
in the database file is detected (offline and by the node after a restart); retention keeps the log bounded and
verifiable; floods are bounded; no secret is written."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from saas.audit.chain import AuditEntry, verify_file
from saas.audit.proxy import AuditProxy
from saas.core.errors import AuthorisationError, ConfigError, InvalidInputError
from saas.core.keystore import Keystore
from saas.core.signing import EMPTY_BODY_SHA256, sign_request
from saas.dor.proxy import DORProxy
from saas.nodedb.proxy import NodeDBProxy
from saas.rti.schemas import Task
from tests.conftest import PASSWORD, RunningNode
from tests.rti.rti_support import RTIEnv, adapter_repo

SECRET_VALUE = "by-value input that must never reach the audit log"


@pytest.fixture
def env(node_factory: Callable[..., RunningNode], keystores: Callable[[str], Keystore], tmp_path: Path) -> RTIEnv:
    repo, commit = adapter_repo(tmp_path / "repos" / "adapters", "abc", "slow")
    node = node_factory("node", retain_job_history=True)
    with NodeDBProxy(node.address) as db:
        for name in ("alice", "bob", "carol"):
            db.update_identity(keystores(name).identity)
    files = tmp_path / "files"
    files.mkdir()
    return RTIEnv(node, node.keystore, keystores("alice"), keystores("bob"), repo, commit, files)


def entries(node: RunningNode, keystore: Keystore, **filters: Any) -> list[AuditEntry]:
    with AuditProxy(node.address, keystore) as proxy:
        return proxy.get_entries(**filters)


def events(found: list[AuditEntry]) -> list[str]:
    return [e.event for e in found]


def scripted_day(env: RTIEnv, carol: Keystore) -> dict[str, str]:
    """A day on a node: uploads, a refused read, a grant, reads, a revoke, a transfer, a deployment, a job, a
    cancelled job, a delete, an undeploy and a request with a forged signature. Returns the IDs involved."""
    alice, bob = env.alice, env.bob
    private = env.add_json({"v": 1}, alice, access_restricted=True)
    public = env.add_json({"v": 2}, alice)
    with env.dor(bob) as dor:
        assert dor.get_meta(private) is None  # refused: bob may not see it
        with pytest.raises(AuthorisationError):
            dor.delete_data_object(public, bob)
    with env.dor(alice) as dor:
        dor.grant_access(private, alice, bob.identity)
    env.output_value(private, bob)  # bob reads the content
    with env.dor(bob) as dor:
        assert dor.get_meta(private) is not None
    with env.dor(alice) as dor:
        dor.revoke_access(private, alice, bob.identity)
        dor.transfer_ownership(public, alice, bob.identity)
    proc_id = env.deploy("abc")
    with env.rti(alice) as rti:
        job = rti.submit_job(
            proc_id,
            [
                Task.InputReference(name="a", obj_id=private),
                Task.InputValue(name="b", value={"v": 3, "s": SECRET_VALUE}),
            ],
            [Task.Output(name="c", owner_iid=alice.identity.id)],
            alice,
        ).id
    status = env.wait(job)
    assert status.state == "successful", status
    slow = env.deploy("slow")
    cancelled = env.submit_abc(slow, a=30)
    with env.rti(alice) as rti:
        assert rti.cancel_job(cancelled, alice).state == "cancelled"
    with env.dor(alice) as dor:
        dor.delete_data_object(private, alice)
    with env.rti(env.owner) as rti:
        rti.undeploy(slow, env.owner)
    headers = sign_request(carol, "GET", "/api/v1/rti/job", env.node.node.iid, EMPTY_BODY_SHA256)
    headers["saas-signature"] = headers["saas-signature"][:-8] + "AAAAAAA="  # forged
    assert httpx.get(env.node.url + "/api/v1/rti/job", headers=headers, trust_env=False).status_code == 401
    return {
        "private": private,
        "public": public,
        "job": job,
        "output": status.output["c"].obj_id,
        "cancelled": cancelled,
        "proc": proc_id,
        "slow": slow,
        "forged_signature": headers["saas-signature"],
    }


def test_a_day_of_activity_is_chained_signed_and_shown_to_owners_only(env: RTIEnv, keystores) -> None:
    carol = keystores("carol")
    ids = scripted_day(env, carol)
    node, alice, bob = env.node, env.alice, env.bob

    everything = entries(node, env.owner)  # the node owner sees every entry, in order
    assert [e.seq for e in everything] == list(range(everything[0].seq, everything[0].seq + len(everything)))
    about_private = events([e for e in everything if e.obj_id == ids["private"]])
    assert about_private == [
        "object.added",
        "object.access_refused",  # bob before the grant
        "object.granted",
        "object.read",  # bob's download
        "object.meta_read",  # bob looks at the restricted metadata
        "object.revoked",
        "object.read",  # the job reads its input
        "object.deleted",
    ]
    job_events = events([e for e in everything if e.job_id == ids["job"]])
    assert job_events == ["job.submitted", "object.read", "job.running", "object.added", "job.successful"]
    assert events([e for e in everything if e.job_id == ids["cancelled"]])[-2:] == ["job.cancel", "job.cancelled"]
    kinds = set(events(everything))
    assert {"processor.deploy", "processor.ready", "processor.undeployed", "object.transferred"} <= kinds
    assert {"object.change_refused", "request.refused", "identity.published"} <= kinds
    refused = [e.details for e in everything if e.event == "request.refused"]
    assert [(r["status"], r["claimed_iid"]) for r in refused] == [(403, bob.identity.id), (401, carol.identity.id)]
    assert refused[1]["reason"] == "Invalid request signature" and refused[1]["path"] == "/api/v1/rti/job"
    assert all(e.actor is None for e in everything if e.event == "request.refused")  # unverified: never the actor
    read = next(e for e in everything if e.event == "object.read" and e.actor == bob.identity.id)
    assert read.owner == alice.identity.id and read.obj_id == ids["private"]
    added = next(e for e in everything if e.obj_id == ids["output"])
    assert added.actor == node.node.iid and added.owner == alice.identity.id and added.job_id == ids["job"]

    # Owners see the events about their objects and jobs (and their own actions), nothing else.
    for keystore in (alice, bob):
        iid = keystore.identity.id
        seen = entries(node, keystore)
        assert seen and all(iid in (e.owner, e.actor) for e in seen)
        assert {e.seq for e in seen} == {e.seq for e in everything if iid in (e.owner, e.actor)}
    assert "job.successful" in events(entries(node, alice, job_id=ids["job"]))
    assert entries(node, bob, job_id=ids["job"]) == []  # bob's read of alice's object does not open her job to him
    bob_public = events(entries(node, bob, obj_id=ids["public"]))
    assert bob_public == ["object.change_refused", "object.transferred"]  # his own attempt, then his object
    # carol's refused request is not hers to see (its signature did not verify): only her publication is
    assert events(entries(node, carol)) == ["identity.published"]
    assert events(entries(node, alice, event="object.granted")) == ["object.granted"]
    later = entries(node, alice, since=int(time.time() * 1000) + 60_000)
    assert later == []

    # Exporting and verifying are the node owner's; the chain verifies on the node and offline.
    with AuditProxy(node.address, alice) as proxy, pytest.raises(AuthorisationError):
        proxy.export(env.tmp / "nope.jsonl")
    with AuditProxy(node.address, env.owner) as proxy:
        assert proxy.verify().ok
        export = proxy.export(env.tmp / "audit.jsonl")
    report = verify_file(export, node.node.iid)
    assert report.ok, report.problems
    assert report.first_seq == 1 and report.entries == report.last_seq == len(everything) + 1  # + alice's 403

    # No secret reaches the log: by-value inputs, request signatures, the keystore password.
    stored = (node.node.config.datastore / "audit.sqlite").read_bytes() + export.read_bytes()
    for secret in (SECRET_VALUE, ids["forged_signature"], PASSWORD):
        assert secret.encode() not in stored


def _stop(node: RunningNode) -> Path:
    node.stop()
    return node.node.config.datastore / "audit.sqlite"


def _sql(path: Path, statement: str, *args: Any) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(statement, args)
    conn.close()


@pytest.fixture
def busy_node(node_factory: Callable[..., RunningNode], keystores: Callable[[str], Keystore]) -> RunningNode:
    """A node with 14 entries: alice and bob published, then 12 reads."""
    node = node_factory("node")
    alice, bob = keystores("alice"), keystores("bob")
    with NodeDBProxy(node.address) as db:
        db.update_identity(alice.identity)
        db.update_identity(bob.identity)
    for i in range(12):
        node.node.audit.record("object.read", actor=alice.identity.id, owner=alice.identity.id, n=i)
    node.call(node.node.audit.flush())
    return node


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        ("UPDATE entries SET details = '{\"n\": 99}' WHERE seq = 5", "entry 5 was altered"),
        ("UPDATE entries SET actor = NULL WHERE seq = 6", "entry 6 was altered"),
        ("DELETE FROM entries WHERE seq = 7", "entries 7..7 are missing"),
        ("DELETE FROM entries WHERE seq >= 10", "entries were removed"),  # cut from the end
        ("DELETE FROM entries WHERE seq <= 3", "entries 1..3 were removed from the start"),
        ("UPDATE entries SET signature = (SELECT signature FROM entries WHERE seq = 2) WHERE seq = 8", "entry 8 is"),
        ("UPDATE head SET seq = seq - 1", "head is not signed"),
    ],
)
def test_tampering_with_the_database_file_is_detected(busy_node: RunningNode, tamper: str, problem: str) -> None:
    path = _stop(busy_node)
    assert verify_file(path, busy_node.node.iid).ok
    _sql(path, tamper)
    report = verify_file(path, busy_node.node.iid)
    assert not report.ok
    assert any(problem in p for p in report.problems), report.problems


def test_a_re_signed_chain_is_not_the_node_s(busy_node: RunningNode, keystores: Callable[[str], Keystore]) -> None:
    path = _stop(busy_node)
    _sql(path, "UPDATE meta SET value = ? WHERE key = 'node'", keystores("bob").identity.model_dump_json())
    report = verify_file(path, busy_node.node.iid)
    assert not report.ok and "not by" in report.problems[0]


def test_a_truncated_or_damaged_file_is_reported(busy_node: RunningNode, tmp_path: Path) -> None:
    path = _stop(busy_node)
    copy = tmp_path / "copy.sqlite"
    data = path.read_bytes()
    copy.write_bytes(data[: len(data) // 2])
    report = verify_file(copy)
    assert not report.ok and "cannot read the audit database" in report.problems[0]
    export = tmp_path / "cut.jsonl"
    export.write_text('{"audit_log": 1, "node": null}\n{"seq": 1')
    assert not verify_file(export).ok


def test_entries_cut_from_the_end_stay_visible_after_a_restart(busy_node: RunningNode) -> None:
    path = _stop(busy_node)
    _sql(path, "DELETE FROM entries WHERE seq > 8")
    node = RunningNode(type(busy_node.node)(busy_node.node.config, busy_node.node.keystore))
    node.start()
    try:
        found = node.call(node.node.audit.query(None, event="audit.tamper_detected"))
        assert len(found) == 1 and found[0].details["last_seq"] == 8
        report = node.call(node.node.audit.verify())
        assert not report.ok
        assert any("are missing" in p for p in report.problems), report.problems  # the gap stays in the chain
    finally:
        node.stop()


def test_an_anchor_seen_before_must_still_be_there(busy_node: RunningNode) -> None:
    before = busy_node.call(busy_node.node.audit.verify())
    anchor = (before.last_seq, before.last_hash)
    assert anchor[0] is not None and anchor[1] is not None
    busy_node.node.audit.record("object.read", actor=None, n=100)
    assert busy_node.call(busy_node.node.audit.verify(anchor)).ok  # the log grew past it
    path = _stop(busy_node)
    _sql(path, "DELETE FROM entries WHERE seq >= ?", anchor[0])
    _sql(path, "UPDATE head SET seq = 0")  # whatever the head says, the anchor is gone
    report = verify_file(path, busy_node.node.iid, anchor)
    assert any(f"entry {anchor[0]} seen before" in p for p in report.problems), report.problems
    report = verify_file(path, busy_node.node.iid, (1, "0" * 64))
    assert any("is not the one seen before" in p for p in report.problems)


def test_retention_bounds_the_log_and_keeps_it_verifiable(node_factory: Callable[..., RunningNode]) -> None:
    node = node_factory("node", audit_max_entries=100)
    for i in range(250):
        node.node.audit.record("object.read", n=i)
    found = node.call(node.node.audit.query(None, limit=10_000))
    assert len(found) <= 100
    assert found[0].seq > 1
    pruned = [e for e in found if e.event == "audit.pruned"]
    assert pruned and pruned[-1].details["first_kept"] == found[0].seq
    assert node.call(node.node.audit.verify()).ok
    path = _stop(node)
    _sql(path, "DELETE FROM entries WHERE seq < ?", found[0].seq + 2)  # more than retention removed
    report = verify_file(path, node.node.iid)
    assert any("removed from the start" in p for p in report.problems), report.problems


def test_retention_by_age(node_factory: Callable[..., RunningNode]) -> None:
    node = node_factory("node", audit_max_age_days=1 / 86400)  # one second
    for i in range(5):
        node.node.audit.record("object.read", n=i)
    node.call(node.node.audit.flush())
    time.sleep(1.3)  # time passing is the behaviour: the first entries grow older than the maximum age
    node.node.audit.record("object.read", n=5)
    found = node.call(node.node.audit.query(None))
    assert [e.details.get("n") for e in found if e.event == "object.read"] == [5]
    assert found[0].event == "audit.pruned" or found[0].details.get("n") == 5
    assert node.call(node.node.audit.verify()).ok


def test_floods_are_bounded(node: RunningNode) -> None:
    audit = node.node.audit

    async def flood() -> None:
        audit.max_queued = 10
        for i in range(2000):
            audit.record("object.read", n=i)
        await audit.flush()

    node.call(flood())
    found = node.call(audit.query(None, limit=10_000))
    dropped = [e for e in found if e.event == "audit.dropped"]
    assert dropped and sum(e.details["dropped"] for e in dropped) + len(found) - len(dropped) >= 2000
    assert node.call(audit.verify()).ok

    # Refused requests: at most one entry per client address every few seconds, with the count suppressed.
    for _ in range(30):
        response = httpx.get(node.url + "/api/v1/rti/job", headers={"saas-iid": "x"}, trust_env=False)
        assert response.status_code == 401
    refused = node.call(audit.query(None, event="request.refused"))
    assert len(refused) == 1

    # So are anonymous looks at a restricted object (refused as "not found", but its owner wants to know).
    path = node.node.config.datastore.parent / "restricted.json"
    path.write_text("{}")
    with DORProxy(node.address, node.keystore) as dor:
        obj = dor.add_data_object(path, node.keystore.identity, True, False, "JSONObject", "json")
    for _ in range(30):
        assert httpx.get(f"{node.url}/api/v1/dor/{obj.obj_id}/meta", trust_env=False).status_code == 404
    looked = node.call(audit.query(None, event="object.access_refused"))
    assert len(looked) == 1 and looked[0].actor is None and looked[0].owner == node.node.iid


def test_show_needs_a_signature_and_checks_its_filters(node: RunningNode) -> None:
    assert httpx.get(node.url + "/api/v1/audit", trust_env=False).status_code == 401
    with AuditProxy(node.address, node.keystore) as proxy:
        with pytest.raises(InvalidInputError):
            proxy.get_entries(obj_id="not-an-id")
        with pytest.raises(InvalidInputError):
            proxy.get_entries(limit=0)
        assert proxy.get_entries(since=0, until=1) == []


def test_audit_flags_of_the_service_command() -> None:
    from saas_cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["service", "--audit-max-entries", "5000", "--audit-max-age", "0"])
    assert args.audit_max_entries == 5000 and args.audit_max_age == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["service", "--audit-max-entries", "10"])


def test_a_damaged_log_file_stops_the_start_with_advice(busy_node: RunningNode) -> None:
    path = _stop(busy_node)
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4096)
    node = RunningNode(type(busy_node.node)(busy_node.node.config, busy_node.node.keystore))
    try:
        with pytest.raises(ConfigError, match="move it aside"):
            node.start()
    finally:
        node.stop()


def test_only_new_or_updated_identities_are_recorded(node: RunningNode, keystores: Callable[[str], Keystore]) -> None:
    alice = keystores("alice")
    with NodeDBProxy(node.address) as db:
        for _ in range(5):  # the same record again is free and unlimited: it must not fill the log
            db.update_identity(alice.identity)
    published = node.call(node.node.audit.query(None, event="identity.published"))
    assert [(e.actor, e.details["nonce"]) for e in published] == [(alice.identity.id, alice.identity.nonce)]
