"""Choosing across the network (issue 18, item 4): three RTI nodes with different packages and queues answer one
network-wide call with signed offers, ranked by wait, locality or an expression; `submit_anywhere` runs the job on
the best node with its offer; a node refuses an expired, altered or borrowed offer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rti_support import adapter_repo

from saas.core.errors import AuthorisationError, InvalidInputError
from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.nodedb.proxy import NodeDBProxy
from saas.rti.choosing import NoOfferError, find_offers, rank_offers, submit_anywhere
from saas.rti.proxy import RTIProxy
from saas.sdk.base import connect
from tests.waiting import wait_until


@dataclass
class Three:
    alpha: Any  # full node: the input is here; small package only; one slot, kept busy
    beta: Any  # execution node: default packages, idle
    gamma: Any  # execution node: a tiny package only
    user: Keystore
    other: Keystore
    proc_id: str
    held: str


def write(path: Path, packages: dict[str, Any]) -> Path:
    path.write_text(json.dumps(packages))
    return path


@pytest.fixture
def three(node_factory: Callable[..., Any], keystores: Callable[[str], Keystore], tmp_path: Path) -> Iterator[Three]:
    small = write(tmp_path / "alpha.json", {"small": {"cores": 1, "memory": 512, "walltime": 3600}})
    tiny = write(tmp_path / "gamma.json", {"tiny": {"cores": 1, "memory": 128, "walltime": 3600}})
    alpha = node_factory("alpha", packages_file=small, max_jobs=1, offer_lifetime=2.0)
    boot = "{}:{}".format(*alpha.node.config.p2p_address)
    beta = node_factory("beta", boot_node=boot, node_type="execution")
    gamma = node_factory("gamma", boot_node=boot, node_type="execution", packages_file=tiny)
    user, other = keystores("user"), keystores("other")
    for n in (alpha, beta, gamma):
        with NodeDBProxy(n.address) as db:
            db.update_identity(user.identity)
            db.update_identity(other.identity)
    wait_until(
        lambda: all(len(n.node.p2p.peers()) >= 2 for n in (alpha, beta, gamma)),
        20,
        interval=0.1,
        what="the network to form",
    )
    repo, commit = adapter_repo(tmp_path / "repo", "slow")
    with DORProxy(alpha.address, user) as dor:
        proc_id = dor.add_gpp_data_object(str(repo), commit, "slow", "default", user.identity).obj_id
        path = tmp_path / "a.json"
        path.write_text(json.dumps({"v": 0.1}))
        held = dor.add_data_object(
            path,
            user.identity,
            access_restricted=False,
            content_encrypted=False,
            data_type="JSONObject",
            data_format="json",
        ).obj_id
    for n in (alpha, beta, gamma):
        with RTIProxy(n.address, n.keystore) as rti:
            rti.deploy(proc_id, n.keystore)
    for n in (alpha, beta, gamma):
        with RTIProxy(n.address, n.keystore) as rti:
            assert rti.wait_deployed(proc_id, timeout=60, authority=n.keystore).state == "ready"
    yield Three(alpha, beta, gamma, user, other, proc_id, held)


def task(env: Three, seconds: float | None = None, **extra: Any) -> dict[str, Any]:
    """A job of the slow processor: input a (its seconds) held on alpha (0.1 s), or by value."""
    a = {"type": "reference", "obj_id": env.held} if seconds is None else {"type": "value", "value": {"v": seconds}}
    return {
        "proc_id": env.proc_id,
        "user_iid": env.user.iid,
        "input": [{"name": "a", **a}, {"name": "b", "type": "value", "value": {"v": 1}}],
        "output": [{"name": "c", "owner_iid": env.user.iid, "target_node_iid": env.alpha.node.iid}],
        **extra,
    }


def busy(env: Three) -> str:
    """A long job on alpha's only slot, and one waiting behind it."""
    with RTIProxy(env.alpha.address, env.user) as rti:
        first = rti.submit_task(task(env, 60), env.user).id
        rti.submit_task(task(env, 60), env.user)
        while rti.get_job_status(first, env.user, wait=1.0).state == "pending":
            pass
    return first


def test_offers_ranked_and_submitted_anywhere(three: Three) -> None:
    env = three
    names = {env.alpha.node.iid: "alpha", env.beta.node.iid: "beta", env.gamma.node.iid: "gamma"}
    # alpha knows how long this processor's jobs take, then gets busy
    with RTIProxy(env.alpha.address, env.user) as rti:
        done = rti.wait_for_job(rti.submit_task(task(env, 1.0), env.user).id, env.user, timeout=60)
        assert done.state == "successful", done.errors
    busy(env)
    request = {"proc_id": env.proc_id, "input": [env.held], "resources": {"memory": "256M"}}
    started = time.monotonic()
    found = find_offers(env.beta.address, request, env.user, deadline=5.0)
    assert time.monotonic() - started < 5.0
    assert found.unanswered == []
    assert [names[o.node_iid] for _, o in found] == ["beta", "alpha", "gamma"]  # by wait; gamma cannot
    by = {names[o.node_iid]: o for _, o in found}
    assert by["alpha"].queue.wait > 0 and by["beta"].queue.wait == 0
    assert not by["gamma"].can and "more than any package" in by["gamma"].reasons[0]
    assert by["alpha"].locality.held_bytes > 0 and by["beta"].locality.fetch_bytes == by["alpha"].locality.held_bytes
    assert [names[o.node_iid] for _, o in rank_offers(list(found), "locality")][:2] == ["alpha", "beta"]
    assert [names[o.node_iid] for _, o in rank_offers(list(found), "memory")][:2] == ["alpha", "beta"]  # 512 MiB
    assert [names[o.node_iid] for _, o in rank_offers(list(found), "fetch / 1000 - wait")][:2] == ["alpha", "beta"]
    with pytest.raises(InvalidInputError, match="--rank expression"):
        rank_offers(list(found), "__import__('os')")
    # submit anywhere: beta (no wait), with its offer's package
    node, offer, job = submit_anywhere(env.alpha.address, task(env, resources={"memory": "256M"}), env.user)
    assert node.identity.id == env.beta.node.iid and offer.can
    assert offer.package is not None
    assert job.package is not None and job.package.name == offer.package.name
    with RTIProxy(env.beta.address, env.user) as rti:
        assert rti.wait_for_job(job.id, env.user, timeout=60).state == "successful"
    # the same through the SDK
    context = connect(env.gamma.address, env.user)
    ranked = context.find_offers(task(env, resources={"memory": "256M"}))
    assert [names[o.node_iid] for _, o in ranked][-1] == "gamma" and ranked.unanswered == []
    sdk_job = context.submit_anywhere(task(env, resources={"memory": "256M"}), rank="locality")
    assert sdk_job.content.custodian_iid == env.alpha.node.iid  # the input is there
    with pytest.raises(NoOfferError) as caught:
        submit_anywhere(env.alpha.address, task(env, resources={"memory": "64G"}), env.user)
    assert set(caught.value.details["nodes"]) == set(names)


def test_a_node_refuses_expired_altered_and_borrowed_offers(three: Three) -> None:
    env = three
    request = {"proc_id": env.proc_id, "input": [env.held]}
    with RTIProxy(env.beta.address, env.user) as rti:
        offer = rti.get_offer(request, env.user)
        assert offer.package is not None
        altered = offer.model_copy(update={"package": offer.package.model_copy(update={"memory": 10**6})})
        with pytest.raises(InvalidInputError, match="not signed by this node"):
            rti.submit_task(task(env, offer=altered.model_dump(mode="json")), env.user)
        with pytest.raises(InvalidInputError, match="names package 'tiny' but its offer is for"):
            rti.submit_task(task(env, package="tiny", offer=offer.model_dump(mode="json")), env.user)
    gamma = RTIProxy(env.gamma.address, env.user)
    with gamma, pytest.raises(InvalidInputError, match="not signed by this node"):  # beta's offer, on gamma
        gamma.submit_task(task(env, offer=offer.model_dump(mode="json")), env.user)
    borrowed = task(env, offer=offer.model_dump(mode="json"))
    borrowed["user_iid"] = env.other.iid
    borrowed["output"][0]["owner_iid"] = env.other.iid
    with RTIProxy(env.beta.address, env.other) as rti, pytest.raises(AuthorisationError, match="another identity"):
        rti.submit_task(borrowed, env.other)
    # alpha's offers last 2 s: an expired one is refused
    with RTIProxy(env.alpha.address, env.user) as rti:
        old = rti.get_offer(request, env.user)
        assert old.can
        time.sleep(max(0.0, (old.t_expires - time.time() * 1000) / 1000) + 0.1)  # time passing is the behaviour
        with pytest.raises(InvalidInputError, match="expired"):
            rti.submit_task(task(env, offer=old.model_dump(mode="json")), env.user)
        fresh = rti.get_offer(request, env.user)
        job = rti.submit_task(task(env, offer=fresh.model_dump(mode="json")), env.user)
        assert job.package is not None and job.package.name == "small"
        assert rti.wait_for_job(job.id, env.user, timeout=60).state == "successful"


def test_an_unbeatable_offer_is_taken_without_waiting_for_slow_nodes(
    node_factory: Callable[..., Any], keystores: Callable[[str], Keystore], tmp_path: Path
) -> None:
    """A node whose offers take 4 s (its veto hook is slow) does not delay `submit_anywhere` when another node
    offers no wait and nothing to fetch; `find_offers` still waits for every node (it shows them all), and an
    expression rank (whose best score is unknown) waits too."""
    veto = tmp_path / "slow-veto"
    veto.write_text("#!/bin/sh\ncat >/dev/null\nsleep 4\necho '{\"accept\": true}'\n")
    veto.chmod(0o755)
    quick = node_factory("quick")
    boot = "{}:{}".format(*quick.node.config.p2p_address)
    slow = node_factory("slow", boot_node=boot, node_type="execution", offer_veto=veto, offer_veto_timeout=10.0)
    user = keystores("user")
    for n in (quick, slow):
        with NodeDBProxy(n.address) as db:
            db.update_identity(user.identity)
    wait_until(lambda: all(n.node.p2p.peers() for n in (quick, slow)), 20, interval=0.1, what="the network")
    repo, commit = adapter_repo(tmp_path / "repo", "abc")
    with DORProxy(quick.address, user) as dor:
        proc_id = dor.add_gpp_data_object(str(repo), commit, "abc", "default", user.identity).obj_id
    with RTIProxy(quick.address, quick.keystore) as rti:
        rti.deploy(proc_id, quick.keystore)
        assert rti.wait_deployed(proc_id, timeout=60, authority=quick.keystore).state == "ready"
    job = {
        "proc_id": proc_id,
        "user_iid": user.iid,
        "input": [{"name": "a", "type": "value", "value": {"v": 1}}, {"name": "b", "type": "value", "value": {"v": 2}}],
        "output": [{"name": "c", "owner_iid": user.iid}],
    }
    started = time.monotonic()
    node, offer, submitted = submit_anywhere(quick.address, job, user, deadline=8.0)
    assert time.monotonic() - started < 3.0  # not the slow node's 4 s
    assert node.identity.id == quick.node.iid and offer.queue.wait == 0 and offer.locality.fetch_bytes == 0
    with RTIProxy(quick.address, user) as rti:
        assert rti.wait_for_job(submitted.id, user, timeout=60).state == "successful"
    started = time.monotonic()
    found = find_offers(quick.address, {"proc_id": proc_id}, user, deadline=8.0)
    assert time.monotonic() - started >= 4.0
    assert {o.node_iid for _, o in found} == {quick.node.iid, slow.node.iid} and found.unanswered == []
    started = time.monotonic()
    node, _, _ = submit_anywhere(quick.address, job, user, rank="wait + fetch", deadline=8.0)
    assert time.monotonic() - started >= 4.0 and node.identity.id == quick.node.iid
