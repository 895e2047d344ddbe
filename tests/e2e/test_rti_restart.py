"""Restart recovery of the RTI with a real node process killed with SIGKILL mid-job: the running job is failed with
"node restarted", its leftover processes are killed, finished jobs and their outputs stay as they were (no
duplicate), and the node runs new jobs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from e2e_support import NodeProcess, wait_for

from saas.core.keystore import Keystore
from saas.rti.proxy import RTIProxy
from saas.rti.records import HIDDEN_ERROR
from saas.rti.schemas import Task
from tests.rti.rti_support import EXAMPLES, adapter_repo, processes_of

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_kill_9_mid_job(node_process_factory: Callable[..., NodeProcess], user: Keystore, tmp_path: Path) -> None:
    node = node_process_factory("e2e-rti-node")
    node.publish(user)
    repo, commit = adapter_repo(tmp_path / "repo", "abc", "slow")
    source = str(repo)
    dor = node.dor(user)
    procs = {
        name: dor.add_gpp_data_object(source, commit, name, "default", user.identity).obj_id for name in ("abc", "slow")
    }
    a = tmp_path / "a.json"
    a.write_text('{"v": 1}')
    a_id = dor.add_data_object(a, user.identity, False, False, "JSONObject", "json").obj_id
    a.write_text('{"v": 60}')  # the slow adapter runs `a` seconds
    long_id = dor.add_data_object(a, user.identity, False, False, "JSONObject", "json").obj_id

    def submit(rti: RTIProxy, proc: str, b: float) -> str:
        return rti.submit_job(
            procs[proc],
            [
                Task.InputReference(name="a", obj_id=long_id if proc == "slow" else a_id),
                Task.InputValue(name="b", value={"v": b}),
            ],
            [Task.Output(name="c", owner_iid=user.iid, restricted_access=False, content_encrypted=False)],
            user,
        ).id

    with RTIProxy(node.address, node.keystore) as owner:
        for proc_id in procs.values():
            owner.deploy(proc_id, node.keystore)
            assert owner.wait_deployed(proc_id, timeout=30).state == "ready"
    with RTIProxy(node.address, user) as rti:
        done = submit(rti, "abc", 2)
        assert rti.wait_for_job(done, user, timeout=30).state == "successful"
        running = submit(rti, "slow", 2)
        child_file = node.datastore / "rti" / "jobs" / running / "child.pid"
        wait_for(lambda: child_file.is_file() and child_file.read_text(), 20, "the slow job's child process")
        processes = processes_of(running)  # pids of the host
        assert len(processes) >= 3, processes
    node.kill()
    # the sandbox dies with the node (--die-with-parent, its PID namespace): nothing of the job outlives it
    wait_for(lambda: not processes_of(running), 5, "the job's processes gone with the node")
    node.restart()
    with RTIProxy(node.address, user) as rti:
        status = rti.get_job_status(running, user)
        assert status.state == "failed"
        assert status.errors == ["node restarted"]
        assert status.timeline[-1]["reason"] == "node restarted"
        assert rti.get_job_status(done, user).state == "successful"
        again = submit(rti, "abc", 5)
        assert rti.wait_for_job(again, user, timeout=30).state == "successful"
    assert not any(alive(p) for p in processes)
    produced = [o for o in node.dor(user).search(data_type="JSONObject", limit=1000) if o.recipe]  # type: ignore[attr-defined]
    assert sorted(o.recipe.job_id for o in produced) == sorted([done, again])  # type: ignore[attr-defined]


def test_kill_9_during_install(
    node_process_factory: Callable[..., NodeProcess], user: Keystore, tmp_path: Path
) -> None:
    """kill -9 of the node alone while install.sh runs: install.sh (and what it started) does not outlive it, so
    nothing races a redeploy, and the restarted node shows the deployment failed."""
    node = node_process_factory("e2e-install-node")
    node.publish(user)
    extra = {
        "slowinstall/descriptor.json": (EXAMPLES / "abc" / "descriptor.json").read_text(),
        "slowinstall/execute.sh": (EXAMPLES / "abc" / "execute.sh").read_text(),
        "slowinstall/processor.py": (EXAMPLES / "abc" / "processor.py").read_text(),
        "slowinstall/install.sh": ("#!/bin/bash\nsetsid sleep 300 &\nsleep 300\n"),
    }
    repo, commit = adapter_repo(tmp_path / "repo", extra=extra)
    proc_id = node.dor(user).add_gpp_data_object(str(repo), commit, "slowinstall", "default", user.identity).obj_id
    with RTIProxy(node.address, node.keystore) as owner:
        owner.deploy(proc_id, node.keystore)
        wait_for(lambda: len(processes_of(f"install-{proc_id}")) >= 2, 20, "install.sh running")
    node.kill(only_the_node=True)
    # within 15 s, not the 300 s of its sleeps: it went with the node (a loaded machine may take a few seconds)
    wait_for(lambda: not processes_of(f"install-{proc_id}"), 15, "install.sh gone with the node")
    node.restart()
    with RTIProxy(node.address, node.keystore) as owner:
        status = owner.get_status(proc_id, node.keystore)
        assert (status.state, status.error) == ("failed", "node restarted during deployment")
        assert owner.get_status(proc_id).error == HIDDEN_ERROR  # others see that it failed, not why
