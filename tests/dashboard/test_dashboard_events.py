"""`GET /rti/job/{id}/events` (server-sent events, issue 20) over real HTTP: the job's status at once and at each
change until it is final, for its owner only (signed or by dashboard session); and the dashboard's upload path
(a session's upload has no signed body hash) stores exactly the bytes sent."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from saas.core.keystore import Keystore
from saas.core.login import LoginToken
from saas.core.signing import sign_request
from saas.rest.sessions import HEADER_CSRF
from saas.rti.schemas import Task
from tests.dashboard.dashboard_support import rti_env
from tests.rti.rti_support import RTIEnv

API = "/api/v1"


@pytest.fixture
def env(node_factory: Callable[..., Any], keystores: Callable[[str], Keystore], tmp_path: Path) -> RTIEnv:
    return rti_env(node_factory, keystores, tmp_path, "abc", "slow")


def events(response: httpx.Response) -> list[dict[str, Any]]:
    """The `status` events of a text/event-stream response, read to its end."""
    assert response.headers["content-type"].startswith("text/event-stream")
    found, kind = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind == "status":
            found.append(json.loads(line.removeprefix("data: ")))
    return found


def test_job_events_stream_until_final_for_the_owner_only(env: RTIEnv) -> None:
    proc_id = env.deploy("abc")
    job_id = env.submit_abc(proc_id, 1, 2)
    path = f"{API}/rti/job/{job_id}/events"
    with httpx.Client(base_url=env.node.url, timeout=60, trust_env=False) as client:
        headers = sign_request(env.alice, "GET", path, env.node.node.iid)
        with client.stream("GET", path, headers=headers) as response:
            assert response.status_code == 200
            seen = events(response)
        assert seen[-1]["state"] == "successful" and seen[-1]["progress"] == 100
        assert seen[-1]["job"]["id"] == job_id and "c" in seen[-1]["output"]
        assert [s["progress"] for s in seen] == sorted(s["progress"] for s in seen)  # never goes back

        assert client.get(path).status_code == 401  # anonymous
        other = client.get(path, headers=sign_request(env.bob, "GET", path, env.node.node.iid))
        assert other.status_code == 403

        # by dashboard session: the same stream (the job is final: one event, then the end)
        token = LoginToken.create(env.alice, env.node.node.iid).to_string()
        login = client.post(f"{API}/dashboard/login", json={"token": token}, headers={HEADER_CSRF: "x"})
        assert login.status_code == 200
        with client.stream("GET", path) as response:
            assert [s["state"] for s in events(response)] == ["successful"]


def test_events_follow_a_running_job_change_by_change(env: RTIEnv) -> None:
    proc_id = env.deploy("slow")
    with env.rti(env.alice) as rti:
        job = rti.submit_job(
            proc_id,
            [Task.InputValue(name="a", value={"v": 1}), Task.InputValue(name="b", value={"v": 2})],
            [Task.Output(name="c", owner_iid=env.alice.iid)],
            env.alice,
        )
    path = f"{API}/rti/job/{job.id}/events"
    with httpx.Client(base_url=env.node.url, timeout=120, trust_env=False) as client:
        headers = sign_request(env.alice, "GET", path, env.node.node.iid)
        with client.stream("GET", path, headers=headers) as response:
            seen = events(response)
    states = [s["state"] for s in seen]
    assert states[-1] == "successful", seen[-1]
    assert len(seen) >= 3  # a change at a time, not one answer at the end
    assert len({(s["state"], s["progress"], len(s["messages"])) for s in seen}) >= 3


def test_a_session_upload_stores_exactly_the_bytes_sent(env: RTIEnv) -> None:
    content = bytes(range(256)) * 4096  # 1 MiB, several batches
    with httpx.Client(base_url=env.node.url, timeout=60, trust_env=False) as client:
        token = LoginToken.create(env.alice, env.node.node.iid).to_string()
        csrf = client.post(f"{API}/dashboard/login", json={"token": token}, headers={HEADER_CSRF: "x"}).json()["csrf"]
        params = {"owner_iid": env.alice.iid, "data_type": "Blob", "data_format": "bin"}
        meta = client.post(
            f"{API}/dor/add-c",
            content=json.dumps(params).encode() + b"\n" + content,
            headers={HEADER_CSRF: csrf, "content-type": "application/octet-stream"},
        ).json()
        assert meta["c_hash"] == hashlib.sha256(content).hexdigest() and meta["size"] == len(content)
        assert client.get(f"{API}/dor/{meta['obj_id']}/content").content == content


def test_a_session_submits_and_cancels_a_job_with_its_csrf_token(env: RTIEnv) -> None:
    proc_id = env.deploy("slow")
    with httpx.Client(base_url=env.node.url, timeout=60, trust_env=False) as client:
        token = LoginToken.create(env.alice, env.node.node.iid).to_string()
        csrf = client.post(f"{API}/dashboard/login", json={"token": token}, headers={HEADER_CSRF: "x"}).json()["csrf"]
        task = {
            "proc_id": proc_id,
            "user_iid": env.alice.iid,
            "input": [
                {"name": "a", "type": "value", "value": {"v": 60}},
                {"name": "b", "type": "value", "value": {"v": 1}},
            ],
            "output": [{"name": "c", "owner_iid": env.alice.iid}],
        }
        assert client.post(f"{API}/rti/proc/{proc_id}/jobs", json=task).status_code == 401  # no CSRF token
        job = client.post(f"{API}/rti/proc/{proc_id}/jobs", json=task, headers={HEADER_CSRF: csrf}).json()
        assert job["task"]["user_iid"] == env.alice.iid
        assert client.delete(f"{API}/rti/job/{job['id']}").status_code == 401  # a cross-site cancel
        cancelled = client.delete(f"{API}/rti/job/{job['id']}", headers={HEADER_CSRF: csrf})
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["state"] == "cancelled"
