"""The original CLI's argument shapes (issue 16, item 2), each as a migrating user types it, next to ours.

One module node owned by the identity the commands run as (so it may deploy), with the a + b adapter and the slow
one deployed, an object `a` and one finished job, set up once with the SDK."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pexpect
import pytest

from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.rti.proxy import RTIProxy
from tests.cli.cli_support import write_password_file
from tests.conftest import PASSWORD
from tests.waiting import wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "adapters" / "examples"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
DOWN = "\x1b[B"


def git(path: Path, *args: str) -> str:
    env = {
        **os.environ,
        **{
            f"GIT_{who}_{what}": value
            for who in ("AUTHOR", "COMMITTER")
            for what, value in (("NAME", "T"), ("EMAIL", "t@e.org"))
        },
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args], cwd=path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class World:
    address: str
    owner: Keystore
    args: list[str]  # global flags that select the owner's keystore
    abc: str  # processor IDs
    slow: str
    a_id: str
    job_id: str  # a finished job of the owner
    module_iid: str = ""


@pytest.fixture(scope="module")
def world(module_node, tmp_path_factory: pytest.TempPathFactory) -> World:
    owner: Keystore = module_node.node.keystore
    repo = tmp_path_factory.mktemp("shapes") / "adapters"
    repo.mkdir()
    git(repo, "init", "--quiet")
    for name in ("abc", "slow"):
        shutil.copytree(EXAMPLES / name, repo / name)
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "adapters")
    commit = git(repo, "rev-parse", "HEAD")
    a_file = repo.parent / "a.json"
    a_file.write_text('{"v": 1}')
    with DORProxy(module_node.address, owner) as dor, RTIProxy(module_node.address, owner) as rti:
        abc = dor.add_gpp_data_object(str(repo), commit, "abc", "default", owner.identity).obj_id
        slow = dor.add_gpp_data_object(str(repo), commit, "slow", "default", owner.identity).obj_id
        a_id = dor.add_data_object(a_file, owner.identity, False, False, "ShapesInput", "json").obj_id
        for proc_id in (abc, slow):
            rti.deploy(proc_id, owner)
            assert rti.wait_deployed(proc_id, timeout=60).state == "ready"
        job = rti.submit_task(_task(abc, owner.iid, 1), owner)
        assert rti.wait_for_job(job.id, owner, timeout=60).state == "successful"
    password_file = write_password_file(repo.parent / "owner.password", PASSWORD)
    args = ["--keystore", str(owner.path.parent), "--keystore-id", owner.iid, "--password-file", str(password_file)]
    return World(module_node.address, owner, args, abc, slow, a_id, job.id, module_node.iid)


def _task(proc_id: str, iid: str, seconds: float) -> dict:
    return {
        "proc_id": proc_id,
        "user_iid": iid,
        "input": [
            {"name": "a", "type": "value", "value": {"v": seconds}},
            {"name": "b", "type": "value", "value": {"v": 1}},
        ],
        "output": [{"name": "c", "owner_iid": iid, "restricted_access": False, "content_encrypted": False}],
    }


def slow_job(world: World) -> str:
    with RTIProxy(world.address, world.owner) as rti:
        return rti.submit_task(_task(world.slow, world.owner.iid, 120), world.owner).id


def job_state(world: World, job_id: str) -> str:
    with RTIProxy(world.address, world.owner) as rti:
        return rti.get_job_status(job_id, world.owner).state


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


@pytest.fixture
def spawn(spawn_cli):
    def start(*args):
        return spawn_cli(*args, timeout=30)

    return start


def finish(child: pexpect.spawn) -> tuple[int | None, str]:
    child.expect(pexpect.EOF)
    child.close()
    log = child.logfile_read
    assert isinstance(log, io.StringIO)  # tests/cli/conftest.py
    return child.exitstatus, ANSI.sub("", log.getvalue())


# -- dor -------------------------------------------------------------------------------------------------------


def test_dor_download_ids_then_destination(cli, world: World, tmp_path: Path) -> None:
    """`dor download <obj-ids…> <destination>`: the last argument, not an object ID, is the folder."""
    out = ok(cli(*world.args, "dor", "--address", world.address, "download", world.a_id, tmp_path / "here"))
    target = tmp_path / "here" / f"{world.a_id}.json"
    assert json.loads(target.read_text()) == {"v": 1}
    assert f"downloaded to '{target}'" in out


def test_dor_download_destination_only_asks_for_the_objects(cli, world: World, tmp_path: Path) -> None:
    """A single argument that is not an object ID is the destination: the objects are asked for (here: no
    terminal, so the error names them), and no folder is made for a mistyped ID."""
    result = cli(*world.args, "dor", "--address", world.address, "download", tmp_path / "abc123")
    assert result.returncode == 2 and "OBJ_IDS" in result.stderr, result.stderr
    assert not (tmp_path / "abc123").exists()


def test_dor_meta_obj_id_option(cli, world: World) -> None:
    document = json.loads(ok(cli("dor", "--address", world.address, "meta", "--obj-id", world.a_id)))
    assert (document["obj_id"], document["data_type"]) == (world.a_id, "ShapesInput")
    twice = cli("dor", "--address", world.address, "meta", world.a_id, "--obj-id", world.a_id)
    assert twice.returncode == 2 and "once" in twice.stderr


def test_address_after_the_sub_command(cli, world: World) -> None:
    """Group options before or after the sub-command: `dor meta --address A`, `rti proc list --address A`."""
    document = json.loads(ok(cli("dor", "meta", "--address", world.address, world.a_id)))
    assert document["obj_id"] == world.a_id
    assert world.abc in ok(cli("rti", "proc", "list", "--address", world.address))
    assert world.module_iid in ok(cli("network", "show", "--address", world.address))


def test_dor_tag_and_untag_interactively(spawn, cli, world: World, tmp_path: Path) -> None:
    """Without tags, `dor tag` picks the object and asks for key=value tags (checked at once); `dor untag` offers
    the object's tags as a pick list."""
    data = tmp_path / "tagged.json"
    data.write_text('{"t": 1}')
    with DORProxy(world.address, world.owner) as dor:
        obj_id = dor.add_data_object(data, world.owner.identity, False, False, "ShapesTagged", "json").obj_id
    child = spawn(*world.args, "dor", "--address", world.address, "tag", "--obj-id", obj_id)
    child.expect_exact("Enter a tag (key=value; empty to finish):")
    child.send("=oops\r")
    child.expect_exact("Invalid tag '=oops'")  # refused at once; the prompt stays
    child.send("\x15colour=blue\r")
    child.expect_exact("Enter a tag (key=value; empty to finish):")
    child.send("size=3\r")
    child.expect_exact("Enter a tag (key=value; empty to finish):")
    child.send("\r")
    status, text = finish(child)
    assert status == 0, text
    meta = json.loads(ok(cli("dor", "--address", world.address, "meta", obj_id)))
    assert meta["tags"] == {"colour": "blue", "size": 3}

    child = spawn(*world.args, "dor", "--address", world.address, "untag", "--obj-id", obj_id)
    child.expect_exact("Select the tags to remove:")
    child.expect_exact("size=3")
    child.send(" \r")  # tick the first (colour) and confirm
    status, text = finish(child)
    assert status == 0, text
    assert json.loads(ok(cli("dor", "--address", world.address, "meta", obj_id)))["tags"] == {"size": 3}


# -- rti proc --------------------------------------------------------------------------------------------------


def test_rti_proc_show_proc_id_option(cli, world: World) -> None:
    document = json.loads(ok(cli("rti", "--address", world.address, "proc", "show", "--proc-id", world.abc)))
    assert document["proc_id"] == world.abc and document["gpp"]["proc_descriptor"]["name"] == "test-proc"


def test_rti_proc_status_without_id_lists_every_processor(cli, world: World) -> None:
    out = ok(cli("--non-interactive", "rti", "--address", world.address, "proc", "status"))
    lines = out.splitlines()
    assert lines[0].split() == ["PROCESSOR", "ID", "NAME", "STATE", "ERROR"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows[world.abc] == ["test-proc", "ready"] and rows[world.slow] == ["test-proc-slow", "ready"]


def test_rti_proc_undeploy_asks_whether_to_purge_pending_jobs(spawn, cli, world: World, tmp_path: Path) -> None:
    """A processor with unfinished jobs: the original asked whether to undeploy anyway, purging them. No keeps
    it; yes cancels the jobs and undeploys. Then it is deployed again for the other tests."""
    job_id = slow_job(world)
    child = spawn(*world.args, "rti", "--address", world.address, "proc", "undeploy", world.slow)
    child.expect_exact("unfinished job(s)")
    child.expect_exact("Undeploy anyway? Its pending and running jobs are cancelled.")
    child.send("n")
    status, text = finish(child)
    assert status == 0 and f"Processor {world.slow} kept." in text, text
    assert job_state(world, job_id) != "cancelled"

    child = spawn(*world.args, "rti", "--address", world.address, "proc", "undeploy", world.slow)
    child.expect_exact("Undeploy anyway?")
    child.send("y")
    status, text = finish(child)
    assert status == 0 and f"Undeploy processor {world.slow}...Done" in text, text
    assert job_state(world, job_id) == "cancelled"
    # Without a terminal the conflict is an error (nothing is asked, nothing undeployed).
    with RTIProxy(world.address, world.owner) as rti:
        rti.deploy(world.slow, world.owner)
        assert rti.wait_deployed(world.slow, timeout=60).state == "ready"
    job_id = slow_job(world)
    refused = cli(*world.args, "rti", "--address", world.address, "proc", "undeploy", world.slow)
    assert refused.returncode != 0 and "unfinished job" in refused.stderr
    ok(cli(*world.args, "rti", "--address", world.address, "job", "cancel", job_id))


# -- rti job ---------------------------------------------------------------------------------------------------


def test_rti_job_logs_job_id_then_destination(cli, world: World, tmp_path: Path) -> None:
    out = ok(cli(*world.args, "rti", "--address", world.address, "job", "logs", world.job_id, tmp_path))
    target = tmp_path / f"{world.job_id}-logs.tar.gz"
    assert f"Logs downloaded to {target}" in out
    with tarfile.open(target) as tar:
        assert "execute_stdout.log" in tar.getnames()


def test_rti_job_status_without_id_lists_active_jobs(cli, world: World) -> None:
    job_id = slow_job(world)
    try:
        out = ok(cli(*world.args, "rti", "--address", world.address, "job", "status"))
        assert out.splitlines()[0].startswith("Your active jobs")
        assert job_id in out and world.job_id not in out  # the finished job is left out ...
        out = ok(cli(*world.args, "rti", "--address", world.address, "job", "status", "--show-inactive"))
        rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[3:]}
        assert rows[world.job_id] == "successful"  # ... unless asked for
        assert rows[job_id] in ("pending", "initialising", "running")
    finally:
        ok(cli(*world.args, "rti", "--address", world.address, "job", "cancel", job_id))


def requests_to(world: World, method: str, route: str) -> float:
    """How many requests the node has answered on `route` (a route template), from its /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://{world.address}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "saas_http_request_duration_seconds_count"
        and (sample.labels["method"], sample.labels["route"]) == (method, route)
    )


JOB_LIST_ROUTES = [("GET", "/rti/job"), ("GET", "/rti/job/{job_id}/status"), ("GET", "/rti")]


def job_list_counted(cli, world: World, *flags: str) -> tuple[str, list[float]]:
    """`rti job list` and the requests it made to each of `JOB_LIST_ROUTES` (once the node has counted them)."""
    before = [requests_to(world, *r) for r in JOB_LIST_ROUTES]
    out = ok(cli(*world.args, *flags, "rti", "--address", world.address, "job", "list"))

    def made() -> list[float] | None:
        counts = [requests_to(world, *r) - b for r, b in zip(JOB_LIST_ROUTES, before, strict=True)]
        return counts if counts[0] >= 1 and ("--json" in flags or counts[2] >= 1) else None

    return out, wait_until(made, 10, what="the node to count the requests of job list")


def test_rti_job_list_asks_for_the_states_in_one_request(cli, world: World) -> None:
    """`job list` gets every job with its state from `GET /rti/job`: no status request per job."""
    job_id = slow_job(world)
    try:
        out, made = job_list_counted(cli, world)
        assert made == [1, 0, 1]  # the table names the processors (GET /rti)
        rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:]}
        out, made = job_list_counted(cli, world, "--json")
        assert made == [1, 0, 0]
        listed = {j["id"]: j["state"] for j in json.loads(out)}
        assert rows.keys() == listed.keys()
        for states in (rows, listed):
            assert states[world.job_id] == "successful" and states[job_id] in ("pending", "initialising", "running")
    finally:
        ok(cli(*world.args, "rti", "--address", world.address, "job", "cancel", job_id))


def test_rti_job_cancel_pick_list(spawn, world: World) -> None:
    first, second = slow_job(world), slow_job(world)
    child = spawn(*world.args, "rti", "--address", world.address, "job", "cancel")
    child.expect_exact("Select the jobs to cancel:")
    child.expect_exact(second)
    child.send(" " + DOWN + " \r")  # both
    status, text = finish(child)
    assert status == 0, text
    assert f"Job {first}: cancelled" in text and f"Job {second}: cancelled" in text
    assert world.job_id not in text  # finished jobs are not offered


# -- service ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_service_disable_concurrency_and_purge_inactive_jobs(
    saas_cli, cli_env, background, node_factory, tmp_path: Path
) -> None:
    """`service --disable-concurrency` runs one job at a time; `--purge-inactive-jobs` forgets finished jobs
    (their records and logs) when the node starts."""
    from saas.core.errors import NotFoundError

    first = node_factory("purge-node")
    owner = first.keystore
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet")
    shutil.copytree(EXAMPLES / "abc", repo / "abc")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "-m", "abc")
    with DORProxy(first.address, owner) as dor, RTIProxy(first.address, owner) as rti:
        proc_id = dor.add_gpp_data_object(
            str(repo), git(repo, "rev-parse", "HEAD"), "abc", "default", owner.identity
        ).obj_id
        rti.deploy(proc_id, owner)
        assert rti.wait_deployed(proc_id, timeout=60).state == "ready"
        job_id = rti.submit_task(_task(proc_id, owner.iid, 1), owner).id
        assert rti.wait_for_job(job_id, owner, timeout=60).state == "successful"
    datastore = first.node.config.datastore
    assert any(p.name == job_id for p in datastore.rglob("*"))  # its logs folder
    first.stop()

    from tests.conftest import free_port

    rest, p2p = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    password_file = write_password_file(tmp_path / "owner.password", PASSWORD)
    process = background(
        [
            saas_cli, "--keystore", owner.path.parent, "--keystore-id", owner.iid, "--password-file", password_file,
            "--json", "service", "--use-defaults", "--datastore", datastore, "--rest-address", rest,
            "--p2p-address", p2p, "--allow-local-git", "--disable-concurrency", "--purge-inactive-jobs",
        ],
        env=cli_env,
    )  # fmt: skip
    process.wait_for('"max_jobs"', timeout=60)
    assert '"max_jobs": 1' in process.stdout
    with RTIProxy(rest, owner) as rti:
        with pytest.raises(NotFoundError):
            rti.get_job_status(job_id, owner)
        assert rti.get_jobs_by_user(owner) == []
        assert [p.proc_id for p in rti.get_deployed()] == [proc_id]  # processors stay
    assert not any(p.name == job_id for p in datastore.rglob("*"))
    assert process.stop() == 0
