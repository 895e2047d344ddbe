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
