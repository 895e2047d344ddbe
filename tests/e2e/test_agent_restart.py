"""Restart recovery of an agent with a real node process killed with SIGKILL while both instances hold a job and
more jobs wait (two with their inputs prepared, one pending): the restarted node kills the instances the dead one
left (found through pids.json), starts fresh ones, fails the two running jobs with "node restarted", runs the
waiting jobs once each, and stores each output once."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from e2e_support import NodeProcess, wait_for

from saas.core.keystore import Keystore
from saas.rti.proxy import RTIProxy
from saas.rti.schemas import Task
from tests.rti.rti_support import EXAMPLES, adapter_repo

pytestmark = pytest.mark.slow


def group_alive(pgid: int) -> bool:
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return False


def test_kill_9_with_an_agent(node_process_factory: Callable[..., NodeProcess], user: Keystore, tmp_path: Path) -> None:
    node = node_process_factory("e2e-agent-node")
    node.publish(user)
    descriptor = json.loads((EXAMPLES / "crash-agent" / "descriptor.json").read_text())
    descriptor.update(instances=2, job_timeout=300)
    repo, commit = adapter_repo(
        tmp_path / "repo", copies={"agent": "crash-agent"}, extra={"agent/descriptor.json": json.dumps(descriptor)}
    )
    source = str(repo)
    proc_id = node.dor(user).add_gpp_data_object(source, commit, "agent", "default", user.identity).obj_id
    with RTIProxy(node.address, node.keystore) as owner:
        owner.deploy(proc_id, node.keystore)
        assert owner.wait_deployed(proc_id, timeout=30).state == "ready"
    pids = node.datastore / "rti" / "procs" / proc_id / "agent" / "pids.json"
    old = [int(p) for p in json.loads(pids.read_text()).values()]

    def submit(rti: RTIProxy, a: int) -> str:
        inputs = [Task.InputValue(name="a", value={"v": a}), Task.InputValue(name="b", value={"v": 1})]
        return rti.submit_job(proc_id, inputs, [Task.Output(name="c", owner_iid=user.iid)], user).id

    with RTIProxy(node.address, user) as rti:
        assert rti.wait_for_job(submit(rti, 1), user, timeout=30).state == "successful"
        hanging = [submit(rti, 14), submit(rti, 14)]
        wait_for(
            lambda: all(rti.get_job_status(j, user).state == "running" for j in hanging), 20, "both instances busy"
        )
        waiting = [submit(rti, n) for n in (2, 3, 4)]
        # two admitted (inputs ready, waiting for an instance), the third not yet
        expected = ["initialising", "initialising", "pending"]
        wait_for(lambda: [rti.get_job_status(j, user).state for j in waiting] == expected, 20, "jobs waiting")
    node.kill()
    # the sandboxes die with the node (--die-with-parent, their PID namespaces): no instance outlives it
    wait_for(lambda: not any(group_alive(g) for g in old), 5, "the old instances gone with the node")
    node.restart()
    with RTIProxy(node.address, user) as rti:
        for job_id in hanging:
            status = rti.wait_for_job(job_id, user, timeout=30)
            assert (status.state, status.errors) == ("failed", ["node restarted"])
        done = [rti.wait_for_job(j, user, timeout=30) for j in waiting]
        assert [s.state for s in done] == ["successful"] * 3
        assert [t["reason"] for t in done[0].timeline].count("node restarted: re-queued") == 1
    produced = [o for o in node.dor(user).search(data_type="JSONObject", limit=1000) if o.recipe]  # type: ignore[attr-defined]
    assert len(produced) == 4 and {s.job.id for s in done} <= {o.recipe.job_id for o in produced}  # type: ignore[attr-defined]
    new = [int(p) for p in json.loads(pids.read_text()).values()]
    assert set(new).isdisjoint(old) and all(group_alive(g) for g in new)
