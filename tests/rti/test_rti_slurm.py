"""The SLURM execution backend against a real one-node cluster (munged + slurmctld + slurmd started by the
`slurm` fixture, tests/slurm_support.py): jobs with triggers and progress, cancel with scancel, walltime, per-job
resources, a bad partition, and submission through an SSH login node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rti_support import RTIEnv
from test_rti_ssh import job_processes, wait_running

from saas.core.errors import InvalidInputError
from saas.core.schemas import SSHCredentials
from saas.rti.schemas import Task
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def submit(env: RTIEnv, proc_id: str, a: Any, b: Any = 1, resources: dict[str, Any] | None = None) -> str:
    task = {
        "proc_id": proc_id,
        "user_iid": env.alice.identity.id,
        "input": [
            Task.InputReference(name="a", obj_id=env.add_json({"v": a})).model_dump(mode="json"),
            {"name": "b", "type": "value", "value": {"v": b}},
        ],
        "output": [{"name": "c", "owner_iid": env.alice.identity.id}],
        "resources": resources,
    }
    with env.rti(env.alice) as rti:
        return rti.submit_task(task, env.alice).id


def squeue_state(slurm: Any, slurm_job: str) -> str:
    return str(slurm.run("squeue", "-h", "-j", slurm_job, "--states=all", "-o", "%T").strip())


def slurm_job_of(status: Any) -> str:
    (message,) = [m["message"] for m in status.messages if m["message"].startswith("submitted as SLURM job")]
    return message.rsplit(" ", 1)[1]


def test_slurm_runs_jobs(env: RTIEnv, slurm: Any) -> None:
    proc_id = env.deploy("abc", deploy_args={"backend": "slurm"})
    with env.rti() as rti:
        assert rti.get_status(proc_id).backend == {"name": "slurm", "partition": None, "remote": False}
    jobs = [env.submit_abc(proc_id, a=i, b=100) for i in range(2)]
    for i, job_id in enumerate(jobs):
        status = env.wait(job_id, timeout=60)
        assert status.state == "successful", (status, slurm.logs())
        assert status.progress == 100
        assert env.output_value(status.output["c"].obj_id) == {"v": i + 100}
        assert {"severity": "info", "message": f"{i} + 100 = {i + 100}"}.items() <= status.messages[-1].items()
        slurm_job = slurm_job_of(status)
        # the node is done once the job script wrote its exit code; SLURM may take a moment longer
        (state,) = wait_until(
            lambda job=slurm_job: (s,) if (s := squeue_state(slurm, job)) not in ("RUNNING", "COMPLETING") else None,  # type: ignore[misc]  # mypy cannot type a lambda with a default argument
            15,
            interval=0.2,
            what=f"SLURM job {slurm_job} to leave RUNNING/COMPLETING",
        )
        assert state == "COMPLETED"


def test_slurm_progress_then_scancel(env: RTIEnv, slurm: Any) -> None:
    proc_id = env.deploy("slow", deploy_args={"backend": "slurm"})
    job_id = submit(env, proc_id, a=60)
    status = wait_running(env, job_id)  # progress > 0: triggers read from the job's output file as it grows
    slurm_job = slurm_job_of(status)
    assert slurm.run("squeue", "-h", "-j", slurm_job, "-o", "%T").strip() == "RUNNING"
    with env.rti(env.alice) as rti:
        assert rti.cancel_job(job_id, env.alice).state == "cancelled"
    wait_until(
        lambda: not job_processes(job_id) and not slurm.run("squeue", "-h", "-j", slurm_job, "-o", "%T").strip(),
        15,
        interval=0.2,
        what=f"the job's processes to end and SLURM job {slurm_job} to leave the queue",
    )
    assert job_processes(job_id) == []
    assert slurm.run("squeue", "-h", "-j", slurm_job, "--states=all", "-o", "%T").strip() == "CANCELLED"


def test_slurm_walltime_exceeded_fails_with_reason(env: RTIEnv, slurm: Any) -> None:
    proc_id = env.deploy("slow", deploy_args={"backend": "slurm"})
    job_id = submit(env, proc_id, a=60, resources={"walltime": 2, "cores": 1, "memory": "100M"})
    status = env.wait(job_id, timeout=60)
    assert status.state == "failed"
    assert status.errors[-1].startswith("The job exceeded its walltime of 2 s (SLURM job"), status.errors
    assert job_processes(job_id) == []


def test_slurm_resources_are_validated(env: RTIEnv, slurm: Any) -> None:
    proc_id = env.deploy("abc", deploy_args={"backend": "slurm"})
    with pytest.raises(InvalidInputError):
        submit(env, proc_id, a=1, resources={"walltime": "soon"})
    with pytest.raises(InvalidInputError):
        submit(env, proc_id, a=1, resources={"partition": "x; rm -rf /"})


def test_slurm_unknown_partition_fails_deployment(env: RTIEnv, slurm: Any) -> None:
    proc_id = env.add_gpp("abc")
    with env.rti(env.owner) as rti:
        rti.deploy(proc_id, env.owner, backend="slurm", partition="nosuchpartition")
        status = rti.wait_deployed(proc_id, timeout=60, authority=env.owner)
    assert status.state == "failed"
    assert status.error == "SLURM on this machine has no partition 'nosuchpartition'"


def test_slurm_through_ssh_login_node(env: RTIEnv, slurm: Any, ssh_key: Path, tmp_path: Path) -> None:
    from sshd_support import start_sshd

    home = tmp_path / "login-home"
    home.mkdir()
    folder = tmp_path / "login-sshd"
    folder.mkdir()
    with start_sshd(folder, ssh_key, extra=[f"SetEnv SLURM_CONF={slurm.conf}"]) as login:
        ssh = SSHCredentials(host=login.host, login=login.login, key=ssh_key.read_text(), home_path=str(home))
        proc_id = env.deploy("abc", deploy_args={"backend": "slurm", "ssh_credentials": ssh, "partition": "debug"})
        with env.rti() as rti:
            assert rti.get_status(proc_id).backend == {"name": "slurm", "partition": "debug", "remote": True}
        status = env.wait(env.submit_abc(proc_id, a=20, b=22), timeout=60)
        assert status.state == "successful", (status, slurm.logs())
        assert env.output_value(status.output["c"].obj_id) == {"v": 42}
        assert list(home.glob(".saas-rti/*/jobs/*")) == []


def test_slurm_job_reattached_after_restart(env: RTIEnv, slurm: Any) -> None:
    proc_id = env.deploy("slow", deploy_args={"backend": "slurm"})
    job_id = submit(env, proc_id, a=3, b=2)
    wait_running(env, job_id)
    env.restart()
    status = env.wait(job_id, timeout=60)
    assert status.state == "successful", status
    assert env.output_value(status.output["c"].obj_id) == {"v": 5}
    assert not any("node restarted" in (t["reason"] or "") for t in status.timeline)


def test_slurm_cancel_while_queued(env: RTIEnv, slurm: Any) -> None:
    """A job SLURM cannot place yet (more cores than the node has) waits in the queue; cancel removes it there."""
    proc_id = env.deploy("abc", deploy_args={"backend": "slurm"})
    job_id = submit(env, proc_id, a=1, resources={"cores": 4096})
    with env.rti(env.alice) as rti:

        def first_message() -> Any:  # a long poll: the node answers as soon as the job changes
            status = rti.get_job_status(job_id, env.alice, wait=1.0)
            if status.messages:
                return status
            assert status.state in ("pending", "initialising", "running"), status
            return None

        def second_message() -> Any:  # the queue's reason, as a message
            status = rti.get_job_status(job_id, env.alice, wait=1.0)
            return status if len(status.messages) >= 2 else None

        status = wait_until(first_message, 30, interval=0, what="the job's first message")
        slurm_job = slurm_job_of(status)
        assert slurm.run("squeue", "-h", "-j", slurm_job, "-o", "%T").strip() == "PENDING"
        status = wait_until(second_message, 30, interval=0, what="the queue's reason, as a message")
        assert status.messages[1]["message"].startswith(f"SLURM job {slurm_job} is queued (reason: ")
        assert rti.cancel_job(job_id, env.alice).state == "cancelled"
    assert slurm.run("squeue", "-h", "-j", slurm_job, "--states=all", "-o", "%T").strip() == "CANCELLED"
