"""Agents: long-lived adapters deployed from a local git repository that take many jobs. Real instances (processes),
real node: 100 jobs through 2 instances, a crash mid-job, the per-job timeout, cancel, undeploy, restart recovery
and descriptor validation."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
from rti_support import EXAMPLES, RTIEnv, adapter_repo, processes_of

from saas.core.errors import InvalidInputError
from saas.rti.schemas import Task
from tests import waiting

pytestmark = pytest.mark.slow


def group_members(pgid: int) -> list[int]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return found


def wait_until(check: Callable[[], Any], timeout: float = 20, what: str = "condition") -> Any:
    return waiting.wait_until(check, timeout, what=what)


def agent_repo(env: RTIEnv, name: str = "crash-agent", **descriptor: Any) -> tuple[Path, str]:
    """A repository with one example agent, its descriptor changed by `descriptor`."""
    document = json.loads((EXAMPLES / name / "descriptor.json").read_text())
    document.update(descriptor)
    root = env.tmp / f"repo-{os.urandom(4).hex()}"
    return adapter_repo(root, name, extra={f"{name}/descriptor.json": json.dumps(document)})


def deploy_agent(env: RTIEnv, name: str = "crash-agent", **descriptor: Any) -> str:
    repo, commit = agent_repo(env, name, **descriptor)
    return env.deploy(name, repo=repo, commit=commit)


def submit(env: RTIEnv, proc_id: str, a: float, b: float = 1) -> str:
    inputs = [Task.InputValue(name="a", value={"v": a}), Task.InputValue(name="b", value={"v": b})]
    outputs = [Task.Output(name="c", owner_iid=env.alice.identity.id)]
    with env.rti(env.alice) as rti:
        return rti.submit_job(proc_id, inputs, outputs, env.alice).id


def instances(env: RTIEnv, proc_id: str) -> list[Any]:
    with env.rti(env.owner) as rti:  # signed by the node owner: shows the jobs
        status = rti.get_status(proc_id, env.owner)
    assert status.instances is not None
    return status.instances


def all_idle(env: RTIEnv, proc_id: str, restarts: int) -> bool:
    found = instances(env, proc_id)
    return all(i.state == "idle" for i in found) and sum(i.restarts for i in found) == restarts


def agent_pgids(env: RTIEnv, proc_id: str) -> list[int]:
    pids = env.node.node.config.datastore / "rti" / "procs" / proc_id / "agent" / "pids.json"
    return [int(p) for p in json.loads(pids.read_text()).values()]


def test_100_jobs_through_two_instances(env: RTIEnv, tmp_path: Path) -> None:
    proc_id = deploy_agent(env, "abc-agent")
    started = instances(env, proc_id)
    assert [(i.index, i.state) for i in started] == [(0, "idle"), (1, "idle")]
    with ThreadPoolExecutor(8) as pool:
        jobs = list(pool.map(lambda n: (n, submit(env, proc_id, n, 1000)), range(100)))
        statuses = list(pool.map(lambda item: (item[0], env.wait(item[1], timeout=60)), jobs))
    with env.dor(env.alice) as dor:
        for n, status in statuses:
            assert status.state == "successful", status
            target = dor.get_content(status.output["c"].obj_id, env.alice, tmp_path / f"c-{n}.json")
            assert json.loads(target.read_text()) == {"v": n + 1000}
            assert status.output["c"].recipe.job_id == status.job.id
            assert status.messages[-1]["message"].startswith(f"{n} + 1000 = {n + 1000} (job ")
    served = instances(env, proc_id)
    assert sum(i.jobs_served for i in served) == 100
    assert all(i.jobs_served > 0 and i.restarts == 0 for i in served)  # both instances took jobs
    assert [t["state"] for t in statuses[0][1].timeline] == [
        "pending",
        "initialising",
        "running",
        "postprocessing",
        "successful",
    ]
    with env.rti(env.alice) as rti:  # the lines of a job are in its own logs
        assert "trigger:output:c" in list(rti.follow_job_logs(jobs[7][1], env.alice))
    anonymous = env.rti().get_status(proc_id)
    assert anonymous.instances is not None and all(i.job_id is None for i in anonymous.instances)


def test_crash_and_error_fail_the_job_and_others_keep_serving(env: RTIEnv) -> None:
    proc_id = deploy_agent(env)
    crashed = env.wait(submit(env, proc_id, 13))
    assert crashed.state == "failed"
    assert crashed.errors[0].startswith("Agent instance ")
    assert "exited with code 13: " in crashed.errors[0] and "crashing on purpose" in crashed.errors[0]
    assert env.wait(submit(env, proc_id, 1, 2)).state == "successful"  # the other instance (or the restarted one)
    wait_until(lambda: all_idle(env, proc_id, restarts=1), what="the crashed instance restarted")
    reported = env.wait(submit(env, proc_id, 15))
    assert (reported.state, reported.errors) == ("failed", ["a must not be 15"])
    results = [env.wait(submit(env, proc_id, n)) for n in range(4)]
    assert [s.state for s in results] == ["successful"] * 4
    found = instances(env, proc_id)
    assert sum(i.restarts for i in found) == 1  # trigger:error does not restart an instance
    assert sum(i.jobs_served for i in found) == 6  # 2 + the reported error + 4 (the crash did not end a job)


def test_job_timeout_kills_and_restarts_the_instance(env: RTIEnv) -> None:
    proc_id = deploy_agent(env, instances=1, job_timeout=1)
    pgid = agent_pgids(env, proc_id)[0]
    status = env.wait(submit(env, proc_id, 14))
    assert status.state == "failed"
    assert status.errors == ["The agent did not finish the job within 1 s (instance restarted)"]
    wait_until(lambda: group_members(pgid) == [], 5, "the old instance's group gone")
    assert env.wait(submit(env, proc_id, 1)).state == "successful"
    assert instances(env, proc_id)[0].restarts == 1


def test_cancel_restarts_the_instance_and_leaves_no_process(rti_env_factory: Callable[..., RTIEnv]) -> None:
    env = rti_env_factory(retain_job_history=True)
    proc_id = deploy_agent(env, instances=1)
    pgid = agent_pgids(env, proc_id)[0]
    job_id = submit(env, proc_id, 16)
    # while the instance has the job, its folder is in the instance's own `jobs` folder (all the instance sees)
    instance = env.node.node.config.datastore / "rti" / "procs" / proc_id / "agent" / "instance-0"
    child_file = instance / "jobs" / job_id / "child.pid"
    wait_until(lambda: child_file.is_file() and child_file.read_text(), what="the agent's child process")
    old = processes_of(f"agent-{proc_id}-0")  # the instance and its child (pids of the host)
    assert len(old) >= 2, old
    assert [i.job_id for i in instances(env, proc_id)] == [job_id]
    with env.rti(env.alice) as rti:
        assert rti.cancel_job(job_id, env.alice).state == "cancelled"
    wait_until(lambda: group_members(pgid) == [], 5, "the cancelled instance's group gone")
    wait_until(lambda: not set(old) & set(processes_of(f"agent-{proc_id}-0")), 5, "every old process gone")
    wait_until(lambda: all_idle(env, proc_id, restarts=1), what="the instance restarted")
    assert env.wait(submit(env, proc_id, 2)).state == "successful"


def test_undeploy_stops_every_instance(env: RTIEnv) -> None:
    proc_id = deploy_agent(env, instances=3)
    pgids = agent_pgids(env, proc_id)
    assert len(pgids) == 3 and all(group_members(g) for g in pgids)
    assert env.wait(submit(env, proc_id, 1)).state == "successful"
    with env.rti(env.owner) as rti:
        rti.undeploy(proc_id, env.owner)
    assert all(group_members(g) == [] for g in pgids)


def test_restart_recovery_no_job_lost_or_duplicated(env: RTIEnv) -> None:
    proc_id = deploy_agent(env, instances=2, job_timeout=120)
    old = agent_pgids(env, proc_id)
    hanging = [submit(env, proc_id, 14) for _ in range(2)]  # both instances busy
    wait_until(lambda: all(i.state == "busy" for i in instances(env, proc_id)), what="both instances busy")
    queued = [submit(env, proc_id, n) for n in range(3)]
    with env.rti(env.alice) as rti:  # two admitted (inputs ready, waiting for an instance), the third not yet
        expected = ["initialising", "initialising", "pending"]
        wait_until(lambda: [rti.get_job_status(j, env.alice).state for j in queued] == expected, what="jobs waiting")
    env.restart()
    assert all(group_members(g) == [] for g in old)
    statuses = {j: env.wait(j) for j in hanging + queued}
    for job_id in hanging:
        assert (statuses[job_id].state, statuses[job_id].errors) == ("failed", ["node restarted"])
    assert [statuses[j].state for j in queued] == ["successful"] * 3
    with env.dor(env.alice) as dor:
        produced = [o for o in dor.search(data_type="JSONObject", limit=1000) if o.recipe]  # type: ignore[attr-defined]
    assert sorted(o.recipe.job_id for o in produced) == sorted(queued)  # type: ignore[attr-defined]
    found = instances(env, proc_id)
    assert [i.state for i in found] == ["idle", "idle"] and sum(i.jobs_served for i in found) == 3
    assert set(agent_pgids(env, proc_id)).isdisjoint(old)


def test_start_failure_fails_the_deployment_with_the_log_tail(env: RTIEnv) -> None:
    repo, commit = adapter_repo(
        env.tmp / "broken-agent",
        "abc-agent",
        extra={"abc-agent/execute.sh": "#!/bin/bash\necho 'loading model' \necho 'model file missing' >&2\nexit 3\n"},
    )
    proc_id = env.add_gpp("abc-agent", repo=repo, commit=commit)
    with env.rti(env.owner) as rti:
        rti.deploy(proc_id, env.owner)
        status = rti.wait_deployed(proc_id, timeout=30, authority=env.owner)
    assert status.state == "failed"
    assert status.error is not None and "exited with code 3 before it was ready" in status.error
    assert status.log_tail is not None and "model file missing" in status.log_tail


def test_descriptor_validation(env: RTIEnv) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"kind": "daemon"}, "Invalid descriptor at 'kind': 'daemon' is not one of ['processor', 'agent']"),
        ({"instances": 0}, "Invalid descriptor at 'instances': 0 is less than the minimum of 1"),
        ({"instances": 65}, "Invalid descriptor at 'instances': 65 is greater than the maximum of 64"),
        ({"job_timeout": "soon"}, "Invalid descriptor at 'job_timeout': 'soon' is not of type 'number'"),
        (
            {"kind": "processor"},
            'Invalid descriptor: Value error, instances, job_timeout: only for agents ("kind": "agent")',
        ),
    ]
    for change, reason in cases:
        repo, commit = agent_repo(env, "abc-agent", **change)
        with pytest.raises(InvalidInputError) as e:
            env.add_gpp("abc-agent", repo=repo, commit=commit)
        assert (e.value.reason, e.value.status) == (reason, 400)  # type: ignore[attr-defined]
