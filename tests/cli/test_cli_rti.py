"""The seed's flow with `saas-cli` as a user types it: dor add, dor add-gpp from a local git repository, rti proc
deploy, rti job submit --job task.json (a by reference, b by value), job status / wait / logs / list, dor download
of c, and the provenance of c. Plus proc list/show/status, job cancel, and usage errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.cli.cli_support import write_password_file
from tests.conftest import PASSWORD

EXAMPLES = Path(__file__).resolve().parents[2] / "adapters" / "examples"


def git(path: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "T",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "T",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args], cwd=path, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def repository(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "saas-processor-template"
    repo.mkdir()
    git(repo, "init", "--quiet")
    shutil.copytree(EXAMPLES / "abc", repo / "processor_test")
    shutil.copytree(EXAMPLES / "slow", repo / "processor_slow")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "adapters")
    return repo, git(repo, "rev-parse", "--short", "HEAD")


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def test_seed_flow(cli, shared_keystore, node_factory, publish, repository, tmp_path: Path) -> None:
    node = node_factory("cli-rti-node", strict_deployment=False)
    address = "{}:{}".format(*node.address)
    publish(address, shared_keystore)
    user = shared_keystore.args()
    repo, commit = repository

    def run(*args: str) -> subprocess.CompletedProcess:
        return cli(*user, *args)

    def json_of(*args: str) -> Any:
        return json.loads(ok(cli(*user, "--json", *args)).stdout)

    a_file = tmp_path / "a.json"
    a_file.write_text(json.dumps({"v": 1}))
    a = json_of(
        "dor",
        "--address",
        address,
        "add",
        "--data-type",
        "JSONObject",
        "--data-format",
        "json",
        "--assume-creator",
        str(a_file),
    )
    gpp = json_of(
        "dor",
        "--address",
        address,
        "add-gpp",
        "--url",
        str(repo),
        "--commit-id",
        commit,
        "--path",
        "processor_test",
        "--config",
        "default",
    )
    proc_id = gpp["obj_id"]

    deployed = ok(run("rti", "--address", address, "proc", "deploy", proc_id))
    assert deployed.stdout.startswith(f"Processor ID: {proc_id}\n")
    listed = ok(run("rti", "--address", address, "proc", "list"))
    assert proc_id in listed.stdout and "test-proc" in listed.stdout and "ready" in listed.stdout
    shown = json.loads(ok(run("rti", "--address", address, "proc", "show", proc_id)).stdout)
    assert shown["gpp"]["proc_descriptor"]["name"] == "test-proc"

    task = {
        "proc_id": proc_id,
        "user_iid": shared_keystore.iid,
        "input": [
            {"name": "a", "type": "reference", "obj_id": a["obj_id"]},
            {"name": "b", "type": "value", "value": {"v": 2}},
        ],
        "output": [
            {"name": "c", "owner_iid": shared_keystore.iid, "restricted_access": False, "content_encrypted": False}
        ],
    }
    job_file = tmp_path / "job_descriptor.json"
    job_file.write_text(json.dumps(task))
    submitted = ok(run("rti", "--address", address, "job", "submit", "--job", str(job_file)))
    first = submitted.stdout.splitlines()[0]
    assert first.startswith("Job ID: ")  # the ID first, on a short line
    job_id = first.removeprefix("Job ID: ")

    waited = ok(run("rti", "--address", address, "job", "wait", job_id))
    assert "State: successful  Progress: 100%" in waited.stdout
    status = json_of("rti", "--address", address, "job", "status", job_id)
    assert status["state"] == "successful"
    c_id = status["output"]["c"]["obj_id"]
    assert f"Output c: {c_id}" in ok(run("rti", "--address", address, "job", "status", job_id)).stdout
    assert job_id in ok(run("rti", "--address", address, "job", "list")).stdout

    ok(run("dor", "--address", address, "download", c_id, "--destination", str(tmp_path / "out")))
    [downloaded] = [p for p in (tmp_path / "out").iterdir()]
    assert json.loads(downloaded.read_text()) == {"v": 3}

    logs = ok(run("rti", "--address", address, "job", "logs", job_id, "--destination", str(tmp_path)))
    assert "Logs downloaded to" in logs.stdout
    with tarfile.open(tmp_path / f"{job_id}-logs.tar.gz") as tar:
        assert "execute_stdout.log" in tar.getnames()
    followed = ok(run("rti", "--address", address, "job", "logs", job_id, "--follow"))
    assert "trigger:output:c" in followed.stdout

    from saas.dor.proxy import DORProxy

    with DORProxy(node.address) as dor:
        provenance = dor.get_provenance(c_id)
    [step] = provenance.steps
    assert set(step["consumes"]) == {"a", "b"} and step["job_id"] == job_id
    assert [p["name"] for p in provenance.proc_nodes.values()] == ["test-proc"]

    # a long job: cancel it; a missing job descriptor is a usage error; undeploy
    slow = json_of(
        "dor",
        "--address",
        address,
        "add-gpp",
        "--url",
        str(repo),
        "--commit-id",
        commit,
        "--path",
        "processor_slow",
        "--config",
        "default",
    )
    ok(run("rti", "--address", address, "proc", "deploy", slow["obj_id"]))
    task["proc_id"] = slow["obj_id"]
    task["input"][1]["value"] = {"v": 30}
    task["input"][0] = {"name": "a", "type": "value", "value": {"v": 30}}
    job_file.write_text(json.dumps(task))
    slow_job = json_of("rti", "--address", address, "job", "submit", "--job", str(job_file))["id"]
    cancelled = ok(run("rti", "--address", address, "job", "cancel", slow_job))
    assert f"Job {slow_job}: cancelled" in cancelled.stdout
    failed_wait = run("rti", "--address", address, "job", "wait", slow_job)
    assert failed_wait.returncode == 1 and "cancelled" in failed_wait.stderr
    assert "State: cancelled" in failed_wait.stdout and "cancelled by the user" in failed_wait.stdout  # timeline

    missing = cli(*user, "--non-interactive", "rti", "--address", address, "job", "submit")
    assert missing.returncode == 2 and "--job" in missing.stderr
    ok(run("rti", "--address", address, "proc", "undeploy", proc_id, slow["obj_id"]))
    assert "No processors deployed." in ok(run("rti", "--address", address, "proc", "list")).stdout


def test_failed_deploy_shows_log_tail(cli, shared_keystore, node_factory, publish, tmp_path: Path) -> None:
    node = node_factory("cli-rti-node", strict_deployment=False)
    address = "{}:{}".format(*node.address)
    publish(address, shared_keystore)
    repo = tmp_path / "broken"
    repo.mkdir()
    git(repo, "init", "--quiet")
    shutil.copytree(EXAMPLES / "abc", repo / "proc")
    (repo / "proc" / "install.sh").write_text("#!/bin/bash\necho 'missing dependency xyz' >&2\nexit 1\n")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "broken")
    gpp = json.loads(
        ok(
            cli(
                *shared_keystore.args(),
                "--json",
                "dor",
                "--address",
                address,
                "add-gpp",
                "--url",
                str(repo),
                "--commit-id",
                git(repo, "rev-parse", "HEAD"),
                "--path",
                "proc",
                "--config",
                "default",
            )
        ).stdout
    )
    result = cli(*shared_keystore.args(), "rti", "--address", address, "proc", "deploy", gpp["obj_id"])
    assert result.returncode == 1  # the deployer is not the node owner: the state and a generic error
    assert "node owner" in result.stderr and "missing dependency xyz" not in result.stdout + result.stderr
    status = ok(cli("rti", "--address", address, "proc", "status", gpp["obj_id"]))
    assert "failed" in status.stdout and "missing dependency xyz" not in status.stdout

    # The node owner (signed) sees the reason and the log tail.
    owner = node.keystore
    password_file = write_password_file(tmp_path / "owner.password", PASSWORD)
    as_owner = ["--keystore", owner.path.parent, "--keystore-id", owner.iid, "--password-file", password_file]
    status = ok(cli(*as_owner, "rti", "--address", address, "proc", "status", gpp["obj_id"]))
    assert "install.sh exited with code 1" in status.stdout and "missing dependency xyz" in status.stdout


def test_interactive_submit(spawn_cli, shared_keystore, node_factory, publish, repository, tmp_path: Path) -> None:
    """Per input "by-value / by-reference"; a JSON value that does not match the schema is refused with the reason."""
    import re

    import pexpect

    from saas.core.keystore import Keystore
    from saas.dor.proxy import DORProxy
    from saas.rti.proxy import RTIProxy

    node = node_factory("cli-rti-node", strict_deployment=False)
    address = "{}:{}".format(*node.address)
    publish(address, shared_keystore)
    user = Keystore.load(shared_keystore.path, shared_keystore.password)
    repo, commit = repository
    a_file = tmp_path / "a.json"
    a_file.write_text('{"v": 40}')
    with DORProxy(node.address, user) as dor, RTIProxy(node.address, user) as rti:
        proc_id = dor.add_gpp_data_object(str(repo), commit, "processor_test", "default", user.identity).obj_id
        a_id = dor.add_data_object(a_file, user.identity, False, False, "JSONObject", "json").obj_id
        rti.deploy(proc_id, user)
        assert rti.wait_deployed(proc_id, timeout=30).state == "ready"

    child = spawn_cli(*shared_keystore.args(), "rti", "--address", address, "job", "submit", "--proc-id", proc_id)
    child.expect_exact("How to provide input 'a'")
    child.send("\x1b[B\r")  # by-reference
    child.expect_exact("Select the data object for input 'a' (JSONObject/json):")
    child.expect_exact(a_id)  # the object of the input's type and format is offered ...
    child.send("\r")  # ... and picked
    child.expect_exact("How to provide input 'b'")
    child.send("\r")  # by-value
    child.expect_exact("Value for 'b' (JSON):")
    bad = '{"v": "two"}'
    child.send(bad + "\r")
    child.expect_exact("Does not match the schema: 'two' is not of type 'number'")
    child.send("\x7f" * len(bad) + '{"v": 2}\r')
    child.expect_exact("Restrict access to output 'c'?")
    child.send("n")
    child.expect_exact("Encrypt output 'c'?")
    child.send("n")
    child.expect(r"Job ID: ([A-Za-z0-9]+)")
    job_id = child.match.group(1)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", child.logfile_read.getvalue())
    with RTIProxy(node.address, user) as rti:
        status = rti.wait_for_job(job_id, user, timeout=30)
        assert status.state == "successful"
        assert status.job.task.input[0].type == "reference"
    with DORProxy(node.address, user) as dor:
        c = dor.get_content(status.output["c"].obj_id, user, tmp_path / "c.json")
    assert json.loads(c.read_text()) == {"v": 42}


def test_proc_status_shows_agent_instances(cli, node_factory, tmp_path: Path) -> None:
    from saas.dor.proxy import DORProxy
    from saas.rti.proxy import RTIProxy

    node = node_factory("cli-agent-node")
    repo = tmp_path / "agents"
    repo.mkdir()
    git(repo, "init", "--quiet")
    shutil.copytree(EXAMPLES / "abc-agent", repo / "abc-agent")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "agent")
    owner = node.keystore
    with DORProxy(node.address, owner) as dor:
        proc_id = dor.add_gpp_data_object(
            str(repo), git(repo, "rev-parse", "HEAD"), "abc-agent", "default", owner.identity
        ).obj_id
    with RTIProxy(node.address, owner) as rti:
        rti.deploy(proc_id, owner)
        assert rti.wait_deployed(proc_id, timeout=30).state == "ready"
    address = "{}:{}".format(*node.address)
    out = ok(cli("rti", "--address", address, "proc", "status", proc_id)).stdout
    assert f"Processor {proc_id}: ready" in out and "Agent instances: 2" in out
    assert "JOBS SERVED" in out and out.count("idle") == 2
    document = json.loads(ok(cli("--json", "rti", "--address", address, "proc", "status", proc_id)).stdout)
    assert [(i["index"], i["state"], i["jobs_served"]) for i in document["instances"]] == [
        (0, "idle", 0),
        (1, "idle", 0),
    ]


# -- execution backends: --ssh-profile and the seed's "Use an SSH profile for deployment?" -------------------------


@pytest.fixture
def ssh_deploy(cli, keystore, node_factory, publish, repository, sshd, tmp_path: Path):
    """A node, the caller's keystore (a copy) with SSH profile 'lab' for the test sshd (its remote home in
    tmp_path), and a GPP of the a + b adapter; returns (address, keystore, proc_id, remote home)."""
    from saas.core.keystore import Keystore
    from saas.core.schemas import SSHCredentials

    node = node_factory("cli-rti-node", strict_deployment=False)
    address = "{}:{}".format(*node.address)
    publish(address, keystore)
    remote_home = tmp_path / "remote-home"
    remote_home.mkdir()
    store = Keystore.load(keystore.path, keystore.password)
    store.ssh_credentials.update(
        "lab",
        SSHCredentials(host=sshd.host, login=sshd.login, key=sshd.key.read_text(), home_path=str(remote_home)),
    )
    repo, commit = repository
    gpp = json.loads(
        ok(
            cli(
                *keystore.args(),
                "--json",
                *("dor", "--address", address, "add-gpp", "--url", str(repo), "--commit-id", commit),
                *("--path", "processor_test", "--config", "default"),
            )
        ).stdout
    )
    return address, keystore, gpp["obj_id"], remote_home


@pytest.mark.slow
def test_deploy_with_ssh_profile(cli, ssh_deploy) -> None:
    address, keystore, proc_id, remote_home = ssh_deploy
    missing = cli(*keystore.args(), "rti", "--address", address, "proc", "deploy", proc_id, "--ssh-profile", "nope")
    assert missing.returncode != 0 and "No SSH profile 'nope'" in missing.stderr
    deployed = ok(cli(*keystore.args(), "rti", "--address", address, "proc", "deploy", proc_id, "--ssh-profile", "lab"))
    assert deployed.stdout.startswith(f"Processor ID: {proc_id}\n")
    shown = json.loads(ok(cli("rti", "--address", address, "proc", "show", proc_id)).stdout)
    assert shown["backend"] == {"name": "ssh"}
    assert list(remote_home.glob(f".saas-rti/*/procs/{proc_id}/repo/processor_test/install.sh"))


@pytest.mark.slow
def test_deploy_asks_for_ssh_profile(spawn_cli, ssh_deploy) -> None:
    import pexpect

    address, keystore, proc_id, _ = ssh_deploy
    child = spawn_cli(*keystore.args(), "rti", "--address", address, "proc", "deploy", proc_id, timeout=60)
    child.expect_exact("Use an SSH profile for deployment?")
    child.sendline("y")
    child.expect_exact("Select the SSH profile:")
    child.sendline("")  # the first (only) profile: lab
    child.expect_exact(f"Processor ID: {proc_id}")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.logfile_read.getvalue()


@pytest.mark.slow
def test_deploy_on_slurm(cli, ssh_deploy, slurm) -> None:
    address, keystore, proc_id, _ = ssh_deploy
    bad = cli(*keystore.args(), "rti", "--address", address, "proc", "deploy", proc_id, "--partition", "debug")
    assert bad.returncode != 0 and "--partition is only for --backend slurm" in bad.stderr
    deployed = ok(
        cli(
            *keystore.args(),
            *("rti", "--address", address, "proc", "deploy", proc_id, "--backend", "slurm", "--partition", "debug"),
        )
    )
    assert deployed.stdout.startswith(f"Processor ID: {proc_id}\n")
    shown = json.loads(ok(cli("rti", "--address", address, "proc", "show", proc_id)).stdout)
    assert shown["backend"] == {"name": "slurm", "partition": "debug", "remote": False}
