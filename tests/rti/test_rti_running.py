"""Running jobs: failures, cancel (pending and running, no process left), the concurrency limit, logs and follow,
encryption of outputs, restart recovery of an in-process node."""

from __future__ import annotations

import itertools
import json
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest
from rti_support import RTIEnv, adapter_repo, processes_of

from saas.core.errors import AuthorisationError, ConflictError, NotFoundError
from saas.rti.proxy import RTIProxy
from saas.rti.schemas import Job, Task
from tests.waiting import wait_until


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # (ZombieProcess is one too)
        return False


def group_members(pgid: int) -> list[int]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return found


def wait_state(env: RTIEnv, job_id: str, state: str, timeout: float = 20) -> None:
    with env.rti(env.alice) as rti:  # a long poll: the node answers as soon as the state changes
        wait_until(
            lambda: rti.get_job_status(job_id, env.alice, wait=1.0).state == state,
            timeout,
            interval=0,
            what=f"job {job_id} to be {state}",
        )


def test_failing_adapter_fails_with_stderr_tail(env: RTIEnv) -> None:
    proc_id = env.deploy("fail")
    status = env.wait(env.submit_abc(proc_id))
    assert status.state == "failed"
    assert status.errors == ["execute.sh exited with code 3: something went badly wrong"]
    assert status.timeline[-1]["reason"] == status.errors[0]
    assert status.output == {}


def test_forgotten_output_fails(env: RTIEnv) -> None:
    proc_id = env.deploy("forget")
    status = env.wait(env.submit_abc(proc_id))
    assert status.state == "failed"
    assert status.errors == ["Output 'c' was not announced (trigger:output:c)"]
    with env.dor(env.alice) as dor:
        assert dor.search(data_type="JSONObject", owner_iid=env.alice.identity.id) != []  # only the input a
        assert all(o.recipe is None for o in dor.search(data_type="JSONObject"))  # type: ignore[attr-defined]


def test_cancel_running_kills_the_process_group(rti_env_factory) -> None:
    env: RTIEnv = rti_env_factory(retain_job_history=True)
    proc_id = env.deploy("slow")
    job_id = env.submit_abc(proc_id, a=30)
    wd = env.node.node.config.datastore / "rti" / "jobs" / job_id
    wait_until(
        lambda: (wd / "child.pid").is_file() and (wd / "child.pid").read_text(),
        20,
        interval=0.02,
        what="the job's child.pid written",
    )
    processes = processes_of(job_id)  # execute.sh, python and its child (pids of the host, not the sandbox's)
    assert len(processes) >= 3, processes
    with env.rti(env.alice) as rti:
        with pytest.raises(AuthorisationError):
            rti.cancel_job(job_id, env.bob)
        status = rti.cancel_job(job_id, env.alice)
        assert status.state == "cancelled"
        assert status.progress < 100
        with pytest.raises(ConflictError):
            rti.cancel_job(job_id, env.alice)
    # SIGKILL is delivered asynchronously: every process is gone within moments of the cancel returning
    wait_until(lambda: not processes_of(job_id), 2, interval=0.01, what="every process of the job gone")
    assert processes_of(job_id) == []
    assert not any(alive(p) for p in processes)


def test_cancel_pending_and_concurrency_limit(rti_env_factory) -> None:
    env: RTIEnv = rti_env_factory(max_jobs=1)
    proc_id = env.deploy("slow")
    jobs = [env.submit_abc(proc_id, a=0.3) for _ in range(3)]
    pending = env.submit_abc(proc_id, a=30)
    with env.rti(env.alice) as rti:
        assert rti.get_job_status(pending, env.alice).state == "pending"
        status = rti.cancel_job(pending, env.alice)
        assert status.state == "cancelled"
        assert [t["state"] for t in status.timeline] == ["pending", "cancelled"]
    statuses = [env.wait(j) for j in jobs]
    assert [s.state for s in statuses] == ["successful"] * 3
    spans = []
    for s in statuses:
        times = {t["state"]: t["time"] for t in s.timeline}
        spans.append((times["initialising"], times["postprocessing"]))  # the slot: preparing and running
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end  # one at a time, in submission order


def test_logs_download_and_follow(env: RTIEnv, tmp_path: Path) -> None:
    proc_id = env.deploy("slow")
    job_id = env.submit_abc(proc_id, a=0.5)
    lines: list[str] = []

    def follow() -> None:
        with env.rti(env.alice) as rti:
            lines.extend(rti.follow_job_logs(job_id, env.alice))

    thread = threading.Thread(target=follow)
    thread.start()
    thread.join(20)
    assert not thread.is_alive()
    assert env.wait(job_id).state == "successful"
    assert "trigger:output:c" in lines
    assert any(line.startswith("working...") for line in lines)
    with env.rti(env.alice) as rti:
        target = rti.get_job_logs(job_id, env.alice, tmp_path / "logs.tar.gz")
        with tarfile.open(target) as tar:
            names = sorted(tar.getnames())
            stdout = tar.extractfile("execute_stdout.log").read().decode()  # type: ignore[union-attr]
        assert names == ["execute_stderr.log", "execute_stdout.log"]
        assert "trigger:progress:100" in stdout
        with pytest.raises(AuthorisationError):
            rti.get_job_logs(job_id, env.bob, tmp_path / "x.tar.gz")
        # following a finished job returns its lines at once
        assert "trigger:output:c" in list(rti.follow_job_logs(job_id, env.alice))


def test_job_list_and_status_are_the_owners(env: RTIEnv) -> None:
    proc_id = env.deploy("abc")
    job_id = env.submit_abc(proc_id)
    env.wait(job_id)
    with env.rti(env.alice) as rti:
        assert [j.id for j in rti.get_jobs_by_user(env.alice)] == [job_id]
        assert type(rti.get_jobs_by_user(env.alice)[0]) is Job  # a client reading Job ignores the state
        assert [(j.id, j.state) for j in rti.get_jobs_with_states(env.alice)] == [(job_id, "successful")]
        assert rti.get_jobs_with_states(env.bob) == []
        assert rti.get_jobs_by_user(env.bob) == []
        with pytest.raises(AuthorisationError):
            rti.get_job_status(job_id, env.bob)
        with pytest.raises(NotFoundError):
            rti.get_job_status("nosuchjob123", env.alice)


def test_encrypted_restricted_output_and_encrypted_input(env: RTIEnv, tmp_path: Path) -> None:
    from saas.core.keys import random_key

    proc_id = env.deploy("abc")
    key = random_key()
    plain = tmp_path / "a.json"
    plain.write_text(json.dumps({"v": 40}))
    with env.dor(env.alice) as dor:
        a = dor.add_data_object(plain, env.alice.identity, True, True, "JSONObject", "json", content_key=key)
        dor.grant_access(a.obj_id, env.alice, env.owner.identity, env.owner.identity.wrap_key(key))
    with env.rti(env.alice) as rti:
        job = rti.submit_job(
            proc_id,
            [Task.InputReference(name="a", obj_id=a.obj_id), Task.InputValue(name="b", value={"v": 2})],
            [Task.Output(name="c", owner_iid=env.alice.identity.id, restricted_access=True, content_encrypted=True)],
            env.alice,
        )
        status = rti.wait_for_job(job.id, env.alice, timeout=30)
    assert status.state == "successful", status
    c = status.output["c"]
    assert c.access_restricted and c.content_encrypted
    assert env.dor().get_meta(c.obj_id) is None  # restricted
    with env.dor(env.alice) as dor:
        c_key = env.alice.unwrap_key(dor.get_envelope(c.obj_id, env.alice))
        target = dor.get_content(c.obj_id, env.alice, tmp_path / "c.json", content_key=c_key)
    assert json.loads(target.read_text()) == {"v": 42}


def test_restart_fails_running_job_and_keeps_finished(rti_env_factory) -> None:
    env: RTIEnv = rti_env_factory()
    proc_id = env.deploy("slow")
    done = env.submit_abc(proc_id, a=0.1)
    assert env.wait(done).state == "successful"
    running = env.submit_abc(proc_id, a=30)
    wait_state(env, running, "running")
    env.restart()
    with env.rti(env.alice) as rti:
        status = rti.get_job_status(running, env.alice)
        assert status.state == "failed"
        assert status.errors == ["node restarted"]
        assert rti.get_job_status(done, env.alice).state == "successful"
        assert rti.get_status(proc_id).state == "ready"  # processors survive a restart
    assert env.wait(env.submit_abc(proc_id, a=0.1)).state == "successful"


def test_postprocessing_resumes_after_restart_without_duplicates(env: RTIEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node stops after an output reached the DOR but before the board recorded it: after the restart,
    postprocessing resumes and stores the same object again, which the DOR recognises — one object, not two."""
    import asyncio

    from saas.dor.service import LocalAdds

    real = LocalAdds.record
    stored = threading.Event()

    async def store_then_hang(*args, **kwargs):
        result = await real(*args, **kwargs)
        stored.set()
        await asyncio.Event().wait()  # "crash" before the board records the obj_id
        return result

    monkeypatch.setattr(LocalAdds, "record", store_then_hang)
    proc_id = env.deploy("abc")
    job_id = env.submit_abc(proc_id, 20, 22)
    assert stored.wait(20)
    with env.rti(env.alice) as rti:
        assert rti.get_job_status(job_id, env.alice).state == "postprocessing"
    monkeypatch.undo()
    env.restart()
    status = env.wait(job_id)
    assert status.state == "successful", status
    assert [t["state"] for t in status.timeline][-2:] == ["postprocessing", "successful"]
    with env.dor(env.alice) as dor:
        produced = [o for o in dor.search(data_type="JSONObject", limit=1000) if o.recipe]  # type: ignore[attr-defined]
    assert [o.obj_id for o in produced] == [status.output["c"].obj_id]


def test_restartable_job_is_requeued_after_restart(env: RTIEnv) -> None:
    from rti_support import EXAMPLES, adapter_repo

    descriptor = json.loads((EXAMPLES / "slow" / "descriptor.json").read_text())
    descriptor["restartable"] = True
    repo, commit = adapter_repo(
        env.tmp / "restartable-repo", "slow", extra={"slow/descriptor.json": json.dumps(descriptor)}
    )
    proc_id = env.deploy("slow", repo=repo, commit=commit)
    job_id = env.submit_abc(proc_id, a=1.5, b=2)
    wait_state(env, job_id, "running")
    env.restart()
    status = env.wait(job_id)
    assert status.state == "successful", status
    states = [t["state"] for t in status.timeline]
    assert states[:3] == ["pending", "initialising", "running"]
    assert "node restarted: re-queued" in [t["reason"] for t in status.timeline]
    assert states[-1] == "successful" and states.count("running") == 2


def test_output_that_is_a_symlink_to_node_files_fails(env: RTIEnv) -> None:
    """An adapter must not smuggle a file of the node (here its keystore) out as an output through a symlink."""
    keystore = env.owner.path
    script = f'#!/bin/bash\nln -s {keystore} "$2/c"\necho trigger:output:c\n'
    repo, commit = adapter_repo(env.tmp / "symlink-repo", "abc", extra={"abc/execute.sh": script})
    proc_id = env.deploy("abc", repo=repo, commit=commit)
    status = env.wait(env.submit_abc(proc_id))
    assert status.state == "failed"
    assert status.errors == ["Output 'c': Invalid input/output name 'c': a symbolic link"]
    with env.dor(env.alice) as dor:
        assert all(o.recipe is None for o in dor.search(data_type="JSONObject"))  # type: ignore[attr-defined]


def test_job_list_from_a_node_of_an_earlier_release(env: RTIEnv) -> None:
    """A node of an earlier release lists jobs without their states: the client asks each job's status instead (a
    stand-in server replays that node's answers)."""
    proc_id = env.deploy("abc")
    job_id = env.submit_abc(proc_id)
    env.wait(job_id)
    with env.rti(env.alice) as rti:
        listed = rti.get_json("/rti/job", signer=env.alice)
        status = rti.get_json(f"/rti/job/{job_id}/status", signer=env.alice)
        node_iid = rti.node_iid
    for item in listed:
        del item["state"]
    answers = {"/api/v1/rti/job": listed, f"/api/v1/rti/job/{job_id}/status": status}
    asked: list[str] = []

    class Earlier(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps(answers[self.path.split("?")[0]]).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Earlier)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with RTIProxy(("127.0.0.1", server.server_address[1]), env.alice, node_iid=node_iid) as old:
            assert [(j.id, j.state) for j in old.get_jobs_with_states(env.alice)] == [(job_id, "successful")]
        assert asked == ["/api/v1/rti/job", f"/api/v1/rti/job/{job_id}/status"]
    finally:
        server.shutdown()
        server.server_close()
