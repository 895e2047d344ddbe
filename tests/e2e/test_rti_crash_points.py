"""kill -9 of the node (alone: what it started is left to fend for itself) at the RTI's remaining crash points
(issue 15, item 3): while a job's input is being copied in (job start), while a job's output is being stored, and
while an agent's instances start. The node starts again, nothing partial is visible (no half object, no half input
left, the job's state says what happened) and no adapter process survives. The kills during an upload, an add-gpp
clone, install.sh and a running job are in test_crash_safety.py, test_rti_restart.py and test_agent_restart.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import MiB, NodeProcess, wait_for
from test_crash_safety import assert_store_consistent

from saas.core.keystore import Keystore
from saas.rti.proxy import RTIProxy
from saas.rti.schemas import Task
from tests.rti.rti_support import EXAMPLES, adapter_repo, processes_of

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BIG = 1024  # MiB of the big input / output: copying or storing it takes long enough to be caught in the act

# A processor with a big input `b` (copied into the job at its start) that writes an output `c` of `a.mib` MiB.
BLOB_DESCRIPTOR = {
    "name": "blob",
    "input": [
        {"name": "a", "data_type": "JSONObject", "data_format": "json"},
        {"name": "b", "data_type": "Blob", "data_format": "bin"},
    ],
    "output": [{"name": "c", "data_type": "Blob", "data_format": "bin"}],
    "configurations": ["default"],
}
BLOB_EXECUTE = """#!/bin/bash
mib=$(python3 -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["mib"]))' "$2/a")
head -c $((mib * 1048576)) /dev/zero > "$2/c"
echo "trigger:output:c"
"""
BLOB_FILES = {
    "blob/descriptor.json": json.dumps(BLOB_DESCRIPTOR),
    "blob/execute.sh": BLOB_EXECUTE,
    "blob/install.sh": "#!/bin/bash\nexit 0\n",
}


def deployed_blob(node: NodeProcess, user: Keystore, tmp_path: Path) -> tuple[str, str]:
    """The blob processor deployed on `node`, and a big (BIG MiB) input object of `user`'s: (proc_id, obj_id)."""
    node.publish(user)
    repo, commit = adapter_repo(tmp_path / "repo", extra=BLOB_FILES)
    dor = node.dor(user)
    proc_id = dor.add_gpp_data_object(str(repo), commit, "blob", "default", user.identity).obj_id
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(BIG * MiB)  # zeros (sparse here; a real file in the DOR)
    obj_id = dor.add_data_object(big, user.identity, False, False, "Blob", "bin").obj_id
    big.unlink()
    with RTIProxy(node.address, node.keystore) as owner:
        owner.deploy(proc_id, node.keystore)
        assert owner.wait_deployed(proc_id, timeout=60).state == "ready"
    return proc_id, obj_id


def submit(rti: RTIProxy, user: Keystore, proc_id: str, obj_id: str, mib: int) -> str:
    inputs: list[Task.InputReference | Task.InputValue] = [
        Task.InputValue(name="a", value={"mib": mib}),
        Task.InputReference(name="b", obj_id=obj_id),
    ]
    outputs = [Task.Output(name="c", owner_iid=user.iid, restricted_access=False, content_encrypted=False)]
    return rti.submit_job(proc_id, inputs, outputs, user).id


def produced(node: NodeProcess, user: Keystore) -> list[str]:
    """The job ids of the outputs in the node's DOR."""
    return sorted(o.recipe.job_id for o in node.dor(user).search(data_type="Blob", limit=100) if o.recipe)  # type: ignore[attr-defined]


def test_kill_9_at_job_start(node_process_factory: Callable[..., NodeProcess], user: Keystore, tmp_path: Path) -> None:
    """Killed while the big input is copied into the job's folder: the job failed with "node restarted" (or, when
    its start was not yet recorded, ran again from scratch), its half-copied input is gone, and the node runs
    jobs."""
    node = node_process_factory("e2e-jobstart-node")
    proc_id, obj_id = deployed_blob(node, user, tmp_path)
    with RTIProxy(node.address, user) as rti:
        job_id = submit(rti, user, proc_id, obj_id, 1)
        copied = node.datastore / "rti" / "jobs" / job_id / "b"
        wait_for(lambda: copied.is_file() and 0 < copied.stat().st_size < BIG * MiB, 30, "the input half copied")
    node.kill(only_the_node=True)
    assert 0 < copied.stat().st_size < BIG * MiB  # caught in the act
    assert not processes_of(job_id)
    node.restart()
    with RTIProxy(node.address, user) as rti:
        status = rti.wait_for_job(job_id, user, timeout=60)
        if status.state == "failed":
            assert status.errors == ["node restarted"]
            assert produced(node, user) == []
        else:  # its start had not been recorded: queued again, run once, from a fresh folder
            assert status.state == "successful"
            assert produced(node, user) == [job_id]
        wait_for(lambda: not copied.exists(), 10, "the job's folder removed")
        again = submit(rti, user, proc_id, obj_id, 1)
        assert rti.wait_for_job(again, user, timeout=60).state == "successful"
    assert not processes_of(job_id) and not processes_of(again)
    assert_store_consistent(node, node.dor(user))


def test_kill_9_at_output_store(
    node_process_factory: Callable[..., NodeProcess], user: Keystore, tmp_path: Path
) -> None:
    """Killed while the big output is stored into the DOR: after the restart postprocessing resumes and stores it
    exactly once; no half object or temp file is ever visible."""
    node = node_process_factory("e2e-outstore-node")
    proc_id, obj_id = deployed_blob(node, user, tmp_path)
    with RTIProxy(node.address, user) as rti:
        job_id = submit(rti, user, proc_id, obj_id, BIG)
        wait_for(lambda: rti.get_job_status(job_id, user).state == "postprocessing", 60, "postprocessing", 0.01)
        wait_for(lambda: any(p.stat().st_size > 0 for p in node.temp_files()), 30, "the output being stored", 0.01)
    node.kill(only_the_node=True)
    partial = node.temp_files()
    assert partial  # caught in the act: a partial copy in dor/tmp
    node.restart()
    assert not any(p.exists() for p in partial)
    with RTIProxy(node.address, user) as rti:
        status = rti.wait_for_job(job_id, user, timeout=60)
        assert status.state == "successful", status
    objects = assert_store_consistent(node, node.dor(user))
    outputs = [o for o in objects if o.data_type == "Blob" and o.recipe]  # type: ignore[attr-defined]
    assert [o.recipe.job_id for o in outputs] == [job_id]  # type: ignore[attr-defined]
    assert outputs[0].size == BIG * MiB
    assert not processes_of(job_id)


def test_kill_9_at_agent_start(
    node_process_factory: Callable[..., NodeProcess], user: Keystore, tmp_path: Path
) -> None:
    """Killed while an agent's instances start (they take long to print `trigger:ready`): no instance survives the
    node, the restarted node shows the deployment failed, and a deployment of another processor works."""
    node = node_process_factory("e2e-agentstart-node")
    node.publish(user)
    agent = (EXAMPLES / "abc-agent" / "agent.py").read_text()
    repo, commit = adapter_repo(
        tmp_path / "repo",
        "abc",
        copies={"agent": "abc-agent"},
        extra={"agent/agent.py": "import time\n\ntime.sleep(300)  # a model that takes long to load\n" + agent},
    )
    dor = node.dor(user)
    proc_id = dor.add_gpp_data_object(str(repo), commit, "agent", "default", user.identity).obj_id
    abc_id = dor.add_gpp_data_object(str(repo), commit, "abc", "default", user.identity).obj_id
    with RTIProxy(node.address, node.keystore) as owner:
        owner.deploy(proc_id, node.keystore)
        wait_for(lambda: processes_of(f"agent-{proc_id}-0"), 30, "an agent instance starting")
        assert owner.get_status(proc_id, node.keystore).state == "deploying"
    instances = [p for i in range(2) for p in processes_of(f"agent-{proc_id}-{i}")]
    node.kill(only_the_node=True)
    wait_for(lambda: not any(processes_of(f"agent-{proc_id}-{i}") for i in range(2)), 5, "the instances gone")
    node.restart()
    with RTIProxy(node.address, node.keystore) as owner:
        status = owner.get_status(proc_id, node.keystore)
        assert (status.state, status.error) == ("failed", "node restarted during deployment")
        owner.deploy(abc_id, node.keystore)
        assert owner.wait_deployed(abc_id, timeout=60).state == "ready"
    assert not any(processes_of(f"agent-{proc_id}-{i}") for i in range(2))
    assert instances  # there were some to kill
