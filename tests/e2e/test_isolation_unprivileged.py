"""Isolation (issue 13) with the node run by an ordinary, unprivileged local user: the attacks of tests/rti/
test_rti_isolation.py (adapters/examples/hostile, hostile-agent) against a real `saas-cli service` process started
with `runuser -u saas-unpriv` (the user is created by the set-up; the tests run as root, as on CI).

This is the sandbox's other path (saas/rti/sandbox.py): bubblewrap makes a user namespace and the adapter runs as the
node's own uid; the cgroups are usually not writable, so limits are rlimits (`prlimit`) and the PID namespace with
--die-with-parent ends every process. One node serves the whole module (it takes seconds to start)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from e2e_support import PASSWORD, NodeProcess, unprivileged_user

from saas.core.keystore import Keystore
from saas.rti.proxy import RTIProxy, _task
from saas.rti.schemas import JobStatus, Resources, Task
from tests.rti.rti_support import adapter_repo, assert_all_blocked, processes_with
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

USER = "saas-unpriv"
JOB_PIDS = 64


class Unprivileged:
    """The node run as USER, its owner's keystore, a client (alice) and the hostile adapters' repository."""

    def __init__(self, node: NodeProcess, alice: Keystore, repo: Path, commit: str):
        self.node = node
        self.owner = node.keystore
        self.alice = alice
        self.repo = repo
        self.commit = commit
        self.deployed: dict[str, str] = {}

    def rti(self, keystore: Keystore) -> RTIProxy:
        return RTIProxy(self.node.address, keystore)

    def deploy(self, example: str) -> str:
        """Add the GPP and deploy it; must succeed (the install.sh attacks fail the deployment if any works)."""
        if example not in self.deployed:
            with self.node.dor(self.alice) as dor:
                proc_id = dor.add_gpp_data_object(
                    str(self.repo), self.commit, example, "default", self.alice.identity
                ).obj_id
            with self.rti(self.owner) as rti:
                rti.deploy(proc_id, self.owner)
                status = rti.wait_deployed(proc_id, timeout=60, authority=self.owner)
            assert status.state == "ready", (status, self.node.output())
            self.deployed[example] = proc_id
        return self.deployed[example]

    def submit(self, proc_id: str, value: dict[str, Any], resources: Resources | None = None) -> str:
        out = Task.Output(name="report", owner_iid=self.alice.iid, restricted_access=False, content_encrypted=False)
        task = _task(proc_id, [Task.InputValue(name="targets", value=value)], [out], self.alice, None, None)
        if resources is not None:
            task["resources"] = resources.model_dump(exclude_none=True)
        with self.rti(self.alice) as rti:
            return rti.submit_task(task, self.alice).id

    def wait(self, job_id: str, timeout: float = 30) -> JobStatus:
        with self.rti(self.alice) as rti:
            return rti.wait_for_job(job_id, self.alice, timeout=timeout)

    def wait_running(self, job_id: str, timeout: float = 30) -> None:
        with self.rti(self.alice) as rti:

            def running() -> bool:
                state = rti.get_job_status(job_id, self.alice).state
                assert state in ("running", "initialised", "waiting", "queued"), state
                return state == "running"

            wait_until(running, timeout, what=f"job {job_id} to run")

    def cancel(self, job_id: str) -> None:
        with self.rti(self.alice) as rti:
            assert rti.cancel_job(job_id, self.alice).state == "cancelled"

    def targets(self, **extra: Any) -> dict[str, Any]:
        return {
            "node_pid": self.node.node_pid,
            "datastore": str(self.node.datastore),
            "keystore": str(self.node.keystore_dir / self.owner.path.name),
            "password": PASSWORD,
            **extra,
        }

    def report(self, status: JobStatus) -> dict[str, str]:
        target = self.node.work.parent / f"report-{uuid.uuid4().hex}.json"
        with self.node.dor(self.alice) as dor:
            dor.get_content(status.output["report"].obj_id, self.alice, target)
        return dict(json.loads(target.read_text()))


@pytest.fixture(scope="module")
def unprivileged(keystores: Callable[[str], Keystore]) -> Iterator[Unprivileged]:
    user, changed = unprivileged_user(USER)
    # pytest's tmp_path is under /tmp/pytest-of-root (0700): the node's folders live in a folder of their own
    root = Path(tempfile.mkdtemp(prefix="saas-unpriv-"))
    root.chmod(0o755)  # the node's work folder (0700, the user's) and the adapters' repository are in it
    node: NodeProcess | None = None
    try:
        # the repository the node clones (as the user): readable by it
        repo, commit = adapter_repo(root / "repo", "hostile", "hostile-agent")
        for folder, dirs, files in os.walk(repo):
            os.chown(folder, user.pw_uid, user.pw_gid)
            for name in dirs + files:
                os.chown(os.path.join(folder, name), user.pw_uid, user.pw_gid, follow_symlinks=False)
        work = root / "node"
        work.mkdir()
        node = NodeProcess(
            keystores("e2e-unpriv-node"), work, "unpriv", user=USER, service_args=["--job-pids", str(JOB_PIDS)]
        )
        node.start(timeout=30)
        alice = keystores("e2e-unpriv-alice")
        node.publish(alice)
        yield Unprivileged(node, alice, repo, commit)
    finally:
        if node is not None:
            node.close()
            if node.proc is not None and node.proc.returncode is None:
                node.kill()
        shutil.rmtree(root, ignore_errors=True)
        for changed_folder, mode in reversed(changed):
            changed_folder.chmod(mode)


def test_node_runs_unprivileged_in_a_user_namespace_sandbox(unprivileged: Unprivileged) -> None:
    node = unprivileged.node
    process = psutil.Process(node.node_pid)
    assert process.uids().real == process.uids().effective != 0
    assert process.username() == USER
    # the isolation in effect, as `saas-cli service` prints it at start
    assert "bubblewrap sandbox as the node's uid in a user namespace" in node.stdout(), node.output()
    assert node.datastore.stat().st_uid == process.uids().real  # made by the node, as the user


def test_hostile_processor_reaches_nothing(unprivileged: Unprivileged) -> None:
    env = unprivileged
    proc_id = env.deploy("hostile")  # install.sh attacks too: the deployment fails if any attack worked
    assert not processes_with("saas-hostile-install"), "install.sh's setsid daemon survived it"
    other = env.submit(proc_id, {"mode": "sleep"})
    env.wait_running(other)
    jobs = env.node.datastore / "rti" / "jobs"
    marker = f"saas-hostile-{uuid.uuid4().hex}"
    job = env.submit(proc_id, env.targets(other_wds=[str(jobs / other)], marker=marker))
    status = env.wait(job)
    assert status.state == "successful", (status, env.node.output())
    report = env.report(status)
    assert_all_blocked(report)
    # the node's own process is out of sight
    for name in ("node_cmdline", "node_environ", "signal_node", "password_in_proc", "read_keystore"):
        assert report[name].startswith("blocked"), (name, report)
    assert not processes_with(marker), "the job's setsid daemon survived it"
    assert not (jobs / other / "planted").exists()
    env.cancel(other)
    assert not list((env.node.datastore / "dor" / "content").glob("planted"))


def test_limits_end_jobs(unprivileged: Unprivileged) -> None:
    """Without a writable cgroup the limits are rlimits: the fork bomb hits the process limit and its walltime
    ends it; the memory hog gets a MemoryError (its address space is limited) rather than an OOM kill. Either way
    the job fails, the node answers, and a later job runs."""
    env = unprivileged
    proc_id = env.deploy("hostile")
    bomb = env.submit(proc_id, {"mode": "forkbomb"}, Resources(walltime=3))
    memory = env.submit(proc_id, {"mode": "memory"}, Resources(memory="128M", walltime=20))
    started = time.monotonic()
    statuses = {"bomb": env.wait(bomb), "memory": env.wait(memory)}
    assert time.monotonic() - started < 25
    for name, status in statuses.items():
        assert status.state == "failed", (name, status)
        assert status.errors, (name, status)
    assert "walltime of 3 s" in " ".join(statuses["bomb"].errors), statuses["bomb"]
    memory_reason = " ".join(statuses["memory"].errors)  # rlimit: the MemoryError in its stderr; cgroup: the limit
    assert "MemoryError" in memory_reason or "memory limit of 128 MiB" in memory_reason, statuses["memory"]
    for job in (bomb, memory):  # (the job id is in the command line: `attack.py <datastore>/rti/jobs/<id>`)
        assert not processes_with(job), "a process of the limited jobs survived them"
    status = env.wait(env.submit(proc_id, env.targets()))
    assert status.state == "successful", status
    assert_all_blocked(env.report(status))


def test_hostile_agent_sees_only_its_own_jobs(unprivileged: Unprivileged) -> None:
    env = unprivileged
    proc_id = env.deploy("hostile-agent")
    agent = env.node.datastore / "rti" / "procs" / proc_id / "agent"
    other = env.submit(proc_id, {"mode": "sleep"})
    env.wait_running(other)
    marker = f"saas-hostile-{uuid.uuid4().hex}"
    wds = [str(agent / f"instance-{i}" / "jobs" / other) for i in (0, 1)]
    status = env.wait(env.submit(proc_id, env.targets(other_wds=wds, marker=marker)))
    assert status.state == "successful", (status, env.node.output())
    report = env.report(status)
    assert_all_blocked(report)
    assert report["node_cmdline"].startswith("blocked") and report["node_environ"].startswith("blocked"), report
    env.cancel(other)
    with env.rti(env.owner) as rti:
        rti.undeploy(proc_id, env.owner)
    del env.deployed["hostile-agent"]
    wait_until(lambda: not processes_with(marker), 10, interval=0.1, what="the agent's setsid daemon to end")
    assert not processes_with(marker), "the agent's setsid daemon survived the undeploy"
