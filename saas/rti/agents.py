"""Agents: long-lived adapters that take many jobs (DESIGN §8). `AgentPool` owns the instances of one agent.

Each instance is `execute.sh <config> <agent dir>` in its own process group. What callers may rely on:
- `start()` returns once every instance printed `trigger:ready`, or raises `DeploymentError` (with the log tail)
  after stopping whatever it started (also when `stop()` is called meanwhile).
- `acquire(user)` admits a job (round robin between users, each user's in arrival order: `FairQueue`;
  `ADMITTED_PER_INSTANCE` jobs per instance are admitted at once, so the next inputs are ready when an instance frees
  up) and returns a `Lease`. `run_job(lease, ...)` waits for a
  free instance (in arrival order), sends the job as one JSON line on stdin (`{"job_id", "wd"}`) and returns when
  the instance printed `trigger:done`. It raises `JobFailedError` on `trigger:error:<text>`, when the instance
  exits, or when the per-job timeout passes. The lease is given back when the job ends (or with `Lease.release()`
  if it was never used).
- An instance that exits, overruns the per-job timeout or whose job is cancelled is killed (its whole process group)
  and restarted: at once after a cancel or timeout, with exponential backoff after a crash. An instance that fails
  to start `MAX_START_FAILURES` times in a row is given up; when none is left the pool is broken (`on_broken`).
- `stop()` closes each instance's stdin, then sends SIGTERM, then SIGKILL to its group; no process is left. The
  process group ids are kept in `pids.json` so a restarted node kills what a crashed one left behind.

What happens when is decided by the pure machine in `agent_state.py`; this module does the process I/O it asks
for and feeds it what the processes, timers and callers do. Lines an instance writes go to its own logs
(`instance-<i>.stdout.log` / `.stderr.log`, rotated at 10 MiB); while it holds a job they also go to the job's log
files, and are parsed there for triggers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from saas.rti import agent_events as machine
from saas.rti import process as processes
from saas.rti.agent_events import READY, parse_trigger_line
from saas.rti.agent_files import InstanceLog, PoolFiles, open_job_logs
from saas.rti.agent_state import AgentState
from saas.rti.cgroups import Limits
from saas.rti.deploy import DeploymentError
from saas.rti.process import AdapterProcess
from saas.rti.runner import JobFailedError
from saas.rti.sandbox import Sandbox
from saas.rti.scheduler import FairQueue
from saas.rti.schemas import AgentInstance

__all__ = ["AgentPool", "Lease", "open_job_logs"]

STARTUP_TIMEOUT = 60.0
STOP_GRACE = 2.0
ADMITTED_PER_INSTANCE = 2


@dataclass(eq=False)
class _Job:
    """What the runner holds of a job the machine knows by its key: the caller's callbacks, files and future."""

    job_id: str
    wd: Path  # the job's working folder (moved into the instance's `jobs` folder while the instance has it)
    on_line: Callable[[str], None]
    on_start: Callable[[int], Awaitable[None]]
    logs: tuple[BinaryIO, BinaryIO]  # the job's stdout and stderr log files
    result: asyncio.Future[None]
    moved: Path | None = None  # where the working folder is while the instance has it
    failure: BaseException | None = None  # recording its start raised this (handed to the caller as is)
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Run:
    """One run (process) of an instance."""

    generation: int
    process: AdapterProcess
    logs: list[InstanceLog]
    exited: asyncio.Task[None] | None = None
    err_tail: bytes = b""


class Lease:
    """One of the pool's places for jobs being prepared or run (`ADMITTED_PER_INSTANCE` per instance), so the next
    jobs' inputs are ready when an instance frees up while the rest stay pending. `release()` gives it back
    (idempotent); `run_job` consumes it."""

    def __init__(self, pool: AgentPool):
        self._pool: AgentPool | None = pool

    def _take(self) -> AgentPool:
        if self._pool is None:
            raise RuntimeError("lease already used")
        pool, self._pool = self._pool, None
        return pool

    def release(self) -> None:
        if self._pool is not None:
            self._take()._return_place()


class AgentPool:
    def __init__(
        self,
        name: str,
        adapter: Path,
        config: str,
        root: Path,
        instances: int = 1,
        job_timeout: float | None = None,
        startup_timeout: float | None = None,
        on_broken: Callable[[str, str], None] | None = None,
        *,
        sandbox: Sandbox | None,
        limits: Limits | None = None,
        network: bool = True,
        visible: Path | None = None,
    ):
        """`sandbox` None only for a developer's own agent on their machine (`saas-cli adapter test`); `visible` is
        the folder around the adapter that instances see (read-only); `limits` hold for each instance."""
        self.name = name
        self.sandbox = sandbox
        self.limits = limits or Limits()
        self.network = network
        self.visible = visible or adapter
        self.adapter = adapter
        self.config = config
        self.root = root
        self.job_timeout = job_timeout
        self.startup_timeout = startup_timeout or STARTUP_TIMEOUT
        self._on_broken = on_broken
        self._state = AgentState(instances, job_timeout)
        self._runs: list[_Run | None] = [None] * instances
        self._jobs: dict[int, _Job] = {}
        self._keys = itertools.count()
        self._events: collections.deque[machine.Event] = collections.deque()
        self._handling = False
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[Any]] = set()  # spawns and pid saves
        self._started: asyncio.Future[tuple[str | None, int | None]] | None = None
        self._places = ADMITTED_PER_INSTANCE * instances
        self._place_waiters: FairQueue[asyncio.Future[None]] = FairQueue()
        self._files = PoolFiles(root, name)

    @property
    def broken(self) -> str | None:
        """Why the pool takes no more jobs (no instance left, or stopped), else None."""
        return self._state.broken

    # -- the machine --------------------------------------------------------------------------------------------

    def _feed(self, event: machine.Event) -> None:
        """Apply `event` and carry out the instructions; events fed meanwhile (by an instruction) queue up."""
        self._events.append(event)
        if self._handling:
            return
        self._handling = True
        try:
            while self._events:
                for instruction in self._state.handle(self._events.popleft()):
                    self._do(instruction)
        finally:
            self._handling = False

    def _do(self, instruction: machine.Instruction) -> None:
        match instruction:
            case machine.Spawn(index, generation):
                self._task(self._spawn(index, generation))
            case machine.SavePids():
                self._task(asyncio.to_thread(self._files.save_pids, self._pids))
            case machine.StartStartupTimer(index, generation):
                reason = f"Agent instance {index} did not print {READY} within {self.startup_timeout:g} s"
                self._later(self.startup_timeout, machine.StartupTimedOut(index, generation, reason))
            case machine.Backoff(index, generation, delay):
                self._later(delay, machine.BackoffOver(index, generation))
            case machine.Kill(index, generation):
                run = self._runs[index]
                if run is not None and run.generation == generation:
                    run.process.kill_now()
            case machine.RecordStart(key, index):
                self._record_start(key, index)
            case machine.Send(key, index, generation):
                self._send(key, index, generation)
            case machine.StartJobTimer(key):
                job = self._jobs.get(key)
                if job is not None and self.job_timeout is not None:
                    reason = f"The agent did not finish the job within {self.job_timeout:g} s (instance restarted)"
                    event = machine.TimedOut(key, reason)
                    job.timer = asyncio.get_running_loop().call_later(self.job_timeout, self._feed, event)
            case machine.Settle(key, error):
                self._settle(key, error)
            case machine.StartDone(error, index):
                if self._started is not None and not self._started.done():
                    self._started.set_result((error, index))
            case machine.Broken(reason, notify):
                while (waiter := self._place_waiters.pop()) is not None:
                    if not waiter.done():
                        waiter.set_exception(JobFailedError(reason))
                if notify and self._on_broken is not None:
                    failed = [i.index for i in self._state.instances if i.state == "failed"]
                    self._on_broken(reason, "\n".join(self._files.log_tail(i) for i in failed))

    def _task(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _later(self, delay: float, event: machine.Event) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            self._feed(event)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every instance and wait until each printed `trigger:ready`."""
        await asyncio.to_thread(self._files.prepare, len(self._runs), self.sandbox)
        self._started = asyncio.get_running_loop().create_future()
        try:
            self._feed(machine.Start())
            error, index = await self._started
        except BaseException:
            await self.stop()
            raise
        if error is not None:
            log_tail = self._files.log_tail(index) if index is not None else ""
            await self.stop()
            raise DeploymentError(error, {"log_tail": log_tail})

    def prepare_stop(self) -> None:
        """From now on nothing is restarted (the node is stopping); `stop()` follows."""
        self._feed(machine.Closing())

    async def stop(self) -> None:
        """Stop every instance: stdin closed, then SIGTERM, then SIGKILL (per process group). Idempotent."""
        self._feed(machine.Stop())
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        while self._tasks:  # a spawn under way ends with its process, which is stopped below
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(self._stop_run(run) for run in self._runs if run is not None))
        await asyncio.to_thread(self._files.remove_pids)

    async def _stop_run(self, run: _Run) -> None:
        process = run.process
        if process.returncode is None:
            if process.stdin is not None:
                process.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), STOP_GRACE)
        await process.stop(STOP_GRACE)
        await process.close()  # whatever the agent left behind
        if run.exited is not None:
            await asyncio.wait({run.exited})

    # -- status -------------------------------------------------------------------------------------------------

    def status(self, show_jobs: bool = False) -> list[AgentInstance]:
        return [
            AgentInstance(
                index=i.index,
                state=self._state.shown_state(i),
                job_id=i.job.job_id if i.job is not None and show_jobs else None,
                jobs_served=i.served,
                restarts=i.restarts,
                error=i.error,
            )
            for i in self._state.instances
        ]

    # -- jobs ---------------------------------------------------------------------------------------------------

    async def acquire(self, user: str = "") -> Lease:
        """Wait for a place (round robin between users, first come, first served for each): then prepare the job's
        inputs and call `run_job`."""
        if self.broken is not None:
            raise JobFailedError(self.broken)
        if self._places > 0 and not self._place_waiters:
            self._places -= 1
            return Lease(self)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._place_waiters.push(user, waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            handed = waiter.done() and not waiter.cancelled() and waiter.exception() is None
            if not self._place_waiters.remove(user, waiter) and handed:
                self._return_place()  # handed over just as we were cancelled
            raise
        return Lease(self)

    def _return_place(self) -> None:
        while self._place_waiters:
            waiter = self._place_waiters.pop()
            assert waiter is not None
            if not waiter.done():
                waiter.set_result(None)
                return
        self._places += 1

    async def run_job(
        self,
        lease: Lease,
        job_id: str,
        wd: Path,
        logs: Path,
        on_line: Callable[[str], None],
        on_start: Callable[[int], Awaitable[None]],
        files: tuple[BinaryIO, BinaryIO] | None = None,
    ) -> None:
        """Wait for a free instance and run the job on it: returns on `trigger:done`, raises `JobFailedError`
        otherwise. Consumes the lease, and the job's log `files` when given (`open_job_logs(logs)`; else they are
        opened here). `on_start(index)` records that the job goes to instance `index`; the instance gets the job
        once it completed."""
        lease._take()
        job: _Job | None = None
        key = next(self._keys)
        reason = "The job ended abnormally (instance restarted)"
        try:
            if files is None:
                files = await asyncio.to_thread(open_job_logs, logs)
            if self.broken is not None:
                raise JobFailedError(self.broken)
            job = self._jobs[key] = _Job(
                job_id, wd, on_line, on_start, files, asyncio.get_running_loop().create_future()
            )
            self._feed(machine.Submitted(key, job_id))
            await asyncio.shield(job.result)
        except asyncio.CancelledError:
            reason = "The job was cancelled (instance restarted)"
            raise
        finally:
            self._return_place()
            if job is not None:
                try:
                    self._feed(machine.Ended(key, reason))  # an instance still working on it is killed
                finally:
                    self._jobs.pop(key, None)
                    if job.moved is not None:  # back where the RTI finds its outputs
                        with contextlib.suppress(OSError):
                            os.rename(job.moved, job.wd)
                    with contextlib.suppress(BaseException):  # retrieved: nobody else waits for it
                        job.result.result()
            for file in files or ():
                file.close()

    def _record_start(self, key: int, index: int) -> None:
        """Record the job's start; the machine learns when that is done. Done in callbacks, not in the jobs' own
        tasks, so an instance that answered gets its next job at once."""
        job = self._jobs.get(key)
        if job is None:  # its caller is gone: the machine frees the instance
            self._feed(machine.StartRecorded(key))
            return
        recorded: asyncio.Future[None]
        try:
            recorded = asyncio.ensure_future(job.on_start(index))
        except Exception as e:  # handed to the job's caller
            recorded = asyncio.get_running_loop().create_future()
            recorded.set_exception(e)
        recorded.add_done_callback(functools.partial(self._recorded, key))

    def _recorded(self, key: int, recorded: asyncio.Future[None]) -> None:
        error = None
        if recorded.cancelled():
            error = "Recording the job's start failed"
        elif (failure := recorded.exception()) is not None:
            error = str(failure) or type(failure).__name__
            job = self._jobs.get(key)
            if job is not None:
                job.failure = failure
        self._feed(machine.StartRecorded(key, error))

    def _send(self, key: int, index: int, generation: int) -> None:
        """Hand the job's folder to the instance and write its line (a restart never sends it again)."""
        job, run = self._jobs[key], self._runs[index]
        assert run is not None and run.generation == generation
        process = run.process
        if process.returncode is not None or process.stdin is None:
            return  # going down: its exit settles the job
        wd = self._files.folder(index) / "jobs" / job.job_id
        try:
            os.rename(job.wd, wd)  # the instance sees its own `jobs` folder only
        except OSError as e:
            reason = f"The job's folder could not be handed to the agent instance: {e.strerror}"
            self._feed(machine.SendFailed(key, reason))
            return
        job.moved = wd
        with contextlib.suppress(ConnectionError):  # it is going down: its exit settles the job
            process.stdin.write((json.dumps({"job_id": job.job_id, "wd": str(wd)}) + "\n").encode())

    def _settle(self, key: int, error: str | None) -> None:
        job = self._jobs.get(key)
        if job is None or job.result.done():
            return
        if job.timer is not None:
            job.timer.cancel()
        if error is None:
            job.result.set_result(None)
        else:
            job.result.set_exception(job.failure or JobFailedError(error))

    def _pids(self) -> dict[int, int]:
        return {i: run.process.pid for i, run in enumerate(self._runs) if run is not None}

    # -- instances ----------------------------------------------------------------------------------------------

    async def _spawn(self, index: int, generation: int) -> None:
        """Start run `generation` of instance `index`; the machine learns of it (`Spawned` or `SpawnFailed`)."""
        env = processes.child_env(self.visible, {"SAAS_JOB_ID": self._files.marker(index)})  # finds leftovers
        logs: list[InstanceLog] = []
        try:
            logs = await asyncio.to_thread(self._files.open_logs, index)
            process = await processes.spawn(
                self.sandbox,
                ["bash", "execute.sh", self.config, str(self._files.folder(index))],
                cwd=self.adapter,
                name=self._files.marker(index),
                ro=[self.visible],
                rw=[self._files.folder(index)],
                network=self.network,
                limits=self.limits,
                env=env,
                stdin=asyncio.subprocess.PIPE,
            )
        except Exception as e:
            for log in logs:
                log.close()
            self._feed(machine.SpawnFailed(index, generation, f"Agent instance {index} could not be started: {e}"))
            return
        run = self._runs[index] = _Run(generation, process, logs)
        run.exited = asyncio.create_task(self._watch(index, run))
        self._feed(machine.Spawned(index, generation))

    async def _watch(self, index: int, run: _Run) -> None:
        """Pump the run's output until it exits, then tell the machine."""
        process = run.process
        assert process.stdout is not None and process.stderr is not None
        readers: asyncio.Future[Any] = asyncio.gather(
            processes.pump(process.stdout, None, None, functools.partial(self._output, index, run, 0)),
            processes.pump(process.stderr, None, None, functools.partial(self._output, index, run, 1)),
            return_exceptions=True,
        )
        exit_code = asyncio.ensure_future(process.wait())
        await asyncio.wait({readers, exit_code}, return_when=asyncio.FIRST_COMPLETED)
        process.kill_now()  # an instance that closed its stdout cannot report any more
        await readers
        code = await exit_code
        exceeded = await process.close()  # every process it started
        for log in run.logs:
            log.close()
        if exceeded is not None:
            reason = f"Agent instance {index} was stopped: {exceeded}"
        else:
            text = run.err_tail.decode("utf-8", "replace").strip()
            reason = f"Agent instance {index} exited with code {code}" + (f": {text[-500:]}" if text else "")
        self._feed(machine.Exited(index, run.generation, code, reason))

    def _output(self, index: int, run: _Run, which: int, line: bytes) -> None:
        """One line of an instance's stdout (`which` 0) or stderr (1): logged, and handled while it holds a job."""
        run.logs[which].write(line)
        holder = self._state.holder(index, run.generation)
        job = self._jobs.get(holder.key) if holder is not None else None
        if job is not None:
            job.logs[which].write(line)
        else:
            run.logs[which].flush()
        if which:
            run.err_tail = (run.err_tail + line)[-2000:]
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if which == 0 and text.startswith("trigger:") and (trigger := parse_trigger_line(text)) is not None:
            kind, error = trigger
            if kind == "ready":
                self._feed(machine.Ready(index, run.generation))
                return
            if job is not None:
                for log in run.logs:
                    log.flush()
                self._feed(machine.Answered(index, run.generation, error))
                return
        if job is not None:
            job.on_line(text)
