"""`saas-cli rti packages`, `rti level show/set/list/reset` and `rti offers` (issue 18) against a real node."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.cli.cli_support import write_password_file
from tests.conftest import PASSWORD


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def test_levels_packages_and_offers(cli, shared_keystore, node_factory, publish, tmp_path: Path) -> None:
    node = node_factory("cli-offers-node", default_level="basic", job_memory=4096, job_cores=4)
    address = "{}:{}".format(*node.address)
    publish(address, shared_keystore)
    user = shared_keystore.args()
    password = write_password_file(tmp_path / "owner.password", PASSWORD)
    owner = [
        "--keystore",
        str(node.keystore.path.parent),
        "--keystore-id",
        node.node.iid,
        "--password-file",
        str(password),
    ]

    listed = json.loads(ok(cli("--json", "rti", "--address", address, "packages")).stdout)
    assert [p["name"] for p in listed] == ["tiny", "small", "medium", "large"]
    table = ok(cli("rti", "--address", address, "packages")).stdout
    assert "PACKAGE" in table and "medium" in table

    shown = ok(cli(*user, "rti", "--address", address, "level", "show")).stdout
    assert "basic (the node's default); packages: small, tiny" in shown
    refused = cli(*user, "rti", "--address", address, "level", "set", shared_keystore.iid, "--level", "extended")
    assert refused.returncode != 0 and "Only the node owner assigns account levels" in refused.stderr
    custom = ok(
        cli(
            *owner,
            "rti",
            "--address",
            address,
            "level",
            "set",
            shared_keystore.iid,
            "--level",
            "custom",
            "--packages",
            "medium",
        )
    ).stdout
    assert "custom (assigned by the node owner); packages: medium, small, tiny" in custom
    levels = json.loads(ok(cli(*owner, "--json", "rti", "--address", address, "level", "list")).stdout)
    assert [x["iid"] for x in levels] == [shared_keystore.iid] and levels[0]["signature"]

    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "proc_id": "a" * 64,
                "input": [{"name": "x", "type": "reference", "obj_id": "b" * 64}],
                "output": [],
                "resources": {"memory": "1500M"},
            }
        )
    )
    found = json.loads(ok(cli(*user, "--json", "rti", "--address", address, "offers", "--job", str(job))).stdout)
    assert found["unanswered"] == []
    (offer,) = found["offers"]
    assert offer["can"] is False and offer["package"]["name"] == "medium" and offer["locality"]["missing"] == ["b" * 64]
    assert any("not deployed" in r for r in offer["reasons"])
    text = ok(cli(*user, "rti", "--address", address, "offers", "--job", str(job), "--package", "large")).stdout
    assert "CAN" in text and "does not allow package 'large'" in text
    missing = cli(*user, "--non-interactive", "rti", "--address", address, "offers")
    assert missing.returncode != 0 and "--proc-id" in missing.stderr
    job.write_text(json.dumps({**json.loads(job.read_text()), "user_iid": shared_keystore.iid}))
    anywhere = cli(*user, "rti", "--address", address, "job", "submit", "--job", str(job), "--anywhere")
    assert anywhere.returncode != 0 and "No node of the network can run this job" in anywhere.stderr
    reset = ok(cli(*owner, "rti", "--address", address, "level", "reset", shared_keystore.iid)).stdout
    assert "basic (the node's default)" in reset


def test_availability_and_booking(cli, shared_keystore, node_factory, publish) -> None:
    node = node_factory("cli-bookings-node", job_memory=4096, job_cores=4)
    address = "{}:{}".format(*node.address)
    publish(address, shared_keystore)
    user = shared_keystore.args()
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    booked = ok(
        cli(*user, "rti", "--address", address, "book", "--package", "large", "--from", tomorrow, "--days", "2")
    )
    assert booked.stdout.startswith(f"Booked large from {tomorrow} 00:00 to ")
    booking_id = booked.stdout.strip().rsplit(": ", 1)[1]
    conflict = cli(*user, "rti", "--address", address, "book", "--package", "tiny", "--from", tomorrow, "--hours", "1")
    assert conflict.returncode != 0 and "is not free at" in conflict.stderr
    grid = ok(cli(*user, "rti", "--address", address, "availability", "--from", tomorrow, "--days", "3")).stdout
    rows = {line.split()[0]: line.split()[1:] for line in grid.splitlines()[1:-1]}
    assert rows["large"] == ["###", "###", "---"] and rows["tiny"] == ["===", "===", "---"]
    anonymous = json.loads(ok(cli("--json", "rti", "--address", address, "availability", "--from", tomorrow)).stdout)
    assert anonymous["slots"] == 7 and anonymous["grid"]["large"][:2] == ["taken", "taken"]
    listed = json.loads(ok(cli(*user, "--json", "rti", "--address", address, "bookings")).stdout)
    assert [b["id"] for b in listed] == [booking_id]
    ok(cli(*user, "rti", "--address", address, "unbook", booking_id))
    assert json.loads(ok(cli(*user, "--json", "rti", "--address", address, "bookings")).stdout) == []


def test_ids_users_type_never_look_like_options(cli, shared_keystore, node_factory, publish, monkeypatch) -> None:
    """A booking or offer id is typed on the command line: one that began with '-' (a random base64url id did, one
    time in 64) was read by argparse as an option, so `rti unbook ID` failed. Every random byte string here starts
    with 0xfb, which base64url encodes as '-'."""
    import os
    import secrets

    node = node_factory("cli-ids-node", job_memory=4096, job_cores=4)
    address = "{}:{}".format(*node.address)
    publish(address, shared_keystore)
    user = shared_keystore.args()
    monkeypatch.setattr(secrets, "token_bytes", lambda n=32: b"\xfb" + os.urandom(max(n, 1) - 1))
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    booked = ok(
        cli(*user, "rti", "--address", address, "book", "--package", "tiny", "--from", tomorrow, "--hours", "1")
    )
    booking_id = booked.stdout.strip().rsplit(": ", 1)[1]
    assert booking_id[0] != "-"
    ok(cli(*user, "rti", "--address", address, "unbook", booking_id))


def test_offers_then_submit_to_the_chosen_node(
    cli, spawn_cli, shared_keystore, node_factory, publish, tmp_path
) -> None:
    """`rti offers --job FILE`: `--choose N` submits to the node of offer N; on a TTY the user picks it."""
    import pexpect

    from saas.core.keystore import Keystore
    from saas.dor.proxy import DORProxy
    from saas.rti.proxy import RTIProxy
    from tests.rti.rti_support import adapter_repo

    node = node_factory("cli-choose-node", strict_deployment=False)
    address = "{}:{}".format(*node.address)
    publish(address, shared_keystore)
    user = Keystore.load(shared_keystore.path, shared_keystore.password)
    repo, commit = adapter_repo(tmp_path / "repo", "abc")
    with DORProxy(node.address, user) as dor, RTIProxy(node.address, user) as rti:
        proc_id = dor.add_gpp_data_object(str(repo), commit, "abc", "default", user.identity).obj_id
        rti.deploy(proc_id, user)
        assert rti.wait_deployed(proc_id, timeout=30).state == "ready"
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "proc_id": proc_id,
                "input": [
                    {"name": "a", "type": "value", "value": {"v": 1}},
                    {"name": "b", "type": "value", "value": {"v": 2}},
                ],
                "output": [{"name": "c", "owner_iid": shared_keystore.iid}],
            }
        )
    )
    args = [*shared_keystore.args(), "rti", "--address", address, "offers", "--job", str(job)]
    shown = json.loads(ok(cli("--json", *args)).stdout)  # no TTY, no --choose: only the offers
    assert "submitted" not in shown and shown["offers"][0]["can"] is True
    chosen = json.loads(ok(cli("--json", *args, "--choose", "1")).stdout)
    assert chosen["submitted"]["node"] == address and chosen["submitted"]["offer_id"] == chosen["offers"][0]["offer_id"]
    with RTIProxy(node.address, user) as rti:
        assert rti.wait_for_job(chosen["submitted"]["id"], user, timeout=30).state == "successful"
    bad = cli(*args, "--choose", "2")
    assert bad.returncode != 0 and "--choose must be between 1 and 1" in bad.stderr

    child = spawn_cli(*args, timeout=30)
    child.expect_exact("Submit the job to:")
    child.expect_exact("Do not submit")
    child.send("\r")  # the first: the best offer
    child.expect(r"Job ID: ([A-Za-z0-9]+)")
    job_id = child.match.group(1)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    with RTIProxy(node.address, user) as rti:
        assert rti.wait_for_job(job_id, user, timeout=30).state == "successful"
