"""`AgentPool` on its own (no node): real instance processes from small agents written into tmp_path. The paths a
node-level test cannot time: an instance that goes down while leased, a graceful stop through stdin, the start-up
timeout, and giving up on instances that keep failing to restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from saas.rti.agents import AgentPool
from saas.rti.deploy import DeploymentError
from saas.rti.runner import JobFailedError
from tests import waiting

pytestmark = pytest.mark.slow

AGENT = """
import json, os, sys
folder = sys.argv[1]
if os.path.exists(os.path.join(folder, "..", "refuse-restart")) and os.path.exists(os.path.join(folder, "started")):
    sys.exit(7)
open(os.path.join(folder, "started"), "w").close()
print("trigger:ready", flush=True)
for line in sys.stdin:
    job = json.loads(line)
    print("working on", job["job_id"], flush=True)
    print("trigger:done", flush=True)
open(os.path.join(folder, "bye"), "w").close()  # stdin closed: a graceful end
"""


def make_adapter(tmp_path: Path, body: str = AGENT) -> Path:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "agent.py").write_text(body)
    (adapter / "execute.sh").write_text(f'#!/bin/bash\nexec {sys.executable} agent.py "$2"\n')
    return adapter


def pool_for(tmp_path: Path, **kwargs: object) -> AgentPool:
    root = tmp_path / "pool"
    root.mkdir(exist_ok=True)
    body = str(kwargs.pop("body", AGENT))
    kwargs.setdefault("sandbox", None)  # the pool's own mechanics (the sandbox is tested with the RTI)
    return AgentPool(tmp_path.name, make_adapter(tmp_path, body), "default", root, **kwargs)  # type: ignore[arg-type]


def job_folder(tmp_path: Path, job_id: str) -> Path:
    wd = tmp_path / "jobs" / job_id
    wd.mkdir(parents=True)
    return wd


async def run_one(pool: AgentPool, tmp_path: Path, job_id: str) -> None:
    async def on_start(index: int) -> None:
        pass

    lease = await pool.acquire()
    wd = job_folder(tmp_path, job_id)
    await pool.run_job(lease, job_id, wd, tmp_path / "logs" / job_id, lambda line: None, on_start)


async def until(check: Callable[[], object], timeout: float = 20) -> None:
    await waiting.until(check, timeout, interval=0.02)


def pgids(pool: AgentPool) -> list[int]:
    return [int(p) for p in json.loads((pool.root / "pids.json").read_text()).values()]


def instance_processes(pool: AgentPool) -> list[int]:
    """Live processes started for this pool (their environment carries its marker)."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            marker = p.environ().get("SAAS_JOB_ID", "")
            if marker.startswith(f"agent-{pool.name}-") and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def group_alive(pgid: int) -> bool:
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return False


def test_instance_lost_while_leased_and_graceful_stop(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = pool_for(tmp_path, instances=1)
        await pool.start()
        lease = await pool.acquire()
        first = pgids(pool)[0]
        os.killpg(first, signal.SIGKILL)  # goes down (and is restarted) while the job is being prepared
        await until(lambda: pool.status()[0].restarts == 1)

        async def on_start(index: int) -> None:
            pass

        wd = job_folder(tmp_path, "job-1")
        await pool.run_job(lease, "job-1", wd, tmp_path / "logs" / "job-1", lambda line: None, on_start)
        assert wd.is_dir()  # given back once the job ended
        status = pool.status(show_jobs=True)[0]
        assert (status.state, status.restarts, status.jobs_served) == ("idle", 1, 1)
        assert "working on job-1" in (tmp_path / "logs" / "job-1" / "execute_stdout.log").read_text()
        second = pgids(pool)[0]
        assert second != first and len(instance_processes(pool)) == 1
        await pool.stop()
        assert (pool.root / "instance-0" / "bye").exists()  # stdin closed: it ended by itself
        assert not group_alive(second) and pool.status()[0].state == "stopped"
        assert instance_processes(pool) == []
        with pytest.raises(JobFailedError):
            await pool.acquire()

    asyncio.run(scenario())


def test_startup_timeout_fails_and_leaves_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = pool_for(
            tmp_path, instances=2, startup_timeout=0.5, body="import time\nprint('loading')\ntime.sleep(60)\n"
        )
        with pytest.raises(DeploymentError) as e:
            await pool.start()
        assert e.value.reason.endswith("did not print trigger:ready within 0.5 s")
        assert "loading" in e.value.details["log_tail"]
        assert instance_processes(pool) == []

    asyncio.run(scenario())


def test_gives_up_on_an_instance_that_cannot_restart(tmp_path: Path) -> None:
    broken: list[str] = []

    async def scenario() -> None:
        pool = pool_for(tmp_path, instances=1)
        pool._on_broken = lambda reason, tail: broken.append(reason)
        await pool.start()
        await run_one(pool, tmp_path, "job-1")
        (pool.root / "refuse-restart").touch()
        os.killpg(pgids(pool)[0], signal.SIGKILL)
        await until(lambda: pool.status()[0].state != "idle")
        with pytest.raises(JobFailedError) as e:  # waits, then learns that no instance is left
            await asyncio.wait_for(run_one(pool, tmp_path, "job-2"), 30)
        assert e.value.reason.startswith("Every instance of the agent failed to restart: Agent instance 0 exited")
        status = pool.status()[0]
        assert status.state == "failed" and status.error is not None
        await pool.stop()

    asyncio.run(scenario())
    assert len(broken) == 1


def test_places_are_given_round_robin_between_users(tmp_path: Path) -> None:
    """One user's many waiting jobs do not hold back another user's job: places go to the users in turn."""

    async def scenario() -> None:
        pool = pool_for(tmp_path, instances=1)  # two places (not started: admission alone)
        held = [await pool.acquire("alice"), await pool.acquire("alice")]
        admitted: list[str] = []

        async def wait(user: str, n: int) -> None:
            lease = await pool.acquire(user)
            admitted.append(f"{user}{n}")
            held.append(lease)

        waiting = [asyncio.create_task(wait("alice", n)) for n in range(5)]
        await asyncio.sleep(0)
        waiting.append(asyncio.create_task(wait("bob", 0)))
        cancelled = asyncio.create_task(wait("carol", 0))
        await asyncio.sleep(0)
        cancelled.cancel()  # a waiter that gives up loses its place and takes none
        for _ in range(6):
            held.pop(0).release()
            await asyncio.sleep(0)
        await asyncio.gather(*waiting)
        assert admitted == ["alice0", "bob0", "alice1", "alice2", "alice3", "alice4"]
        assert pool._places == 0

    asyncio.run(scenario())


def test_a_stray_trigger_done_does_not_end_the_next_job(tmp_path: Path) -> None:
    """An agent that prints one trigger:done too many (late) while the next job's start is still being recorded:
    the next job is not taken as done before the agent even had it."""
    body = AGENT.replace(
        'print("trigger:done", flush=True)',
        'print("trigger:done", flush=True)\n    time.sleep(0.1)\n    print("trigger:done", flush=True)',
    ).replace("import json, os, sys", "import json, os, sys, time")

    async def scenario() -> None:
        pool = pool_for(tmp_path, instances=1, body=body)
        await pool.start()
        await run_one(pool, tmp_path, "job-1")

        async def slow_start(index: int) -> None:
            await asyncio.sleep(0.5)  # the stray line arrives meanwhile

        lease = await pool.acquire()
        wd = job_folder(tmp_path, "job-2")
        await pool.run_job(lease, "job-2", wd, tmp_path / "logs" / "job-2", lambda line: None, slow_start)
        assert "working on job-2" in (tmp_path / "logs" / "job-2" / "execute_stdout.log").read_text()
        await pool.stop()

    asyncio.run(scenario())


def test_stop_while_starting_ends_the_start_and_leaves_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        pool = pool_for(tmp_path, instances=2)
        starting = asyncio.create_task(pool.start())
        await asyncio.sleep(0)  # `start()` is preparing the folders
        await pool.stop()
        with pytest.raises(DeploymentError) as e:
            await asyncio.wait_for(starting, 10)
        assert e.value.reason == "the agent was stopped"
        assert instance_processes(pool) == [] and [i.state for i in pool.status()] == ["stopped", "stopped"]

    asyncio.run(scenario())


def test_a_restart_that_cannot_spawn_is_retried(tmp_path: Path) -> None:
    """The adapter's folder is gone for a moment when the instance is restarted (spawning fails): it is tried again
    (with backoff) and the instance comes back."""

    async def scenario() -> None:
        pool = pool_for(tmp_path, instances=1)
        await pool.start()
        adapter, away = pool.adapter, tmp_path / "away"
        adapter.rename(away)
        os.killpg(pgids(pool)[0], signal.SIGKILL)
        await until(lambda: pool._state.instances[0].failures >= 3)  # the crash, then two spawns that failed
        assert pool.status()[0].state in ("restarting", "starting")
        away.rename(adapter)
        await until(lambda: pool.status()[0].state == "idle")
        assert pool.status()[0].restarts == 1
        await run_one(pool, tmp_path, "job-1")
        await pool.stop()

    asyncio.run(scenario())
