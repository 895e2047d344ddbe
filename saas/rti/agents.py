"""Agents: long-lived adapters that take many jobs (DESIGN §8). `AgentPool` owns the instances of one agent.

Each instance is `execute.sh <config> <agent dir>` in its own process group. What callers may rely on:
- `start()` returns once every instance printed `trigger:ready`, or raises `DeploymentError` (with the log tail)
  after stopping whatever it started.
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

Lines an instance writes go to its own logs (`instance-<i>.stdout.log` / `.stderr.log`, rotated at 10 MiB); while it
holds a job they also go to the job's log files, and are parsed there for triggers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import os
import shutil
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from saas.rti import process as processes
from saas.rti.cgroups import Limits
from saas.rti.deploy import DeploymentError, tail
from saas.rti.process import AdapterProcess
from saas.rti.runner import STDERR_LOG, STDOUT_LOG, JobFailedError
from saas.rti.sandbox import Sandbox
from saas.rti.scheduler import FairQueue
from saas.rti.schemas import AgentInstance

__all__ = ["AgentPool", "Lease", "open_job_logs"]

READY = "trigger:ready"
DONE = "trigger:done"
ERROR = "trigger:error:"
STARTUP_TIMEOUT = 60.0
STOP_GRACE = 2.0
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 10.0
MAX_START_FAILURES = 5
ADMITTED_PER_INSTANCE = 2
LOG_LIMIT = 10 * 2**20


class _StartFailedError(Exception):
    pass


class _Log:
    """An append-only log file written line by line from the event loop, moved to `<name>.1` once it passes
    `LOG_LIMIT`. Buffered: the pool flushes it whenever the instance is between jobs (the job's own log files,
    which callers follow live, are written at once)."""

    def __init__(self, path: Path):
        self.path = path
        self._file: BinaryIO = open(path, "ab")  # noqa: SIM115 (closed by close())
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._size += len(data)
        if self._size > LOG_LIMIT:
            self._file.close()
            os.replace(self.path, self.path.with_name(self.path.name + ".1"))
            self._file = open(self.path, "ab")  # noqa: SIM115
            self._size = 0

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@dataclass(eq=False)
class _Assignment:
    """A job on its way through the pool: queued, then given an instance (its start being recorded), then sent,
    then answered (trigger:done / trigger:error), lost (the instance went down) or ended by its caller."""

    job_id: str
    wd: Path  # the job's working folder (moved into the instance's `jobs` folder while the instance has it)
    on_line: Callable[[str], None]
    on_start: Callable[[int], Awaitable[None]]
    logs: tuple[BinaryIO, BinaryIO]  # the job's stdout and stderr log files
    result: asyncio.Future[None]
    instance: _Instance | None = None
    moved: Path | None = None  # where the working folder is while the instance has it
    generation: int = 0
    started: bool = False  # its start was recorded (or failed to be)
    sent: bool = False  # the instance has the job line
    answered: bool = False  # trigger:done or trigger:error
    lost: bool = False  # the instance died or was killed holding it: its supervisor restarts it
    abandoned: bool = False  # its caller is done with it (cancelled, failed or answered)
    kill_reason: str | None = None  # why the instance must go (a timeout)
    timer: asyncio.TimerHandle | None = None

    def settle(self, error: str | None = None, lost: bool = False, answered: bool = False) -> None:
        if self.result.done():
            return
        self.lost, self.answered = lost, answered
        if self.timer is not None:
            self.timer.cancel()
        if error is None:
            self.result.set_result(None)
        else:
            self.result.set_exception(JobFailedError(error))


@dataclass(eq=False)
class _Instance:
    index: int
    folder: Path
    state: str = "starting"  # starting | idle | busy | restarting | failed | stopped
    process: AdapterProcess | None = None
    exited: asyncio.Task[int] | None = None
    ready: asyncio.Future[None] | None = None
    job: _Assignment | None = None
    served: int = 0
    restarts: int = 0
    generation: int = 0  # counts the runs (spawns): a lease holds one run
    failures: int = 0  # crashes and failed starts in a row (drives the backoff)
    kill_reason: str | None = None
    error: str | None = None
    err_tail: bytes = b""
    logs: list[_Log] = field(default_factory=list)


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
        self._instances = [_Instance(i, root / f"instance-{i}") for i in range(instances)]
        self._idle: collections.deque[_Instance] = collections.deque()
        self._queue: collections.deque[_Assignment] = collections.deque()  # jobs waiting for an instance
        self._places = ADMITTED_PER_INSTANCE * instances
        self._place_waiters: FairQueue[asyncio.Future[None]] = FairQueue()
        self._supervisors: list[asyncio.Task[None]] = []
        self._closing = False
        self._pids_lock = threading.Lock()
        self.broken: str | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every instance and wait until each printed `trigger:ready`."""
        await asyncio.to_thread(self._prepare)
        try:
            results = await asyncio.gather(*(self._spawn(i) for i in self._instances), return_exceptions=True)
            for instance, result in zip(self._instances, results, strict=True):
                if isinstance(result, BaseException):
                    if isinstance(result, _StartFailedError):
                        instance.state, instance.error = "failed", str(result)
                        raise DeploymentError(str(result), {"log_tail": self._log_tail(instance)})
                    raise result
        except BaseException as e:
            self._break(getattr(e, "reason", None) or "The agent could not be started", notify=False)
            await self.stop()
            raise
        for instance in self._instances:
            self._supervisors.append(asyncio.create_task(self._supervise(instance)))
            self._release(instance)

    def _prepare(self) -> None:
        """Kill what a crashed node left behind, then make the instance folders. Blocks."""
        pids = self.root / "pids.json"
        with contextlib.suppress(OSError, ValueError):
            for index, pgid in json.loads(pids.read_text()).items():
                processes.kill_leftover(int(pgid), self._marker(int(index)))
        for instance in self._instances:
            jobs = instance.folder / "jobs"
            shutil.rmtree(jobs, ignore_errors=True)  # folders of jobs a crashed node had handed out
            jobs.mkdir(parents=True)
            if self.sandbox is not None:
                self.sandbox.own(instance.folder)
                self.sandbox.own(jobs)

    def prepare_stop(self) -> None:
        """From now on nothing is restarted (the node is stopping); `stop()` follows."""
        self._closing = True

    async def stop(self) -> None:
        """Stop every instance: stdin closed, then SIGTERM, then SIGKILL (per process group). Idempotent."""
        self._closing = True
        self._break("the agent was stopped", notify=False)
        for task in self._supervisors:
            task.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)
        self._supervisors.clear()
        await asyncio.gather(*(self._stop_instance(i) for i in self._instances))
        await asyncio.to_thread(lambda: (self.root / "pids.json").unlink(missing_ok=True))

    async def _stop_instance(self, instance: _Instance) -> None:
        process = instance.process
        if process is None:
            return
        if process.returncode is None:
            if process.stdin is not None:
                process.stdin.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(process.wait()), STOP_GRACE)
        await process.stop(STOP_GRACE)
        await process.close()  # whatever the agent left behind
        if instance.exited is not None:
            await asyncio.wait({instance.exited})
        if instance.state != "failed":
            instance.state = "stopped"

    # -- status -------------------------------------------------------------------------------------------------

    def status(self, show_jobs: bool = False) -> list[AgentInstance]:
        return [
            AgentInstance(
                index=i.index,
                state=i.state,  # type: ignore[arg-type]
                job_id=i.job.job_id if i.job is not None and show_jobs else None,
                jobs_served=i.served,
                restarts=i.restarts,
                error=i.error,
            )
            for i in self._instances
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

    def _release(self, instance: _Instance) -> None:
        instance.job = None
        if instance.process is None or instance.process.returncode is not None or instance.kill_reason:
            return  # going down: its supervisor restarts it and releases it then
        instance.state = "idle"
        if self._closing:
            return
        self._idle.append(instance)
        self._dispatch()

    def _dispatch(self) -> None:
        """Give free instances to the queued jobs (first come, first served) and start them: the start is
        recorded (`on_start`) before the job line is written, and the written line is all an instance waits for.
        Done in callbacks, not in the jobs' own tasks, so an instance that answered gets its next job at once."""
        while self._queue and self._idle and self.broken is None:
            instance = self._idle.popleft()
            if not self._current(instance, instance.generation):
                continue
            assignment = self._queue.popleft()
            assignment.instance, assignment.generation = instance, instance.generation
            instance.job, instance.state = assignment, "busy"
            try:
                recorded = asyncio.ensure_future(assignment.on_start(instance.index))
            except Exception as e:  # handed to the job's caller
                recorded = asyncio.get_running_loop().create_future()
                recorded.set_exception(e)
            recorded.add_done_callback(lambda future, a=assignment: self._send(a, future))

    def _send(self, assignment: _Assignment, recorded: asyncio.Future[None]) -> None:
        """The job's start is recorded: write its line (a restart never sends it again)."""
        assignment.started = True
        instance = assignment.instance
        assert instance is not None
        failed = recorded.cancelled() or recorded.exception() is not None
        if failed and not assignment.result.done():
            assignment.result.set_exception(
                JobFailedError("Recording the job's start failed") if recorded.cancelled() else recorded.exception()  # type: ignore[arg-type]
            )
        if failed or assignment.abandoned or assignment.result.done():
            if assignment.abandoned and instance.job is assignment:
                self._release(instance)  # nothing reached the agent (else the caller releases it in `_end`)
            return
        process = instance.process
        if not self._current(instance, assignment.generation) or process is None or process.stdin is None:
            return  # going down: its watcher settles the job
        wd = instance.folder / "jobs" / assignment.job_id
        try:
            os.rename(assignment.wd, wd)  # the instance sees its own `jobs` folder only
        except OSError as e:
            assignment.settle(f"The job's folder could not be handed to the agent instance: {e.strerror}")
            self._release(instance)
            return
        assignment.moved = wd
        with contextlib.suppress(ConnectionError):  # it is going down: its watcher settles the job
            process.stdin.write((json.dumps({"job_id": assignment.job_id, "wd": str(wd)}) + "\n").encode())
        assignment.sent = True
        if self.job_timeout is not None:
            assignment.timer = asyncio.get_running_loop().call_later(self.job_timeout, self._time_out, assignment)

    def _time_out(self, assignment: _Assignment) -> None:
        assignment.kill_reason = f"The agent did not finish the job within {self.job_timeout:g} s (instance restarted)"
        assignment.settle(assignment.kill_reason)

    def _answered(self, instance: _Instance, assignment: _Assignment, error: str | None) -> None:
        """trigger:done or trigger:error: the job is settled and the instance takes the next one at once."""
        assignment.settle(error, answered=True)
        for log in instance.logs:
            log.flush()
        instance.served += 1
        instance.failures = 0
        if instance.job is assignment:
            self._release(instance)

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
        assignment: _Assignment | None = None
        reason = "The job ended abnormally (instance restarted)"
        try:
            if files is None:
                files = await asyncio.to_thread(open_job_logs, logs)
            if self.broken is not None:
                raise JobFailedError(self.broken)
            loop = asyncio.get_running_loop()
            assignment = _Assignment(job_id, wd, on_line, on_start, files, loop.create_future())
            self._queue.append(assignment)
            self._dispatch()
            await asyncio.shield(assignment.result)
        except asyncio.CancelledError:
            reason = "The job was cancelled (instance restarted)"
            raise
        finally:
            self._return_place()
            if assignment is not None:
                self._end(assignment, reason)
            for file in files or ():
                file.close()

    def _end(self, assignment: _Assignment, reason: str) -> None:
        """The caller is done with the job: an instance still working on it is killed (and restarted)."""
        assignment.abandoned = True
        try:
            self._let_go(assignment, reason)
        finally:
            if assignment.moved is not None:  # back where the RTI finds its outputs
                with contextlib.suppress(OSError):
                    os.rename(assignment.moved, assignment.wd)
                assignment.moved = None
            with contextlib.suppress(BaseException):  # retrieved: nobody else waits for it
                assignment.result.result()

    def _let_go(self, assignment: _Assignment, reason: str) -> None:
        instance = assignment.instance
        if instance is None:  # still queued
            with contextlib.suppress(ValueError):
                self._queue.remove(assignment)
            return
        if assignment.answered or assignment.lost:
            return  # released when it answered, or its supervisor restarts it
        reason = assignment.kill_reason or reason
        assignment.settle(reason)  # no more lines go to it
        if not assignment.sent:
            if assignment.started and instance.job is assignment:
                self._release(instance)  # nothing reached the agent
            return  # (else `_send` releases it once the start is recorded)
        if not self._closing and self._current(instance, assignment.generation):
            self._kill(instance, reason)  # it may still be working on the job: restart it

    def _current(self, instance: _Instance, generation: int) -> bool:
        """The instance still runs the very process `generation` names and is not being killed."""
        process = instance.process
        return (
            instance.generation == generation
            and process is not None
            and process.returncode is None
            and instance.kill_reason is None
        )

    # -- instances ----------------------------------------------------------------------------------------------

    def _marker(self, index: int) -> str:
        return f"agent-{self.name}-{index}"

    async def _spawn(self, instance: _Instance) -> None:
        """Start the instance's process and wait for `trigger:ready`; raises `_StartFailedError`."""
        env = processes.child_env(self.visible, {"SAAS_JOB_ID": self._marker(instance.index)})  # finds leftovers
        instance.state, instance.kill_reason, instance.err_tail = "starting", None, b""
        instance.generation += 1
        instance.logs = await asyncio.to_thread(
            lambda: [_Log(self.root / f"instance-{instance.index}.{name}.log") for name in ("stdout", "stderr")]
        )
        instance.ready = asyncio.get_running_loop().create_future()
        process = instance.process = await processes.spawn(
            self.sandbox,
            ["bash", "execute.sh", self.config, str(instance.folder)],
            cwd=self.adapter,
            name=self._marker(instance.index),
            ro=[self.visible],
            rw=[instance.folder],
            network=self.network,
            limits=self.limits,
            env=env,
            stdin=asyncio.subprocess.PIPE,
        )
        instance.exited = asyncio.create_task(self._watch(instance, process))
        try:
            await asyncio.to_thread(self._save_pids)
            done, _ = await asyncio.wait(
                {instance.ready, instance.exited}, timeout=self.startup_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if instance.ready in done:
                return
            if instance.exited in done:
                code = instance.exited.result()
                raise _StartFailedError(f"Agent instance {instance.index} exited with code {code} before it was ready")
            raise _StartFailedError(
                f"Agent instance {instance.index} did not print {READY} within {self.startup_timeout:g} s"
            )
        except BaseException:
            process.kill_now()
            await asyncio.wait({instance.exited})
            raise

    async def _watch(self, instance: _Instance, process: AdapterProcess) -> int:
        """Pump the instance's output until it exits; returns its exit code. Settles the job it held."""
        assert process.stdout is not None and process.stderr is not None
        readers = asyncio.gather(
            processes.pump(process.stdout, None, None, functools.partial(self._output, instance, 0)),
            processes.pump(process.stderr, None, None, functools.partial(self._output, instance, 1)),
            return_exceptions=True,
        )
        exit_code = asyncio.ensure_future(process.wait())
        await asyncio.wait({readers, exit_code}, return_when=asyncio.FIRST_COMPLETED)
        process.kill_now()  # an instance that closed its stdout cannot report any more
        await readers
        code = await exit_code
        exceeded = await process.close()  # every process it started
        for log in instance.logs:
            log.close()
        if instance.job is not None:
            reason = instance.kill_reason
            if reason is None and exceeded is not None:
                reason = f"Agent instance {instance.index} was stopped: {exceeded}"
            if reason is None:
                text = instance.err_tail.decode("utf-8", "replace").strip()
                reason = f"Agent instance {instance.index} exited with code {code}" + (
                    f": {text[-500:]}" if text else ""
                )
            instance.job.settle(reason, lost=True)
        return code

    def _output(self, instance: _Instance, which: int, line: bytes) -> None:
        """One line of an instance's stdout (`which` 0) or stderr (1): logged, and handled while it holds a job."""
        instance.logs[which].write(line)
        job = instance.job
        if job is not None and not job.result.done():
            job.logs[which].write(line)
        else:
            instance.logs[which].flush()
        if which:
            instance.err_tail = (instance.err_tail + line)[-2000:]
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if which == 0 and text.startswith("trigger:"):
            if text == READY:
                if instance.ready is not None and not instance.ready.done():
                    instance.ready.set_result(None)
                return
            if job is not None and text == DONE:
                self._answered(instance, job, None)
                return
            if job is not None and text.startswith(ERROR):
                self._answered(instance, job, text[len(ERROR) :].strip() or "The agent reported an error")
                return
        if job is not None and not job.result.done():
            job.on_line(text)

    def _kill(self, instance: _Instance, reason: str) -> None:
        instance.kill_reason = reason
        if instance.job is not None:
            instance.job.settle(reason, lost=True)
            instance.job = None
        with contextlib.suppress(ValueError):
            self._idle.remove(instance)
        if instance.process is not None:
            instance.process.kill_now()

    async def _supervise(self, instance: _Instance) -> None:
        """Restart the instance whenever it goes down (backoff after crashes) until the pool stops."""
        while True:
            assert instance.exited is not None
            await asyncio.wait({instance.exited})
            with contextlib.suppress(ValueError):
                self._idle.remove(instance)
            if self._closing:
                return
            if instance.kill_reason is None:  # it crashed: restart with backoff
                instance.failures += 1
            instance.state = "restarting"
            while True:
                if instance.failures:
                    await asyncio.sleep(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (instance.failures - 1)))
                if self._closing:
                    return
                try:
                    await self._spawn(instance)
                    break
                except _StartFailedError as e:
                    instance.failures += 1
                    if instance.failures >= MAX_START_FAILURES:
                        instance.state, instance.error = "failed", str(e)
                        if all(i.state == "failed" for i in self._instances):
                            self._break(f"Every instance of the agent failed to restart: {e}")
                        return
            instance.restarts += 1
            instance.error = None
            self._release(instance)

    def _break(self, reason: str, notify: bool = True) -> None:
        if self.broken is None:
            self.broken = reason
            if notify and self._on_broken is not None:
                self._on_broken(reason, "\n".join(self._log_tail(i) for i in self._instances if i.state == "failed"))
        while (waiter := self._place_waiters.pop()) is not None:
            if not waiter.done():
                waiter.set_exception(JobFailedError(self.broken))
        while self._queue:
            self._queue.popleft().settle(self.broken)

    def _save_pids(self) -> None:
        """Blocks. Under a lock, so the last write holds every process started before it."""
        with self._pids_lock:
            pids = {str(i.index): i.process.pid for i in self._instances if i.process is not None}
            temp = self.root / ".pids.json"
            temp.write_text(json.dumps(pids))
            os.replace(temp, self.root / "pids.json")

    def _log_tail(self, instance: _Instance) -> str:
        out = tail(self.root / f"instance-{instance.index}.stdout.log", 1000).strip()
        err = tail(self.root / f"instance-{instance.index}.stderr.log", 1000).strip()
        return "\n".join(part for part in (out, err) if part)


def open_job_logs(folder: Path) -> tuple[BinaryIO, BinaryIO]:
    """A job's stdout and stderr log files, opened for appending (blocks)."""
    folder.mkdir(parents=True, exist_ok=True)
    return open(folder / STDOUT_LOG, "ab", buffering=0), open(folder / STDERR_LOG, "ab", buffering=0)
