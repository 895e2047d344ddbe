"""Account levels (issue 18, item 2): assigned by the node owner only, stored signed by the node, a default level for
identities without one, and levels deciding which packages a user may ask for (refused with 403 and the reason)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from rti_support import RTIEnv

from saas.core.errors import AuthorisationError, InvalidInputError, NotFoundError, RemoteError
from saas.rti.schemas import Task


def submit(env: RTIEnv, proc_id: str, user: Any, package: str | None = None, **resources: Any) -> str:
    task: dict[str, Any] = {
        "proc_id": proc_id,
        "user_iid": user.identity.id,
        "input": [{"name": "a", "type": "value", "value": {"v": 1}}, {"name": "b", "type": "value", "value": {"v": 2}}],
        "output": [Task.Output(name="c", owner_iid=user.identity.id).model_dump()],
    }
    if package:
        task["package"] = package
    if resources:
        task["resources"] = resources
    with env.rti(user) as rti:
        return rti.submit_task(task, user).id


def test_levels_decide_the_packages(rti_env_factory: Any) -> None:
    env: RTIEnv = rti_env_factory(default_level="basic", job_memory=4096, job_cores=4)
    proc_id = env.deploy("abc")
    alice, bob, owner = env.alice, env.bob, env.owner
    with env.rti(alice) as rti:
        mine = rti.get_level(alice.identity.id, alice)
        assert (mine.level, mine.signature, mine.allowed) == ("basic", "", ["small", "tiny"])  # the default level
        with pytest.raises(AuthorisationError):
            rti.set_level(alice.identity.id, "extended", alice)  # only the node owner
        with pytest.raises(AuthorisationError):
            rti.get_level(bob.identity.id, alice)  # nor another identity's level
    # basic: tiny and small only; a job naming nothing gets the largest it may have
    job = submit(env, proc_id, alice)
    assert env.wait(job).job.package.name == "small"
    with pytest.raises(AuthorisationError) as caught:
        submit(env, proc_id, alice, package="large")
    assert isinstance(caught.value, RemoteError) and caught.value.status == 403
    assert "does not allow package 'large' (allowed: tiny, small)" in caught.value.reason
    with pytest.raises(AuthorisationError, match="more than the packages your account level allows"):
        submit(env, proc_id, alice, memory="2G")  # medium or large would cover it
    with env.rti(owner) as rti:
        assert rti.set_level(alice.identity.id, "extended", owner).allowed is None
        bobs = rti.set_level(bob.identity.id, "guest", owner)
        assert bobs.level == "guest" and bobs.allowed == [] and bobs.signature
        with pytest.raises(InvalidInputError, match="no package xl"):
            rti.set_level(bob.identity.id, "custom", owner, packages=["xl"])
        with pytest.raises(NotFoundError):
            rti.set_level("0" * 64, "basic", owner)
        assert [r.iid for r in rti.get_levels(owner)] == sorted([alice.identity.id, bob.identity.id])
    assert env.wait(submit(env, proc_id, alice, package="large")).job.package.name == "large"
    with pytest.raises(AuthorisationError, match="allows no jobs"):
        submit(env, proc_id, bob)
    with env.rti(owner) as rti:
        custom = rti.set_level(bob.identity.id, "custom", owner, packages=["medium"])
        assert custom.allowed == ["medium", "small", "tiny"]
    assert env.wait(submit(env, proc_id, bob, memory="2G"), bob).job.package.name == "medium"
    with pytest.raises(AuthorisationError):
        submit(env, proc_id, bob, package="large")
    # the node owner has every package; a reset brings back the default level
    assert env.wait(submit(env, proc_id, owner, package="large"), owner).state == "successful"
    with env.rti(owner) as rti:
        assert rti.reset_level(bob.identity.id, owner).level == "basic"


def test_levels_survive_a_restart_and_a_changed_record_is_ignored(rti_env_factory: Any) -> None:
    env: RTIEnv = rti_env_factory(default_level="basic")
    with env.rti(env.owner) as rti:
        rti.set_level(env.alice.identity.id, "guest", env.owner)
        rti.set_level(env.bob.identity.id, "guest", env.owner)
    env.restart()
    with env.rti(env.owner) as rti:
        assert rti.get_level(env.alice.identity.id, env.owner).level == "guest"
    # someone with write access to the database lifts bob to extended without the node's signature
    env.node.stop()
    path = env.node.node.config.datastore / "rti" / "jobs.sqlite"
    with sqlite3.connect(path) as conn:
        (record,) = conn.execute("SELECT record FROM levels WHERE iid = ?", (env.bob.identity.id,)).fetchone()
        conn.execute(
            "UPDATE levels SET record = ? WHERE iid = ?",
            (record.replace('"guest"', '"extended"'), env.bob.identity.id),
        )
    conn.close()
    from saas.node import Node

    env.node = type(env.node)(Node(env.node.node.config, env.node.node.keystore))
    env.restarted.append(env.node)
    env.node.start()
    with env.rti(env.owner) as rti:
        assert rti.get_level(env.bob.identity.id, env.owner).level == "basic"  # the default, not the forged level
        assert rti.get_level(env.alice.identity.id, env.owner).level == "guest"
