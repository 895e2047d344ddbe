"""Encrypted inputs are decrypted only for users who hold the key (DESIGN §6, §8): the node decrypts an encrypted
input with the envelope the owner gave it only for a job whose user owns the object or has a key envelope of
their own. Being allowed to read the ciphertext (a grant without an envelope, or an unrestricted object) is not
enough: such a job is refused at submission (403), or fails at initialisation when the key went meanwhile.
The same across nodes is in test_rti_network.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from rti_support import RTIEnv, files_holding

from saas.core.errors import AuthorisationError
from saas.core.keys import random_key
from saas.core.keystore import Keystore
from saas.rti.schemas import Task
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SECRET = 271828  # the plaintext's marker: it must not reach a user without the key


def add_encrypted(env: RTIEnv, key: bytes, restricted: bool = True) -> str:
    """Alice's encrypted object {"v": SECRET}, with an envelope for the node (as the SDK grants it)."""
    path = env.tmp / f"secret-{time.monotonic_ns()}.json"
    path.write_text(json.dumps({"v": SECRET}))
    with env.dor(env.alice) as dor:
        obj = dor.add_data_object(path, env.alice.identity, restricted, True, "JSONObject", "json", content_key=key)
        dor.grant_access(obj.obj_id, env.alice, env.owner.identity, env.owner.identity.wrap_key(key))
    path.unlink()
    return obj.obj_id


def task_io(obj_id: str, user: Keystore) -> tuple[list[Any], list[Task.Output]]:
    inputs = [Task.InputReference(name="a", obj_id=obj_id), Task.InputValue(name="b", value={"v": 1})]
    return inputs, [Task.Output(name="c", owner_iid=user.iid)]


def submit(env: RTIEnv, proc_id: str, obj_id: str, user: Keystore) -> str:
    with env.rti(user) as rti:
        return rti.submit_job(proc_id, *task_io(obj_id, user), user).id


def plaintext_anywhere(env: RTIEnv) -> list[Path]:
    """Files of the node's datastore holding the plaintext's marker (job folders, logs, DOR content)."""
    return files_holding(env.node.node.config.datastore, str(SECRET).encode())


def test_grantee_without_an_envelope_is_refused(env: RTIEnv) -> None:
    proc_id = env.deploy("abc")
    key = random_key()
    obj_id = add_encrypted(env, key)
    with env.dor(env.alice) as dor:
        dor.grant_access(obj_id, env.alice, env.bob.identity)  # bob may read the ciphertext, has no key
    with env.rti(env.bob) as rti:
        for attempt in (rti.submit_job, rti.run_job):
            with pytest.raises(AuthorisationError) as e:
                attempt(proc_id, *task_io(obj_id, env.bob), env.bob)
            assert "is encrypted and user" in e.value.reason and "holds no key" in e.value.reason
            assert e.value.details["obj_id"] == obj_id
        assert rti.get_jobs_by_user(env.bob) == []
    with env.dor(env.bob) as dor:
        assert dor.search(owner_iid=env.bob.iid) == []  # no output object
    assert plaintext_anywhere(env) == []

    # the owner, and bob once given an envelope of his own, run it as before
    assert env.wait(submit(env, proc_id, obj_id, env.alice)).state == "successful"
    with env.dor(env.alice) as dor:
        dor.grant_access(obj_id, env.alice, env.bob.identity, env.bob.identity.wrap_key(key))
    status = env.wait(submit(env, proc_id, obj_id, env.bob), env.bob)
    assert status.state == "successful", status.errors
    assert env.output_value(status.output["c"].obj_id, env.bob) == {"v": SECRET + 1}


def test_unrestricted_encrypted_object_needs_the_key_too(env: RTIEnv) -> None:
    """An unrestricted encrypted object: anyone may read the ciphertext, only key holders may have it decrypted."""
    proc_id = env.deploy("abc")
    obj_id = add_encrypted(env, random_key(), restricted=False)
    with env.rti(env.bob) as rti, pytest.raises(AuthorisationError, match="holds no key"):
        rti.submit_job(proc_id, *task_io(obj_id, env.bob), env.bob)
    assert plaintext_anywhere(env) == []


def test_key_revoked_before_initialisation_fails_the_job(rti_env_factory: Any) -> None:
    env: RTIEnv = rti_env_factory(max_jobs=1)
    slow, abc = env.deploy("slow"), env.deploy("abc")
    key = random_key()
    obj_id = add_encrypted(env, key, restricted=False)
    with env.dor(env.alice) as dor:
        dor.grant_access(obj_id, env.alice, env.bob.identity, env.bob.identity.wrap_key(key))
    busy = env.submit_abc(slow, a=30)  # holds the only slot
    with env.rti(env.alice) as rti:
        wait_until(lambda: rti.get_job_status(busy, env.alice).state == "running", 20, what="the busy job running")
    job_id = submit(env, abc, obj_id, env.bob)  # bob holds the key now: accepted, waits for the slot
    with env.dor(env.alice) as dor:
        dor.revoke_access(obj_id, env.alice, env.bob.identity)  # removes bob's envelope
    with env.rti(env.alice) as rti:
        rti.cancel_job(busy, env.alice)
    status = env.wait(job_id, env.bob)
    assert status.state == "failed"
    assert any("holds no key" in error for error in status.errors), status.errors
    assert not status.output
    assert str(SECRET) not in status.model_dump_json()
    assert plaintext_anywhere(env) == []
