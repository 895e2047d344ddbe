"""The SSH execution backend against a real sshd on 127.0.0.1 (tests/sshd_support.py): deploy the a + b adapter
through it, run jobs, cancel one (no remote process left), re-attach after a restart, bad credentials."""

from __future__ import annotations

import base64
import os
import sqlite3
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import psutil
import pytest
from rti_support import RTIEnv

from saas.core.errors import InvalidInputError
from saas.core.schemas import SSHCredentials
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def job_processes(job_id: str) -> list[int]:
    """Live processes started for a job (their environment carries SAAS_JOB_ID=<job_id>), wherever they run."""
    marker = f"SAAS_JOB_ID={job_id}".encode()
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and marker in Path(f"/proc/{p.pid}/environ").read_bytes().split(
                b"\0"
            ):
                found.append(p.pid)
        except (OSError, psutil.NoSuchProcess):
            pass
    return found


@pytest.fixture
def remote_home(tmp_path: Path) -> Path:
    """The 'remote' home folder the backend works in (home_path), so nothing lands in the real home."""
    path = tmp_path / "remote-home"
    path.mkdir()
    return path


def credentials(sshd: Any, remote_home: Path, key: Path | None = None) -> SSHCredentials:
    key = key or sshd.key
    return SSHCredentials(
        host=sshd.host, login=sshd.login, key=key.read_text(), key_path=str(key), home_path=str(remote_home)
    )


def wait_running(env: RTIEnv, job_id: str, timeout: float = 30) -> Any:
    with env.rti(env.alice) as rti:

        def running() -> Any:  # a long poll: the node answers as soon as the state changes
            status = rti.get_job_status(job_id, env.alice, wait=1.0)
            if status.state == "running" and status.progress > 0:
                return status
            assert status.state in ("pending", "initialising", "running"), status
            return None

        return wait_until(running, timeout, interval=0, what=f"job {job_id} running, with progress")


def remote_jobs(remote_home: Path) -> list[Path]:
    return list(remote_home.glob(".saas-rti/*/jobs/*"))


def test_ssh_deploy_and_run_abc(env: RTIEnv, sshd: Any, remote_home: Path) -> None:
    ssh = credentials(sshd, remote_home)
    proc_id = env.deploy("abc", deploy_args={"ssh_credentials": ssh})
    with env.rti() as rti:
        processor = rti.get_status(proc_id)
    assert processor.backend == {"name": "ssh"}
    # installed on the 'remote' side: the adapter at the commit, without .git
    (adapter,) = remote_home.glob(f".saas-rti/*/procs/{proc_id}/repo/abc")
    assert (adapter / "execute.sh").is_file() and not (adapter.parent / ".git").exists()

    jobs = [env.submit_abc(proc_id, a=i, b=10) for i in range(3)]
    for i, job_id in enumerate(jobs):
        status = env.wait(job_id, timeout=60)
        assert status.state == "successful", status
        assert status.progress == 100
        assert env.output_value(status.output["c"].obj_id) == {"v": i + 10}
    assert remote_jobs(remote_home) == []  # each job's remote folder is removed

    target = env.tmp / "logs.tar.gz"
    with env.rti(env.alice) as rti:
        rti.get_job_logs(jobs[0], env.alice, target)
    with tarfile.open(target) as tar:
        stdout = tar.extractfile("execute_stdout.log").read().decode()  # type: ignore[union-attr]
    assert "Run processor.py with default configuration" in stdout
    assert "trigger:output:c" in stdout

    # the node keeps the credentials only encrypted: not in its board, not in any response
    key_line = ssh.private_key().splitlines()[1]
    board = (env.node.node.config.datastore / "rti" / "jobs.sqlite").read_bytes()
    assert key_line.encode() not in board
    with env.rti() as rti:
        assert key_line not in rti.get_json("/rti").__repr__()

    with env.rti(env.owner) as rti:
        rti.undeploy(proc_id, env.owner)
    assert list(remote_home.glob(f".saas-rti/*/procs/{proc_id}")) == []
    with sqlite3.connect(env.node.node.config.datastore / "rti" / "jobs.sqlite") as db:
        assert db.execute("SELECT count(*) FROM processors").fetchone()[0] == 0


def test_ssh_cancel_leaves_no_remote_process(env: RTIEnv, sshd: Any, remote_home: Path) -> None:
    proc_id = env.deploy("slow", deploy_args={"ssh_credentials": credentials(sshd, remote_home)})
    job_id = env.submit_abc(proc_id, a=60, b=1)
    wait_running(env, job_id)
    (child_pid_file,) = remote_home.glob(f".saas-rti/*/jobs/{job_id}/wd/child.pid")
    child = int(child_pid_file.read_text())
    assert job_processes(job_id) and psutil.pid_exists(child)
    # the node is logged in (a shared ControlMaster connection), but the private key is not on disk any more
    masters = list(Path(tempfile.gettempdir()).glob("saas-ssh-*"))
    assert masters and not [m for m in masters if (m / "key").exists()]
    with env.rti(env.alice) as rti:
        status = rti.cancel_job(job_id, env.alice)
    assert status.state == "cancelled"
    wait_until(lambda: not job_processes(job_id), 10, interval=0.1, what="the job's processes to end")
    assert job_processes(job_id) == []
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    assert remote_jobs(remote_home) == []


def test_ssh_job_reattached_after_restart(env: RTIEnv, sshd: Any, remote_home: Path) -> None:
    proc_id = env.deploy("slow", deploy_args={"ssh_credentials": credentials(sshd, remote_home)})
    job_id = env.submit_abc(proc_id, a=4, b=1)
    wait_running(env, job_id)
    env.restart()
    assert job_processes(job_id), "the remote job must survive the node's restart"
    status = env.wait(job_id, timeout=60)
    assert status.state == "successful", status
    assert env.output_value(status.output["c"].obj_id) == {"v": 5}
    assert not any("node restarted" in (t["reason"] or "") for t in status.timeline)
    assert status.progress == 100


def test_ssh_bad_key_fails_deployment_clearly(env: RTIEnv, sshd: Any, remote_home: Path, other_ssh_key: Path) -> None:
    proc_id = env.add_gpp("abc")
    with env.rti(env.owner) as rti:
        rti.deploy(proc_id, env.owner, ssh_credentials=credentials(sshd, remote_home, key=other_ssh_key))
        status = rti.wait_deployed(proc_id, timeout=60, authority=env.owner)
    assert status.state == "failed"
    assert status.error is not None and "Permission denied" in status.error, status.error
    assert f"{sshd.login}@{sshd.host}" in status.error
    assert other_ssh_key.read_text().splitlines()[1] not in (status.error + (status.log_tail or ""))


def test_ssh_credentials_not_for_this_node_are_refused(env: RTIEnv) -> None:
    proc_id = env.add_gpp("abc")
    garbage = base64.b64encode(os.urandom(600)).decode()
    with env.rti(env.owner) as rti, pytest.raises(InvalidInputError, match="encrypted for this node"):
        rti.request("POST", f"/rti/proc/{proc_id}", json_body={"ssh_credentials": garbage}, signer=env.owner)
    with env.rti(env.owner) as rti, pytest.raises(InvalidInputError, match="needs SSH credentials"):
        rti.request("POST", f"/rti/proc/{proc_id}", json_body={"backend": "ssh"}, signer=env.owner)


def test_ssh_jobs_have_their_own_limit(rti_env_factory: Any, sshd: Any, remote_home: Path) -> None:
    """Jobs on another machine do not take the node's local slots (`max_jobs`), only `max_remote_jobs`."""
    env: RTIEnv = rti_env_factory(max_jobs=1, max_remote_jobs=2)
    proc_id = env.deploy("slow", deploy_args={"ssh_credentials": credentials(sshd, remote_home)})
    jobs = [env.submit_abc(proc_id, a=1.5) for _ in range(3)]
    statuses = [env.wait(j, timeout=60) for j in jobs]
    assert [s.state for s in statuses] == ["successful"] * 3, [s.errors for s in statuses]
    spans = []
    for s in statuses:
        times = {t["state"]: t["time"] for t in s.timeline}
        spans.append((times["initialising"], times["postprocessing"]))
    assert spans[1][0] < spans[0][1]  # the first two ran at once, beyond max_jobs = 1
    assert spans[2][0] >= min(spans[0][1], spans[1][1])  # the third waited for one of the two remote slots
