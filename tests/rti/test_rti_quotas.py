"""Quotas and fairness of the RTI on a real node (issue 14, item 7): one user's long queue does not hold back
another user's job, a user's pending jobs are bounded (429 with the count and the bound; the node owner is
exempt), the fair order survives a restart, and an adapter flooding its stdout with triggers neither grows its
status nor slows the node."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from rti_support import RTIEnv, adapter_repo

from saas.core.errors import LimitReachedError, RemoteError
from saas.rti.schemas import Task
from tests.waiting import wait_until


def started_at(status: Any) -> int:
    return next(t["time"] for t in status.timeline if t["state"] == "initialising")


def submit_value(env: RTIEnv, proc_id: str, user: Any, a: float = 0.2) -> str:
    """An a + b job with both inputs by value (no DOR object per job: submitting many stays quick)."""
    inputs = [Task.InputValue(name="a", value={"v": a}), Task.InputValue(name="b", value={"v": 1})]
    outputs = [Task.Output(name="c", owner_iid=user.identity.id)]
    with env.rti(user) as rti:
        return rti.submit_job(proc_id, inputs, outputs, user).id


def test_one_users_queue_does_not_hold_back_another(rti_env_factory: Any) -> None:
    env: RTIEnv = rti_env_factory(max_jobs=1)
    proc_id = env.deploy("slow")
    alice = [submit_value(env, proc_id, env.alice, a=1.0) for _ in range(8)]
    bob = submit_value(env, proc_id, env.bob)
    bob_status = env.wait(bob, env.bob, timeout=60)
    assert bob_status.state == "successful", bob_status.errors
    with env.rti(env.alice) as rti:
        states = [rti.get_job_status(j, env.alice) for j in alice]
    # Once bob has submitted, his job takes the next free slot: no job of alice's queue starts between the two
    # (in FIFO order, all of alice's waiting jobs would). Measured from bob's submission, not from the start of
    # the test, so a slow machine that ran some of alice's jobs while she was still submitting does not matter.
    submitted, started = bob_status.job.t_submitted, started_at(bob_status)
    overtook = [s for s in states if s.state != "pending" and submitted <= started_at(s) < started]
    assert overtook == [], [s.state for s in states]
    assert sum(s.state == "pending" for s in states) >= 3  # alice's queue had not drained


def test_pending_jobs_per_user_are_bounded(rti_env_factory: Any) -> None:
    env: RTIEnv = rti_env_factory(max_jobs=1, max_pending_per_user=3)
    proc_id = env.deploy("slow")
    first = submit_value(env, proc_id, env.alice, a=30)
    with env.rti(env.alice) as rti:  # a long poll: the node answers as soon as the state changes
        wait_until(
            lambda: rti.get_job_status(first, env.alice, wait=1.0).state != "pending",
            20,
            interval=0,
            what="the first job to leave pending",
        )
    queued = [submit_value(env, proc_id, env.alice) for _ in range(3)]  # running jobs do not count
    with pytest.raises(LimitReachedError) as caught:
        submit_value(env, proc_id, env.alice)
    assert isinstance(caught.value, RemoteError) and caught.value.status == 429
    assert caught.value.details == {"pending": 3, "max_pending_per_user": 3}
    assert "3 pending jobs" in caught.value.reason
    bob = submit_value(env, proc_id, env.bob)  # another user is not affected
    owner = [submit_value(env, proc_id, env.owner) for _ in range(4)]  # the node owner is exempt
    with env.rti(env.alice) as rti:
        rti.cancel_job(queued[0], env.alice)
    submit_value(env, proc_id, env.alice)  # room again once one no longer waits
    with env.rti(env.bob) as rti:
        assert rti.get_job_status(bob, env.bob).state == "pending"
    with env.rti(env.owner) as rti:
        assert {rti.get_job_status(j, env.owner).state for j in owner} == {"pending"}


def test_running_jobs_per_user_are_bounded(rti_env_factory: Any) -> None:
    """With two slots and at most one running job per user, alice's second job waits while bob's runs."""
    env: RTIEnv = rti_env_factory(max_jobs=2, max_running_per_user=1)
    proc_id = env.deploy("slow")
    alice = [submit_value(env, proc_id, env.alice, a=1.0) for _ in range(2)]
    bob = submit_value(env, proc_id, env.bob, a=1.0)
    statuses = [env.wait(j, env.alice, timeout=60) for j in alice]
    bob_status = env.wait(bob, env.bob, timeout=60)
    assert [s.state for s in [*statuses, bob_status]] == ["successful"] * 3

    def span(status: Any) -> tuple[int, int]:
        times = {t["state"]: t["time"] for t in status.timeline}
        return times["initialising"], times["postprocessing"]

    assert span(statuses[1])[0] >= span(statuses[0])[1]  # alice: one at a time, though a slot was free
    assert span(bob_status)[0] < span(statuses[0])[1]  # bob ran beside alice's first


def test_fair_order_after_a_restart(rti_env_factory: Any) -> None:
    """Jobs queued again after a restart keep their place fairly: bob's one job is not put behind alice's."""
    env: RTIEnv = rti_env_factory(max_jobs=1)
    proc_id = env.deploy("slow")
    first = submit_value(env, proc_id, env.alice, a=30)
    alice = [submit_value(env, proc_id, env.alice) for _ in range(4)]
    bob = submit_value(env, proc_id, env.bob)
    with env.rti(env.alice) as rti:
        while rti.get_job_status(first, env.alice, wait=1.0).state == "pending":
            pass
    env.restart()
    bob_status = env.wait(bob, env.bob, timeout=60)
    assert bob_status.state == "successful", bob_status.errors
    statuses = [env.wait(j, env.alice, timeout=60) for j in alice]
    assert [s.state for s in statuses] == ["successful"] * 4
    starts = sorted([started_at(s) for s in statuses] + [started_at(bob_status)])
    assert starts.index(started_at(bob_status)) <= 1  # at most one of alice's jobs went first
    assert [started_at(s) for s in statuses] == sorted(started_at(s) for s in statuses)  # alice's in order


CHATTY = """
import json, os, sys
wd = sys.argv[1]


def spam(numbers):
    for n in numbers:
        print(f"trigger:output:spam{n}")
        print(f"trigger:progress:{n % 100}")
        if n % 4 == 0:
            print(f"trigger:message:info:message {n} " + "x" * 200)


spam(range(3_600))
for n in range(120):
    print(f"trigger:message:warning:big {n} " + "y" * 100_000)
spam(range(3_600, 40_000))
with open(os.path.join(wd, "c"), "w") as f:
    json.dump({"v": 1}, f)
print("trigger:output:c")
print("trigger:progress:100", flush=True)
"""


def test_trigger_flood_keeps_the_status_small_and_the_node_fast(rti_env_factory: Any, tmp_path: Any) -> None:
    """120 messages of 100 KB, 40,000 distinct outputs announced, 40,000 progress updates and 10,000 messages: the
    status stays bounded (before: 10 MB and more), and requests stay fast meanwhile."""
    env: RTIEnv = rti_env_factory()
    repo, commit = adapter_repo(
        tmp_path / "chatty-repo", copies={"chatty": "abc"}, extra={"chatty/processor.py": CHATTY}
    )
    proc_id = env.deploy("chatty", repo=repo, commit=commit)
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:  # a cheap request, again and again, while the job runs
        with httpx.Client(base_url=env.node.url, trust_env=False) as client:
            while not stop.is_set():
                start = time.monotonic()
                client.get("/api/v1/db/node").raise_for_status()
                latencies.append(time.monotonic() - start)
                time.sleep(0.01)  # the pace of the probe, not a wait: requests keep coming while the job runs

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        status = env.wait(submit_value(env, proc_id, env.alice), timeout=120)
    finally:
        stop.set()
        prober.join()
    assert status.state == "successful", status.errors
    assert status.progress == 100
    assert len(json.dumps(status.model_dump(mode="json"))) < 128 * 1024
    kept = [m for m in status.messages if "dropped" not in m]
    assert len(kept) <= 100
    marker = [m for m in status.messages if "dropped" in m]
    assert len(marker) == 1 and marker[0]["dropped"] == 120 + 10_000 - len(kept)
    assert kept[0]["message"] == "message 0 " + "x" * 200
    assert all(len(m["message"]) < 1100 for m in kept)  # the 100 KB ones were cut (and are not all kept)
    assert kept[-1]["message"].startswith("message 39996 ")
    row = env.node.call(  # what the board stored: announced holds declared outputs only
        env.node.node.rti.db.run(
            lambda c: c.execute("SELECT status FROM jobs WHERE id = ?", (status.job.id,)).fetchone()
        )
    )
    assert json.loads(row["status"])["announced"] == ["c"]
    assert len(row["status"]) < 128 * 1024
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.2 and latencies[-1] < 2.0, latencies[-5:]  # loosely: a busy machine
