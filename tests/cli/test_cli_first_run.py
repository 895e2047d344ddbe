"""The first run reads well (issue 16, item 6): commands that create something print its ID on one short line
first, so a first-time user (and this test) takes the IDs from there; job list has a STATE column, job status a
timeline; a failed job's error is printed once; pickers offer what fits and check what is typed at once."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pexpect
import pytest

from saas.dor.proxy import DORProxy
from saas.rti.proxy import RTIProxy
from tests.cli.cli_support import write_password_file
from tests.conftest import PASSWORD

EXAMPLES = Path(__file__).resolve().parents[2] / "adapters" / "examples"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
ID = r"[0-9a-z]{64}"


def git(path: Path, *args: str) -> str:
    """git as on a machine without a git identity: the commit sets one inline (as the README's first run does)."""
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(path)}
    env = {k: v for k, v in env.items() if not k.startswith(("GIT_AUTHOR", "GIT_COMMITTER"))}
    done = subprocess.run(["git", *args], cwd=path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def adapter_repository(tmp_path: Path, *adapters: str) -> tuple[Path, str]:
    repo = tmp_path / "my-adapter"
    repo.mkdir()
    for name in adapters:
        shutil.copytree(EXAMPLES / name, repo / name)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=me", "-c", "user.email=me@localhost", "-c", "commit.gpgsign=false", "commit", "-qm", "a")
    return repo, git(repo, "rev-parse", "HEAD")


def first_line_id(result: subprocess.CompletedProcess, label: str, pattern: str = ID) -> str:
    """The ID on the short first line `<label>: <id>`."""
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    match = re.fullmatch(rf"{label}: ({pattern})", result.stdout.splitlines()[0])
    assert match, result.stdout
    return match.group(1)


def test_first_run_reads_ids_from_the_short_lines(cli, node_factory, tmp_path: Path) -> None:
    node = node_factory("first-run-node", strict_deployment=False)
    address = "{}:{}".format(*node.address)
    keystore = tmp_path / "keystore"
    password = write_password_file(tmp_path / "password", "first run password")
    me = ["--keystore", keystore, "--password-file", password]

    created = cli(*me, "identity", "create", "--name", "First Timer", "--email", "first@example.org")
    iid = first_line_id(created, "Identity ID")
    assert first_line_id(cli(*me, "identity", "show"), "Identity ID") == iid
    assert cli(*me, "identity", "publish", "--address", address).returncode == 0
    run = ["--keystore-id", iid, *me]

    a_file = tmp_path / "a.json"
    a_file.write_text('{"v": 16}')
    added = cli(
        *run,
        "dor",
        "--address",
        address,
        "add",
        "--assume-creator",
        "--data-type",
        "JSONObject",
        "--data-format",
        "json",
        a_file,
    )
    a_id = first_line_id(added, "Object ID")
    assert added.stdout.splitlines()[1] == "Added JSONObject/json: 9 bytes, access open, tags name=a.json"
    assert len(added.stdout.splitlines()) == 2  # the full record only with -v or --json
    verbose = cli(*run, "-v", "dor", "--address", address, "add", "--assume-creator", "--data-type", "JSONObject",
                  "--data-format", "json", a_file)  # fmt: skip
    assert "Data object added: {" in verbose.stdout

    repo, commit = adapter_repository(tmp_path, "abc")
    gpp = cli(*run, "dor", "--address", address, "add-gpp", "--url", repo, "--commit-id", commit, "--path", "abc",
              "--config", "default")  # fmt: skip
    proc_id = first_line_id(gpp, "Object ID")
    assert f"deploy it with: saas-cli rti proc deploy {proc_id}" in gpp.stdout
    deployed = cli(*run, "rti", "--address", address, "proc", "deploy", proc_id)
    assert first_line_id(deployed, "Processor ID") == proc_id
    assert deployed.stdout.splitlines()[1] == f"Deployed test-proc (default:{commit[:7]}): ready"

    task = {
        "proc_id": proc_id,
        "input": [
            {"name": "a", "type": "reference", "obj_id": a_id},
            {"name": "b", "type": "value", "value": {"v": 2}},
        ],
        "output": [{"name": "c", "owner_iid": iid, "restricted_access": False, "content_encrypted": False}],
    }
    (tmp_path / "job.json").write_text(json.dumps(task))
    job_id = first_line_id(cli(*run, "rti", "--address", address, "job", "submit", "--job", tmp_path / "job.json"),
                           "Job ID", r"[A-Za-z0-9]+")  # fmt: skip

    waited = cli(*run, "rti", "--address", address, "job", "wait", job_id)
    assert waited.returncode == 0, waited.stderr
    lines = waited.stdout.splitlines()
    assert lines[0] == f"Job ID: {job_id}"
    assert "State: successful  Progress: 100%" in lines
    timeline = lines[lines.index("Timeline:") + 3 :]
    states = [re.split(r"\s{2,}", line)[1] for line in timeline if re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert states == ["pending", "initialising", "running", "postprocessing", "successful"]
    output = re.search(rf"Output c: ({ID})", waited.stdout)
    assert output is not None
    c_id = output.group(1)
    assert "Job descriptor:" not in waited.stdout  # the seed's JSON documents only with -v

    listed = cli(*run, "rti", "--address", address, "job", "list").stdout.splitlines()
    assert re.split(r"\s{2,}", listed[0]) == ["JOB ID", "STATE", "PROCESSOR", "NAME", "SUBMITTED"]
    assert re.split(r"\s{2,}", listed[2])[:3] == [job_id, "successful", "test-proc"]

    out = tmp_path / "out"
    assert cli(*run, "dor", "--address", address, "download", c_id, out).returncode == 0
    assert json.loads((out / f"{c_id}.json").read_text()) == {"v": 18}


def test_a_failed_jobs_error_is_printed_once(cli, node_factory, tmp_path: Path) -> None:
    node = node_factory("failing-node")
    owner = node.keystore
    repo, commit = adapter_repository(tmp_path, "fail")
    with DORProxy(node.address, owner) as dor, RTIProxy(node.address, owner) as rti:
        proc_id = dor.add_gpp_data_object(str(repo), commit, "fail", "default", owner.identity).obj_id
        rti.deploy(proc_id, owner)
        assert rti.wait_deployed(proc_id, timeout=60).state == "ready"
        values = [{"name": n, "type": "value", "value": {"v": 1}} for n in ("a", "b")]
        output = [{"name": "c", "owner_iid": owner.iid, "restricted_access": False, "content_encrypted": False}]
        job = rti.submit_task({"proc_id": proc_id, "user_iid": owner.iid, "input": values, "output": output}, owner)
        error = rti.wait_for_job(job.id, owner, timeout=60).errors[-1]
    password = write_password_file(tmp_path / "owner.password", PASSWORD)
    as_owner = ["--keystore", owner.path.parent, "--keystore-id", owner.iid, "--password-file", password]
    address = "{}:{}".format(*node.address)
    for command in ("wait", "status"):
        result = cli(*as_owner, "rti", "--address", address, "job", command, job.id)
        everything = result.stdout + result.stderr
        assert everything.count(error) == 1, (command, everything)
        assert "State: failed" in result.stdout
    assert cli(*as_owner, "rti", "--address", address, "job", "wait", job.id).returncode == 1


def test_deploy_picker_marks_deployed_and_refuses_non_owners(
    cli, spawn_cli, shared_keystore, publish, node_factory, tmp_path: Path
) -> None:
    node = node_factory("picker-node")  # strict deployment: only its owner deploys
    owner = node.keystore
    address = "{}:{}".format(*node.address)
    repo, commit = adapter_repository(tmp_path, "abc", "slow")
    with DORProxy(node.address, owner) as dor, RTIProxy(node.address, owner) as rti:
        abc = dor.add_gpp_data_object(str(repo), commit, "abc", "default", owner.identity).obj_id
        slow = dor.add_gpp_data_object(str(repo), commit, "slow", "default", owner.identity).obj_id
        rti.deploy(abc, owner)
        assert rti.wait_deployed(abc, timeout=60).state == "ready"

    publish(address, shared_keystore)
    refused = cli(*shared_keystore.args(), "rti", "--address", address, "proc", "deploy")
    assert refused.returncode == 5, refused.stderr
    assert f"Only the owner of the node at {address} (picker-node) may deploy processors on it" in refused.stderr

    password = write_password_file(tmp_path / "owner.password", PASSWORD)
    as_owner = ["--keystore", owner.path.parent, "--keystore-id", owner.iid, "--password-file", password]
    child = spawn_cli(*as_owner, "rti", "--address", address, "proc", "deploy", timeout=60)
    child.expect_exact("Select the processor you would like to deploy:")
    child.expect_exact(f"{abc} [test-proc] default:{commit[:7]} (deployed: ready)")
    child.send("\x03")
    child.expect(pexpect.EOF)
    text = ANSI.sub("", child.logfile_read.getvalue())
    assert f"{slow} [test-proc-slow] default:{commit[:7]}" in text  # offered, not marked
    assert f"{slow} [test-proc-slow] default:{commit[:7]} (deployed" not in text


def test_by_reference_input_pick_list_and_typed_id_checked_at_once(
    spawn_cli, shared_keystore, publish, node_factory, tmp_path: Path
) -> None:
    node = node_factory("reference-node", strict_deployment=False)
    address = "{}:{}".format(*node.address)
    publish(address, shared_keystore)
    owner = node.keystore
    repo, commit = adapter_repository(tmp_path, "abc")
    (tmp_path / "a.json").write_text('{"v": 5}')
    (tmp_path / "other.csv").write_text("x\n")
    with DORProxy(node.address, owner) as dor, RTIProxy(node.address, owner) as rti:
        proc_id = dor.add_gpp_data_object(str(repo), commit, "abc", "default", owner.identity).obj_id
        a_id = dor.add_data_object(tmp_path / "a.json", owner.identity, False, False, "JSONObject", "json").obj_id
        csv_id = dor.add_data_object(tmp_path / "other.csv", owner.identity, False, False, "Table", "csv").obj_id
        rti.deploy(proc_id, owner)
        assert rti.wait_deployed(proc_id, timeout=60).state == "ready"

    child = spawn_cli(
        *shared_keystore.args(), "rti", "--address", address, "job", "submit", "--proc-id", proc_id, timeout=60
    )
    child.expect_exact("How to provide input 'a'")
    child.send("\x1b[B\r")  # by-reference
    child.expect_exact("Select the data object for input 'a' (JSONObject/json):")
    child.expect_exact(a_id)  # the matching object is offered; the csv one is not
    child.expect_exact("Enter an object ID ...")
    child.send("\x1b[B\r")  # type one instead
    child.expect_exact("Enter an object ID for 'a':")
    child.send("not-an-id\r")
    child.expect_exact("An object ID is 64 hexadecimal characters")
    child.send("\x15" + csv_id + "\r")
    child.expect_exact("That object is Table/csv")  # (the terminal may draw the rest with cursor moves)
    child.send("\x15" + "0" * 64 + "\r")
    child.expect_exact("read it)")  # "No data object … in the network (or you may not read it)", redrawn in part
    child.send("\x15" + a_id + "\r")
    child.expect_exact("How to provide input 'b'")  # accepted
    child.send("\x03")
    child.expect(pexpect.EOF)
    text = ANSI.sub("", child.logfile_read.getvalue())
    assert csv_id not in text.split("Enter an object ID for 'a':")[0]


@pytest.mark.parametrize("flag", [[], ["--json"]])
def test_network_error_in_words(cli, closed_port: int, flag: list[str]) -> None:
    result = cli(*flag, "rti", "--address", f"127.0.0.1:{closed_port}", "proc", "list")
    assert result.returncode == 6
    assert f"Error: Could not connect to 127.0.0.1:{closed_port}: connection refused" in result.stderr
    assert "ConnectError" not in result.stderr + result.stdout
