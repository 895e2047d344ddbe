"""Offers (issue 18, item 3): a node answers "can I do this?" with a signed, expiring offer (can or cannot with every
reason, the package it would give, deployed or not, data locality, estimated queue wait, quota left), and a node
owner's veto hook accepts or rejects."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rti_support import RTIEnv

from saas.core.errors import AuthorisationError
from saas.dor.proxy import DORProxy
from saas.nodedb.proxy import NodeDBProxy
from saas.rti.offers import Offer
from saas.rti.schemas import Task
from tests.waiting import wait_until

PACKAGES = {
    "tiny": {"cores": 1, "memory": 128, "walltime": 600},
    "small": {"cores": 1, "memory": 512, "walltime": 3600},
    "large": {"cores": 2, "memory": 4096, "walltime": 86400},
}


def submit_slow(env: RTIEnv, proc_id: str, seconds: float) -> str:
    inputs = [Task.InputValue(name="a", value={"v": seconds}), Task.InputValue(name="b", value={"v": 1})]
    outputs = [Task.Output(name="c", owner_iid=env.alice.identity.id)]
    with env.rti(env.alice) as rti:
        return rti.submit_job(proc_id, inputs, outputs, env.alice).id


@pytest.fixture
def packaged(rti_env_factory: Callable[..., RTIEnv], tmp_path: Path) -> RTIEnv:
    path = tmp_path / "packages.json"
    path.write_text(json.dumps(PACKAGES))
    return rti_env_factory(packages_file=path, default_level="basic", max_jobs=1, max_pending_per_user=5)


def test_an_offer_says_what_the_node_would_do(packaged: RTIEnv, node_factory: Callable[..., Any]) -> None:
    env = packaged
    proc_id = env.deploy("slow")
    node_identity = env.node.keystore.identity
    held = env.add_json({"v": 1})
    with DORProxy(env.node.address, env.alice) as dor:
        meta = dor.get_meta(held)
        assert meta is not None
        size = meta.size
    # an object on another node of the network: to fetch
    other = node_factory("other", boot_node="{}:{}".format(*env.node.node.config.p2p_address), node_type="storage")
    with NodeDBProxy(other.address) as db:
        db.update_identity(env.alice.identity)
    wait_until(lambda: len(env.node.node.p2p.peers()) >= 1, 20, interval=0.1, what="the network to form")
    path = env.tmp / "far.json"
    path.write_text(json.dumps({"v": 12345}))
    with DORProxy(other.address, env.alice) as dor:
        far = dor.add_data_object(
            path,
            env.alice.identity,
            access_restricted=False,
            content_encrypted=False,
            data_type="JSONObject",
            data_format="json",
        )
    missing = "f" * 64
    with env.rti(env.alice) as rti:
        offer = rti.get_offer(
            {"proc_id": proc_id, "resources": {"memory": "300M"}, "input": [held, far.obj_id]}, env.alice
        )
        assert offer.can, offer.reasons
        assert offer.verify(node_identity)
        assert offer.package is not None
        assert (offer.level, offer.package.name, offer.package.memory) == ("basic", "small", 512)  # asked 300, gets 512
        assert offer.deployed and offer.processor_state == "ready"
        assert offer.locality.held == [held] and offer.locality.held_bytes == size
        assert offer.locality.fetch == [far.obj_id] and offer.locality.fetch_bytes == far.size
        assert offer.pending_left == 5 and offer.queue.samples == 0
        assert offer.t_expires - offer.t_issued == 300_000
        # every reason at once
        refused = rti.get_offer(
            {
                "proc_id": proc_id,
                "package": "large",
                "resources": {"walltime": 100000},
                "input": [missing],
                "deadline": int(time.time() * 1000) - 1,
            },
            env.alice,
        )
        assert not refused.can and refused.verify(node_identity)
        text = " | ".join(refused.reasons)
        assert "does not allow package 'large'" in text and "too small" in text
        assert f"Input {missing} is not found" in text and "after the deadline" in text
        assert refused.locality.missing == [missing]
        undeployed = rti.get_offer({"proc_id": "e" * 64}, env.alice)
        assert not undeployed.can and not undeployed.deployed and "not deployed" in undeployed.reasons[0]
    # a signed offer cannot be changed, and it expires
    forged = refused.model_copy(update={"can": True, "reasons": []})
    assert not forged.verify(node_identity)
    assert not offer.verify(node_identity, now_ms=offer.t_expires)
    assert not Offer.model_validate(offer.model_dump()).verify(env.alice.identity)  # not the node's
    # the queue: recent durations and the jobs ahead
    assert env.wait(submit_slow(env, proc_id, 0.5)).state == "successful"
    running = submit_slow(env, proc_id, 30)
    waiting = submit_slow(env, proc_id, 30)
    with env.rti(env.alice) as rti:
        while rti.get_job_status(running, env.alice, wait=1.0).state == "pending":
            pass
        offer = rti.get_offer({"proc_id": proc_id}, env.alice)
        assert (offer.queue.pending, offer.queue.running, offer.queue.slots, offer.queue.samples) == (1, 1, 1, 1)
        assert offer.queue.mean_duration is not None and offer.queue.wait == pytest.approx(
            2 * offer.queue.mean_duration
        )
        assert offer.pending_left == 4
        for job in (running, waiting):
            rti.cancel_job(job, env.alice)
    # the level decides: a guest gets a refusal; the RTI refuses unsigned offers
    with env.rti(env.owner) as rti:
        rti.set_level(env.bob.identity.id, "guest", env.owner)
    with env.rti(env.bob) as rti:
        guest = rti.get_offer({"proc_id": proc_id}, env.bob)
    assert not guest.can and guest.reasons == ["Your account level on this node allows no jobs"]
    assert guest.package is None
    with env.rti() as rti, pytest.raises(Exception) as caught:
        rti.request("POST", "/rti/offers", json_body={"proc_id": proc_id})
    assert getattr(caught.value, "status", None) == 401 or isinstance(caught.value, AuthorisationError)


VETO = """#!{python}
import json, sys, time
task = json.load(sys.stdin)
if task["deadline"] == 1:
    time.sleep(30)
elif task["package"] and task["package"]["name"] == "large":
    print(json.dumps({{"accept": False, "reason": "large jobs only at night"}}))
else:
    print(json.dumps({{"accept": True}}))
"""


def test_the_veto_hook(rti_env_factory: Callable[..., RTIEnv], tmp_path: Path) -> None:
    hook = tmp_path / "veto.py"
    hook.write_text(VETO.format(python=sys.executable))
    hook.chmod(0o755)
    env = rti_env_factory(offer_veto=hook, offer_veto_timeout=1.0)
    proc_id = env.deploy("abc")
    with env.rti(env.alice) as rti:
        assert rti.get_offer({"proc_id": proc_id, "package": "small"}, env.alice).can
        rejected = rti.get_offer({"proc_id": proc_id, "package": "large"}, env.alice)
        assert rejected.reasons == ["Rejected by the node's policy: large jobs only at night"]
        started = time.monotonic()
        slow = rti.get_offer({"proc_id": proc_id, "deadline": 1}, env.alice)
        assert time.monotonic() - started < 10
        assert "The node's veto hook did not answer within 1 s" in slow.reasons
