"""Job outputs obey the DOR's bounds (issue 14 item 7): an output larger than the node's `max_object_size`, or than
its owner's storage quota, fails the job with a reason naming the output and the limit, and nothing is stored; a
target DOR on another node that refuses the output (413, 507) fails the job with its reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from disk_support import small_disk
from rti_support import RTIEnv, adapter_repo

from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.nodedb.proxy import NodeDBProxy
from saas.rti.proxy import RTIProxy
from saas.rti.schemas import Task
from tests.p2p.conftest import wait_until

# a + b, with an output of about b bytes (still valid for the descriptor's data_schema)
PADDED = """import json, os, sys
wd = sys.argv[1]
a = json.load(open(os.path.join(wd, "a")))["v"]
b = json.load(open(os.path.join(wd, "b")))["v"]
json.dump({"v": a + b, "pad": "x" * int(b)}, open(os.path.join(wd, "c"), "w"))
print("trigger:output:c", flush=True)
"""


@pytest.fixture
def padded(tmp_path: Path) -> tuple[Path, str]:
    return adapter_repo(tmp_path / "repos" / "padded", copies={"padded": "abc"}, extra={"padded/processor.py": PADDED})


def objects_of(env: RTIEnv, user: Keystore) -> list[Any]:
    with DORProxy(env.node.address, user) as dor:
        return dor.search(owner_iid=user.iid, data_type="JSONObject")


@pytest.mark.parametrize("encrypted", [False, True])
def test_output_over_max_object_size_fails_the_job(
    rti_env_factory: Callable[..., RTIEnv], padded: tuple[Path, str], encrypted: bool
) -> None:
    env = rti_env_factory(max_object_size=4096)
    proc_id = env.deploy("padded", repo=padded[0], commit=padded[1])

    ok = env.wait(env.submit_abc(proc_id, a=1, b=1000, content_encrypted=encrypted))
    assert ok.state == "successful", ok.errors

    before = objects_of(env, env.alice)
    status = env.wait(env.submit_abc(proc_id, a=1, b=8000, content_encrypted=encrypted))
    assert status.state == "failed"
    reason = status.errors[-1]
    assert reason.startswith("Output 'c' is 7.8 KiB (80"), reason
    assert "larger than this node's limit for data objects of 4.0 KiB (4096 bytes, max_object_size)" in reason
    after = objects_of(env, env.alice)
    assert len(after) == len(before) + 1  # the job's input a only: no output
    assert not any(o.recipe for o in after if o.obj_id not in {b.obj_id for b in before})


def test_output_over_the_owners_quota_fails_the_job(
    rti_env_factory: Callable[..., RTIEnv], padded: tuple[Path, str], keystores: Callable[[str], Keystore]
) -> None:
    env = rti_env_factory(storage_quota=None, storage_quota_for={keystores("bob").iid: 4096})
    proc_id = env.deploy("padded", repo=padded[0], commit=padded[1])

    status = env.wait(env.submit_abc(proc_id, a=1, b=6000, user=env.bob), user=env.bob)
    assert status.state == "failed"
    reason = status.errors[-1]
    assert reason.startswith("Output 'c' (5.9 KiB) does not fit its owner's storage quota on this node"), reason
    with DORProxy(env.node.address, env.bob) as dor:
        usage = dor.usage()
    assert (usage.objects, usage.quota) == (1, 4096)  # bob's input a only
    content = env.node.node.config.datastore / "dor" / "content"
    sizes = sorted(p.stat().st_size for p in content.rglob("*") if p.is_file())
    assert all(size < 6000 for size in sizes), sizes  # the refused output's bytes were never put in the store

    # Within the quota, the same processor stores bob's output.
    status = env.wait(env.submit_abc(proc_id, a=1, b=1000, user=env.bob), user=env.bob)
    assert status.state == "successful", status.errors


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_target_dor_refusing_the_output_fails_the_job(
    node_factory: Callable[..., Any], keystores: Callable[[str], Keystore], padded: tuple[Path, str], tmp_path: Path
) -> None:
    """Node A runs the job, node B takes its outputs: B's size limit (413) and B's quota for bob (507) fail the
    job with B's reason."""
    alice, bob = keystores("alice"), keystores("bob")
    a = node_factory("alpha")
    b = node_factory(
        "beta",
        boot_node="{}:{}".format(*a.node.config.p2p_address),
        node_type="storage",
        max_object_size=10_000,
        storage_quota_for={bob.iid: 4096},
    )
    with NodeDBProxy(a.address) as db:
        for user in (alice, bob):
            db.update_identity(user.identity)
    for n in (a, b):
        wait_until(
            lambda n=n: len(n.node.p2p.peers()) == 1 and n.node.nodedb.get_identity(bob.iid) is not None,  # type: ignore[misc]  # mypy cannot type a lambda with a default argument
            20,
            "the network to form and the users to be known on both nodes",
        )
    with DORProxy(a.address, alice) as dor:
        proc_id = dor.add_gpp_data_object(str(padded[0]), padded[1], "padded", "default", alice.identity).obj_id
    with RTIProxy(a.address, a.keystore) as rti:
        rti.deploy(proc_id, a.keystore)
        assert rti.wait_deployed(proc_id, timeout=60).state == "ready"

    def run(user: Keystore, pad: int) -> Any:
        inputs = [Task.InputValue(name="a", value={"v": 1}), Task.InputValue(name="b", value={"v": pad})]
        outputs = [Task.Output(name="c", owner_iid=user.iid, target_node_iid=b.node.iid)]
        with RTIProxy(a.address, user) as rti:
            job = rti.submit_job(proc_id, inputs, outputs, user)
            return rti.wait_for_job(job.id, user, timeout=60)

    where = f"Output 'c': storing on node {b.node.iid[:8]} failed: "
    too_large = run(alice, 20_000)
    assert too_large.state == "failed"
    assert too_large.errors[-1] == where + "Content is larger than this node's limit of 10000 bytes"

    over_quota = run(bob, 6000)
    assert over_quota.state == "failed"
    assert over_quota.errors[-1].startswith(where + "Storing 5.9 KiB would exceed the storage quota of " + bob.iid)

    fits = run(bob, 1000)
    assert fits.state == "successful", fits.errors
    assert fits.output["c"].custodian.identity.id == b.node.iid


# Like PADDED; with a < 0 it also fills its disk (the node's datastore) before announcing the output, leaving
# 256 KiB free with a == -1 (for the job board's writes; not enough for the output) and nothing with a == -2.
FILLING = PADDED.replace(
    'print("trigger:output:c", flush=True)',
    """if a < 0:
    filler = os.path.join(wd, "filler")
    try:
        with open(filler, "wb", buffering=0) as f:
            while True:
                f.write(b"\\0" * 65536)
    except OSError:
        pass
    if a == -1:
        os.truncate(filler, os.path.getsize(filler) - 256 * 1024)
print("trigger:output:c", flush=True)""",
)


@pytest.fixture
def filling(tmp_path: Path) -> tuple[Path, str]:
    return adapter_repo(
        tmp_path / "repos" / "filling", copies={"filling": "abc"}, extra={"filling/processor.py": FILLING}
    )


@pytest.fixture
def disk(tmp_path: Path) -> Any:
    with small_disk(tmp_path / "disk", "16m") as path:
        yield path


def test_output_on_a_full_disk_fails_the_job(
    disk: Path, rti_env_factory: Callable[..., RTIEnv], filling: tuple[Path, str]
) -> None:
    """The node's datastore is a real 16 MiB tmpfs; the adapter fills it after writing its output: storing the
    output meets ENOSPC, the job fails with the reason, and the next job (its folder removed) stores its output."""
    env = rti_env_factory(datastore=disk / "datastore")
    proc_id = env.deploy("filling", repo=filling[0], commit=filling[1])

    status = env.wait(env.submit_abc(proc_id, a=-1, b=500_000))  # the DOR's write of the output fails
    assert status.state == "failed"
    assert status.errors[-1].startswith(
        "Output 'c' could not be stored: The node's storage is full: the data object could not be written"
    ), status.errors
    assert list((disk / "datastore" / "dor" / "tmp").iterdir()) == []

    status = env.wait(env.submit_abc(proc_id, a=-2, b=500_000))  # not even the job board can write
    assert status.state == "failed"
    assert status.errors[-1].startswith("The node's storage is full"), status.errors

    status = env.wait(env.submit_abc(proc_id, a=1, b=500_000))
    assert status.state == "successful", status.errors
