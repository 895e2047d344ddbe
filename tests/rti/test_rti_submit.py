"""Validation at submission: each problem is a 400 with its reason; nothing is queued."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rti_support import RTIEnv

from saas.core.errors import AuthorisationError, InvalidInputError, NotFoundError
from saas.rti.schemas import JobStatus


@pytest.fixture
def ready(env: RTIEnv) -> tuple[RTIEnv, str, str]:
    return env, env.deploy("abc"), env.add_json({"v": 1})


def task(env: RTIEnv, proc_id: str, a_id: str, **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "proc_id": proc_id,
        "user_iid": env.alice.identity.id,
        "input": [
            {"name": "a", "type": "reference", "obj_id": a_id},
            {"name": "b", "type": "value", "value": {"v": 2}},
        ],
        "output": [
            {"name": "c", "owner_iid": env.alice.identity.id, "restricted_access": False, "content_encrypted": False}
        ],
    }
    base.update(changes)
    return base


CASES: dict[str, tuple[dict[str, Any], str]] = {
    "missing input": ({"input": [{"name": "b", "type": "value", "value": {"v": 2}}]}, "Missing input(s): a"),
    "unknown input": (
        {"input": "+", "extra": {"name": "z", "type": "value", "value": {"v": 1}}},
        "Input 'z' is not an input of test-proc",
    ),
    "twice": ({"input": "+", "extra": {"name": "b", "type": "value", "value": {"v": 1}}}, "more than once"),
    "schema": (
        {"input": "b", "value": {"v": "two"}},
        "Input 'b' does not match its data_schema: 'two' is not of type 'number'",
    ),
    "schema required": ({"input": "b", "value": {"w": 1}}, "'v' is a required property"),
    "no outputs": ({"output": []}, "Outputs must be exactly c"),
    "wrong output": (
        {"output": [{"name": "d", "owner_iid": "x" * 64, "restricted_access": False, "content_encrypted": False}]},
        "Outputs must be exactly c",
    ),
    "unknown owner": (
        {"output": [{"name": "c", "owner_iid": "x" * 64, "restricted_access": False, "content_encrypted": False}]},
        "is not known to this node",
    ),
    "other target": (
        {
            "output": [
                {
                    "name": "c",
                    "owner_iid": "OWNER",
                    "restricted_access": False,
                    "content_encrypted": False,
                    "target_node_iid": "y" * 64,
                }
            ]
        },
        "is not known to this node",
    ),
    "missing object": ({"input": "a", "obj_id": "f" * 64}, f"Input 'a': data object {'f' * 64} not found"),
}


@pytest.mark.parametrize("route", ["submit", "run"])
@pytest.mark.parametrize("case", list(CASES))
def test_invalid_tasks_are_400(ready: tuple[RTIEnv, str, str], case: str, route: str) -> None:
    env, proc_id, a_id = ready
    change, reason = CASES[case]
    body = task(env, proc_id, a_id)
    if change.get("input") == "+":
        body["input"].append(change["extra"])
    elif change.get("input") in ("a", "b"):
        item = next(i for i in body["input"] if i["name"] == change["input"])
        item.update({k: v for k, v in change.items() if k != "input"})
    else:
        body.update(change)
    for out in body["output"]:
        if out["owner_iid"] == "OWNER":
            out["owner_iid"] = env.alice.identity.id
    with env.rti(env.alice) as rti:
        with pytest.raises(InvalidInputError) as e:
            if route == "submit":
                rti.submit_task(body, env.alice)
            else:
                rti.run_task(body, env.alice)
        assert e.value.status == 400  # type: ignore[attr-defined]
        assert reason in e.value.reason
        assert rti.get_jobs_by_user(env.alice) == []


def test_wrong_type_of_referenced_object(ready: tuple[RTIEnv, str, str]) -> None:
    env, proc_id, _ = ready
    with env.dor(env.alice) as dor:
        path = env.tmp / "text.txt"
        path.write_text("hello")
        obj = dor.add_data_object(path, env.alice.identity, False, False, "Text", "txt")
    with env.rti(env.alice) as rti, pytest.raises(InvalidInputError) as e:
        rti.submit_task(task(env, proc_id, obj.obj_id), env.alice)
    assert "expected JSONObject/json, got Text/txt" in e.value.reason


def test_restricted_input_of_someone_else_is_not_found(ready: tuple[RTIEnv, str, str]) -> None:
    env, proc_id, _ = ready
    secret = env.add_json({"v": 1}, env.bob, access_restricted=True)
    with env.rti(env.alice) as rti, pytest.raises(InvalidInputError, match="not found"):
        rti.submit_task(task(env, proc_id, secret), env.alice)


def test_processor_not_ready_or_unknown(env: RTIEnv) -> None:
    a_id = env.add_json({"v": 1})
    with env.rti(env.alice) as rti, pytest.raises(NotFoundError):
        rti.submit_task(task(env, "e" * 64, a_id), env.alice)


def test_task_must_be_signed_by_its_user(ready: tuple[RTIEnv, str, str]) -> None:
    env, proc_id, a_id = ready
    with env.rti(env.bob) as rti, pytest.raises(AuthorisationError):
        rti.submit_task(task(env, proc_id, a_id), env.bob)


def test_path_and_task_processor_must_agree(ready: tuple[RTIEnv, str, str]) -> None:
    env, proc_id, a_id = ready
    body = task(env, proc_id, a_id)
    with env.rti(env.alice) as rti, pytest.raises(InvalidInputError, match="is for processor"):
        rti.request("POST", f"/rti/proc/{'d' * 64}/jobs", json_body=body, signer=env.alice)


def test_job_ids_are_unguessable(ready: tuple[RTIEnv, str, str]) -> None:
    env, proc_id, _ = ready
    ids = {env.submit_abc(proc_id) for _ in range(3)}
    assert len(ids) == 3 and all(len(i) >= 20 for i in ids)
    for job_id in ids:
        assert env.wait(job_id).state == "successful"


def test_run_answers_with_the_final_status(ready: tuple[RTIEnv, str, str]) -> None:
    """One request: the node answers the submission once the job is final, outputs included."""
    env, proc_id, a_id = ready
    with env.rti(env.alice) as rti:
        status = rti.run_task(task(env, proc_id, a_id), env.alice)
    assert status.state == "successful", status
    assert env.output_value(status.output["c"].obj_id) == {"v": 3}
    assert [t["state"] for t in status.timeline][-1] == "successful"
    assert env.wait(status.job.id).output["c"].obj_id == status.output["c"].obj_id  # the same job, by its id


def test_run_of_a_long_job_answers_when_the_wait_ends(env: RTIEnv) -> None:
    """A job still running when `wait` ends is answered as it is then; it goes on and can be followed."""
    proc_id = env.deploy("slow")
    body = task(env, proc_id, env.add_json({"v": 1.5}))
    with env.rti(env.alice) as rti:
        began = time.monotonic()
        response = rti.request(
            "POST", f"/rti/proc/{proc_id}/run", params={"wait": 0.3}, json_body=body, signer=env.alice
        )
        assert time.monotonic() - began < 1.2
        status = JobStatus.model_validate(response.json())
        assert status.state in ("pending", "initialising", "running")
        assert rti.wait_for_job(status.job.id, env.alice, timeout=30).state == "successful"
        with pytest.raises(InvalidInputError):  # at most 60 s per request
            rti.request("POST", f"/rti/proc/{proc_id}/run", params={"wait": 61}, json_body=body, signer=env.alice)
        followed = rti.run_task(body, env.alice, timeout=0.2)  # returns what it saw when the timeout passed
        assert followed.state not in ("successful", "failed", "cancelled")
        assert rti.wait_for_job(followed.job.id, env.alice, timeout=30).state == "successful"
