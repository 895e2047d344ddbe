"""The agent pool's state machine (DESIGN §8), pure: events in, instructions out, no I/O and no clock.

`AgentState` holds the instances of one agent and the jobs (assignments) on their way through them. `handle(event)`
applies one event and returns the instructions the runner (`saas.rti.agents.AgentPool`) must carry out, in order.
Events carry the instance's generation (which run of the instance they come from, counted by spawns): an event of
an older run is ignored, so a late line, exit or timer of a killed process never touches its successor.

Instance: starting → idle ⇄ busy; busy/idle → killing (we killed it) or down (it exited) → restarting (backoff after
a crash) → starting …; a start that fails `MAX_START_FAILURES` times in a row → failed; the pool stopping → stopped.
Assignment: queued → recording (its start is being recorded) → running (its line was sent) → settled (answered,
failed, lost with its instance, timed out or ended by its caller). Only a running job can be answered.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from saas.rti.agent_events import (
    Answered,
    Backoff,
    BackoffOver,
    Broken,
    Closing,
    Ended,
    Event,
    Exited,
    Instruction,
    Kill,
    Ready,
    RecordStart,
    SavePids,
    Send,
    SendFailed,
    Settle,
    Spawn,
    Spawned,
    SpawnFailed,
    Start,
    StartDone,
    StartJobTimer,
    StartRecorded,
    StartStartupTimer,
    StartupTimedOut,
    Stop,
    Submitted,
    TimedOut,
)

__all__ = ["AgentState", "Assignment", "Instance"]

BACKOFF_FIRST = 0.2
BACKOFF_MAX = 10.0
MAX_START_FAILURES = 5
STOPPED = "the agent was stopped"

InstanceState = Literal["starting", "idle", "busy", "killing", "restarting", "failed", "stopped"]
AssignmentState = Literal["queued", "recording", "running", "settled"]


# -- state -------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Assignment:
    key: int
    job_id: str
    state: AssignmentState = "queued"
    index: int | None = None  # the instance it was given to
    generation: int = 0  # … and that instance's run
    abandoned: bool = False  # its caller is done with it
    outcome: str | None = None  # "done", "error", "lost", "failed" once settled


@dataclass(eq=False)
class Instance:
    index: int
    state: InstanceState = "starting"
    generation: int = 0
    job: Assignment | None = None
    served: int = 0
    restarts: int = 0
    failures: int = 0  # crashes and failed starts in a row (drives the backoff)
    ever_ready: bool = False
    kill_reason: str | None = None  # why we killed the current run
    start_error: str | None = None  # why the current run failed to start (set before its exit arrives)
    error: str | None = None


@dataclass(eq=False)
class AgentState:
    size: int
    job_timeout: float | None = None
    instances: list[Instance] = field(default_factory=list)
    jobs: dict[int, Assignment] = field(default_factory=dict)  # unsettled or still held by their caller
    queue: deque[Assignment] = field(default_factory=deque)  # waiting for an instance, first come first served
    idle: deque[Instance] = field(default_factory=deque)
    starting: bool = False  # `start()` is waiting
    closing: bool = False
    stopped: bool = False
    broken: str | None = None

    def __post_init__(self) -> None:
        if not self.instances:
            self.instances = [Instance(i) for i in range(self.size)]

    # -- queries --------------------------------------------------------------------------------------------------

    def holder(self, index: int, generation: int) -> Assignment | None:
        """The unsettled job that run `generation` of instance `index` holds: its lines go to that job."""
        instance = self.instances[index]
        job = instance.job
        if instance.generation != generation or job is None or job.state == "settled":
            return None
        return job

    def shown_state(self, instance: Instance) -> str:
        """The state shown in the status (`AgentInstance.state`)."""
        return {"killing": "restarting"}.get(instance.state, instance.state)

    # -- events ---------------------------------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Instruction]:
        out: list[Instruction] = []
        _HANDLERS[type(event)](self, event, out)  # type: ignore[operator]
        return out

    def _on_start(self, event: Start, out: list[Instruction]) -> None:
        if self.stopped:  # stopped while `start()` was preparing the folders
            out.append(StartDone(STOPPED))
            return
        self.starting = True
        for instance in self.instances:
            self._spawn(instance, out)

    def _on_spawned(self, event: Spawned, out: list[Instruction]) -> None:
        instance = self._current(event.index, event.generation, "starting")
        if instance is None:
            return
        out.append(SavePids())
        if self.stopped:
            out.append(Kill(instance.index, instance.generation))
        else:
            out.append(StartStartupTimer(instance.index, instance.generation))

    def _on_spawn_failed(self, event: SpawnFailed, out: list[Instruction]) -> None:
        instance = self._current(event.index, event.generation, "starting")
        if instance is not None:
            self._start_failed(instance, event.reason, out)

    def _on_startup_timed_out(self, event: StartupTimedOut, out: list[Instruction]) -> None:
        instance = self._current(event.index, event.generation, "starting")
        if instance is not None and instance.start_error is None:
            instance.start_error = event.reason  # failed once its exit is reported
            out.append(Kill(instance.index, instance.generation))

    def _on_ready(self, event: Ready, out: list[Instruction]) -> None:
        instance = self._current(event.index, event.generation, "starting")
        if instance is None or instance.start_error is not None or self.stopped:
            return
        if instance.ever_ready:
            instance.restarts += 1
        instance.ever_ready, instance.error = True, None
        instance.state = "idle"
        if self.starting:
            if all(i.state == "idle" for i in self.instances):
                self.starting = False
                out.append(StartDone(None))
                for each in self.instances:
                    self._release(each, out)
            return
        self._release(instance, out)

    def _on_exited(self, event: Exited, out: list[Instruction]) -> None:
        instance = self.instances[event.index]
        if instance.generation != event.generation or instance.state in ("restarting", "failed", "stopped"):
            return
        if instance in self.idle:
            self.idle.remove(instance)
        job, instance.job = instance.job, None
        if job is not None:
            self._settle(job, instance.kill_reason or event.reason, "lost", out)
        if instance.state == "starting" and not self.stopped:
            reason = (
                instance.start_error
                or f"Agent instance {instance.index} exited with code {event.code} before it was ready"
            )
            self._start_failed(instance, reason, out)
            return
        if self.closing or self.stopped:
            instance.state = "stopped"
            return
        if instance.kill_reason is None:  # it crashed: restart with backoff
            instance.failures += 1
        self._restart(instance, out)

    def _on_backoff_over(self, event: BackoffOver, out: list[Instruction]) -> None:
        instance = self._current(event.index, event.generation, "restarting")
        if instance is not None:
            if self.closing or self.stopped:
                instance.state = "stopped"
            else:
                self._spawn(instance, out)

    def _on_submitted(self, event: Submitted, out: list[Instruction]) -> None:
        job = self.jobs[event.key] = Assignment(event.key, event.job_id)
        if self.broken is not None:
            self._settle(job, self.broken, "failed", out)
            return
        self.queue.append(job)
        self._dispatch(out)

    def _on_start_recorded(self, event: StartRecorded, out: list[Instruction]) -> None:
        job = self.jobs.get(event.key)
        if job is None or job.index is None:
            return
        instance = self.instances[job.index]
        held = instance.job is job and instance.generation == job.generation
        if event.error is not None:
            self._settle(job, event.error, "failed", out)
        if job.state == "settled" or job.abandoned:
            self._settle(job, "The job ended before it was sent", "failed", out)
            if job.abandoned:
                self.jobs.pop(job.key, None)
            if held:
                instance.job = None
                self._release(instance, out)  # nothing reached the agent
            return
        if not held or instance.state != "busy":
            return  # going down: its exit settles the job
        job.state = "running"
        out.append(Send(job.key, instance.index, instance.generation))
        if self.job_timeout is not None:
            out.append(StartJobTimer(job.key))

    def _on_send_failed(self, event: SendFailed, out: list[Instruction]) -> None:
        job = self.jobs.get(event.key)
        if job is None or job.state != "running":
            return
        self._settle(job, event.reason, "failed", out)
        instance = self.instances[job.index] if job.index is not None else None
        if instance is not None and instance.job is job:
            instance.job = None
            self._release(instance, out)

    def _on_answered(self, event: Answered, out: list[Instruction]) -> None:
        instance = self.instances[event.index]
        job = self.holder(event.index, event.generation)
        if job is None or job.state != "running" or instance.state != "busy":
            return  # an answer for no job, or before the job was sent: not this job's
        self._settle(job, event.error, "done" if event.error is None else "error", out)
        instance.served += 1
        instance.failures = 0
        instance.job = None
        self._release(instance, out)

    def _on_timed_out(self, event: TimedOut, out: list[Instruction]) -> None:
        job = self.jobs.get(event.key)
        if job is None or job.state != "running":
            return
        self._settle(job, event.reason, "failed", out)
        self._kill_holder(job, event.reason, out)

    def _on_ended(self, event: Ended, out: list[Instruction]) -> None:
        job = self.jobs.pop(event.key, None)
        if job is None:
            return
        job.abandoned = True
        if job.state == "queued":
            self.queue.remove(job)
            self._settle(job, event.reason, "failed", out)
        elif job.state == "recording":
            self._settle(job, event.reason, "failed", out)  # its instance is released once the start is recorded
            self.jobs[job.key] = job
        elif job.state == "running":
            self._settle(job, event.reason, "failed", out)
            self._kill_holder(job, event.reason, out)

    def _on_closing(self, event: Closing, out: list[Instruction]) -> None:
        self.closing = True

    def _on_stop(self, event: Stop, out: list[Instruction]) -> None:
        self.closing = self.stopped = True
        self._break(STOPPED, False, out)
        if self.starting:
            self.starting = False
            out.append(StartDone(STOPPED))
        self.idle.clear()
        for instance in self.instances:
            if instance.state == "restarting" or instance.generation == 0:  # no process to wait for
                instance.state = "stopped"

    # -- transitions ----------------------------------------------------------------------------------------------

    def _current(self, index: int, generation: int, state: InstanceState) -> Instance | None:
        instance = self.instances[index]
        return instance if instance.generation == generation and instance.state == state else None

    def _spawn(self, instance: Instance, out: list[Instruction]) -> None:
        instance.generation += 1
        instance.state, instance.kill_reason, instance.start_error = "starting", None, None
        out.append(Spawn(instance.index, instance.generation))

    def _restart(self, instance: Instance, out: list[Instruction]) -> None:
        instance.state = "restarting"
        if instance.failures:
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (instance.failures - 1))
            out.append(Backoff(instance.index, instance.generation, delay))
        else:
            self._spawn(instance, out)

    def _start_failed(self, instance: Instance, reason: str, out: list[Instruction]) -> None:
        if self.stopped:
            instance.state = "stopped"
            return
        if self.starting:  # the first start: the deployment fails
            instance.state, instance.error = "failed", reason
            self.starting = False
            out.append(StartDone(reason, instance.index))
            self._break(reason, False, out)
            return
        instance.failures += 1
        if instance.failures >= MAX_START_FAILURES:
            instance.state, instance.error = "failed", reason
            if all(i.state == "failed" for i in self.instances):
                self._break(f"Every instance of the agent failed to restart: {reason}", True, out)
            return
        if self.closing:
            instance.state = "stopped"
            return
        self._restart(instance, out)

    def _release(self, instance: Instance, out: list[Instruction]) -> None:
        """The instance is free: it takes the next job (unless the pool is closing)."""
        if instance.state not in ("idle", "busy") or instance.kill_reason is not None:
            return
        instance.state = "idle"
        if self.closing or instance in self.idle:
            return
        self.idle.append(instance)
        self._dispatch(out)

    def _dispatch(self, out: list[Instruction]) -> None:
        """Give free instances to the queued jobs, first come first served: each job's start is recorded first."""
        while self.queue and self.idle and self.broken is None and not self.starting:
            instance = self.idle.popleft()
            if instance.state != "idle":
                continue
            job = self.queue.popleft()
            job.state, job.index, job.generation = "recording", instance.index, instance.generation
            instance.job, instance.state = job, "busy"
            out.append(RecordStart(job.key, instance.index))

    def _kill_holder(self, job: Assignment, reason: str, out: list[Instruction]) -> None:
        """The instance may still be working on the job: kill it (it is restarted at once), unless stopping."""
        if job.index is None:
            return
        instance = self.instances[job.index]
        if instance.job is not job or instance.generation != job.generation or instance.state != "busy":
            return
        if self.closing:
            return  # `stop()` ends it
        instance.job = None
        instance.state, instance.kill_reason = "killing", reason
        out.append(Kill(instance.index, instance.generation))

    def _settle(self, job: Assignment, error: str | None, outcome: str, out: list[Instruction]) -> None:
        if job.state == "settled":
            return
        job.state, job.outcome = "settled", outcome
        out.append(Settle(job.key, error))
        if job.abandoned:
            self.jobs.pop(job.key, None)

    def _break(self, reason: str, notify: bool, out: list[Instruction]) -> None:
        if self.broken is None:
            self.broken = reason
            out.append(Broken(reason, notify))
        while self.queue:
            self._settle(self.queue.popleft(), self.broken, "failed", out)


_HANDLERS = {
    Start: AgentState._on_start,
    Spawned: AgentState._on_spawned,
    SpawnFailed: AgentState._on_spawn_failed,
    StartupTimedOut: AgentState._on_startup_timed_out,
    Ready: AgentState._on_ready,
    Exited: AgentState._on_exited,
    BackoffOver: AgentState._on_backoff_over,
    Submitted: AgentState._on_submitted,
    StartRecorded: AgentState._on_start_recorded,
    SendFailed: AgentState._on_send_failed,
    Answered: AgentState._on_answered,
    TimedOut: AgentState._on_timed_out,
    Ended: AgentState._on_ended,
    Closing: AgentState._on_closing,
    Stop: AgentState._on_stop,
}
