"""Isolation (issue 13): a hostile processor, agent and install.sh try every attack on the node (adapters/examples/
hostile); each attempt must fail, jobs that break their limits fail with the reason, and no process survives.

The node here runs in the test process (as root on CI: the sandbox switches to `nobody`); tests/e2e/
test_isolation_unprivileged.py runs the same attacks against a node run by an ordinary user."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rti_support import RTIEnv, adapter_repo, assert_all_blocked, processes_with

from saas.rti.proxy import _task
from saas.rti.schemas import Resources, Task
from tests.waiting import wait_until

PASSWORD = "test password"  # tests/conftest.py


@pytest.fixture
def hostile(rti_env_factory: Callable[..., RTIEnv], tmp_path: Path) -> tuple[RTIEnv, Path, str]:
    env = rti_env_factory(job_pids=64)
    repo, commit = adapter_repo(tmp_path / "repos" / "hostile", "hostile", "hostile-agent")
    return env, repo, commit


def targets(env: RTIEnv, **extra: Any) -> dict[str, Any]:
    config = env.node.node.config
    return {
        "node_pid": os.getpid(),
        "datastore": str(config.datastore),
        "keystore": str(config.keystore),
        "password": PASSWORD,
        **extra,
    }


def submit(env: RTIEnv, proc_id: str, value: dict[str, Any], resources: Resources | None = None) -> str:
    out = Task.Output(name="report", owner_iid=env.alice.identity.id, restricted_access=False, content_encrypted=False)
    task = _task(proc_id, [Task.InputValue(name="targets", value=value)], [out], env.alice, None, None)
    with env.rti(env.alice) as rti:
        if resources is not None:
            task["resources"] = resources.model_dump(exclude_none=True)
        return rti.submit_task(task, env.alice).id


def wait_state(env: RTIEnv, job_id: str, state: str, timeout: float = 30) -> None:
    with env.rti(env.alice) as rti:
        wait_until(
            lambda: rti.get_job_status(job_id, env.alice).state == state, timeout, what=f"job {job_id} to be {state}"
        )


def test_hostile_processor_reaches_nothing(hostile: tuple[RTIEnv, Path, str]) -> None:
    env, repo, commit = hostile
    # install.sh attacks too: the deployment fails if any attack worked (and its setsid child must die)
    proc_id = env.deploy("hostile", repo=repo, commit=commit)
    assert not processes_with("saas-hostile-install")
    datastore = env.node.node.config.datastore
    other = submit(env, proc_id, {"mode": "sleep"})
    wait_state(env, other, "running")
    marker = f"saas-hostile-{uuid.uuid4().hex}"
    job = submit(env, proc_id, targets(env, other_wds=[str(datastore / "rti" / "jobs" / other)], marker=marker))
    status = env.wait(job)
    assert status.state == "successful", status
    assert_all_blocked(env.output_value(status.output["report"].obj_id))
    assert not processes_with(marker), "the job's setsid daemon survived it"
    assert not (datastore / "rti" / "jobs" / other / "planted").exists()
    with env.rti(env.alice) as rti:
        assert rti.cancel_job(other, env.alice).state == "cancelled"
    assert not list((datastore / "dor" / "content").glob("planted"))


def test_limits_end_jobs_with_the_reason(hostile: tuple[RTIEnv, Path, str]) -> None:
    env, repo, commit = hostile
    proc_id = env.deploy("hostile", repo=repo, commit=commit)
    bomb = submit(env, proc_id, {"mode": "forkbomb"}, Resources(walltime=3))
    memory = submit(env, proc_id, {"mode": "memory"}, Resources(memory="128M", walltime=20))
    slow = submit(env, proc_id, {"mode": "sleep"}, Resources(walltime=1))
    reasons = {
        name: " ".join(env.wait(job).errors) for name, job in (("bomb", bomb), ("memory", memory), ("slow", slow))
    }
    assert "limit of 64 processes" in reasons["bomb"], reasons
    assert "memory limit of 128 MiB" in reasons["memory"], reasons
    assert "walltime of 1 s" in reasons["slow"], reasons
    # the node and its other jobs are unaffected
    job = submit(env, proc_id, targets(env))
    status = env.wait(job)
    assert status.state == "successful", status
    assert_all_blocked(env.output_value(status.output["report"].obj_id))


def test_hostile_agent_sees_only_its_own_jobs(hostile: tuple[RTIEnv, Path, str]) -> None:
    env, repo, commit = hostile
    proc_id = env.deploy("hostile-agent", repo=repo, commit=commit)
    agent = env.node.node.config.datastore / "rti" / "procs" / proc_id / "agent"
    other = submit(env, proc_id, {"mode": "sleep"})
    wait_state(env, other, "running")
    wds = [str(agent / f"instance-{i}" / "jobs" / other) for i in (0, 1)]
    marker = f"saas-hostile-{uuid.uuid4().hex}"
    job = submit(env, proc_id, targets(env, other_wds=wds, marker=marker))
    status = env.wait(job)
    assert status.state == "successful", status
    assert_all_blocked(env.output_value(status.output["report"].obj_id))
    with env.rti(env.alice) as rti:
        assert rti.cancel_job(other, env.alice).state == "cancelled"
    with env.rti(env.owner) as rti:
        rti.undeploy(proc_id, env.owner)
    wait_until(lambda: not processes_with(marker), 10, interval=0.1, what="the agent's setsid daemon to end")
    assert not processes_with(marker), "the agent's setsid daemon survived the undeploy"


def test_job_network_can_be_denied(hostile: tuple[RTIEnv, Path, str], tmp_path: Path) -> None:
    """`"network": false` in a descriptor: the job has no network (only its own loopback)."""
    env, _, _ = hostile
    port = env.node.address[1]
    extra = {
        "nonet/descriptor.json": json.dumps(
            {
                "name": "nonet",
                "network": False,
                "input": [{"name": "targets", "data_type": "JSONObject", "data_format": "json"}],
                "output": [{"name": "report", "data_type": "JSONObject", "data_format": "json"}],
                "configurations": ["default"],
            }
        ),
        "nonet/install.sh": "#!/bin/bash\nexit 0\n",
        "nonet/execute.sh": (
            "#!/bin/bash\n"
            f"if (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then r=reached; else r=blocked; fi\n"
            'echo "{\\"network\\": \\"$r\\"}" > "$2/report"\necho trigger:output:report\n'
        ),
    }
    repo, commit = adapter_repo(tmp_path / "repos" / "nonet", extra=extra)
    proc_id = env.deploy("nonet", repo=repo, commit=commit)
    status = env.wait(submit(env, proc_id, {}))
    assert status.state == "successful", status
    assert env.output_value(status.output["report"].obj_id) == {"network": "blocked"}


def test_no_sandbox_no_rti_unless_the_owner_says_so(
    node_factory: Callable[..., Any], rti_env_factory: Callable[..., RTIEnv], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without bubblewrap the RTI does not start (the reason says what to install); `--unsafe-no-sandbox` starts
    it, unsandboxed, and the node record says so. With the sandbox, the record says "sandbox"."""
    from saas.nodedb.proxy import NodeDBProxy
    from saas.rti.sandbox import SandboxUnavailableError

    env = rti_env_factory()
    with NodeDBProxy(env.node.address) as db:
        assert db.get_node().isolation == "sandbox"
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap to be found
    with pytest.raises(SandboxUnavailableError) as e:
        node_factory("bare")
    assert "bubblewrap is not installed" in e.value.reason
    storage = node_factory("storage", node_type="storage")  # no RTI: nothing to sandbox
    with NodeDBProxy(storage.address) as db:
        assert db.get_node().isolation is None
    unsafe = node_factory("unsafe", unsafe_no_sandbox=True)
    assert unsafe.node.rti is not None and unsafe.node.rti.sandbox is not None
    assert not unsafe.node.rti.sandbox.enabled
    with NodeDBProxy(unsafe.address) as db:
        assert db.get_node().isolation == "none"
