"""The job core: pure code, no I/O (in the style of dask/distributed's worker state machine: events in, instructions
out). `saas.rti.pipeline` feeds it what happened to a job and carries out what it answers.

pending → initialising → running → postprocessing → successful | failed | cancelled. Every non-final state may go
to failed or cancelled. After a restart (`recover`), a job whose process died is failed with "node restarted" or,
when its adapter says it is restartable, goes back to pending; postprocessing resumes.

What callers may rely on: `handle(machine, event)` applies the event's transition to `machine` (with the time the
event carries) before it returns, and raises `IllegalTransitionError` (leaving the machine as it was) for an event
that does not fit the job's state; the instructions come in the order they must be carried out. An instruction
that does work (`Acquire`, `PrepareInputs`, `Execute`, `ExecuteOnAgent`, `StoreOutputs`) ends with the next event
(`Admitted`, `InputsReady`, `Finished`, `OutputsStored`), or fails with `JobFailedError`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from saas._compat import StrEnum
from saas.core.errors import ConflictError, RTIError

__all__ = [
    "FINAL_STATES",
    "IllegalTransitionError",
    "JobFailedError",
    "JobState",
    "JobStateMachine",
    "handle",
    "recover",
]


class JobState(StrEnum):
    PENDING = "pending"
    INITIALISING = "initialising"
    RUNNING = "running"
    POSTPROCESSING = "postprocessing"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.SUCCESSFUL, JobState.FAILED, JobState.CANCELLED})
_ENDINGS = {JobState.FAILED, JobState.CANCELLED}
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.INITIALISING, *_ENDINGS}),
    JobState.INITIALISING: frozenset({JobState.RUNNING, JobState.PENDING, *_ENDINGS}),
    JobState.RUNNING: frozenset({JobState.POSTPROCESSING, JobState.PENDING, *_ENDINGS}),
    JobState.POSTPROCESSING: frozenset({JobState.SUCCESSFUL, *_ENDINGS}),
    JobState.SUCCESSFUL: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}
NODE_RESTARTED = "node restarted"
CANCELLED_BY_USER = "cancelled by the user"


class IllegalTransitionError(RTIError, ConflictError):
    pass


class JobFailedError(RTIError):
    """The job cannot finish: `reason` says why (it becomes the job's error and timeline reason)."""


@dataclass
class JobStateMachine:
    state: JobState = JobState.PENDING
    timeline: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.timeline:
            self.timeline.append({"state": self.state.value, "time": _now(), "reason": "submitted"})

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def can(self, new: JobState) -> bool:
        return new in TRANSITIONS[self.state]

    def transition(self, new: JobState, reason: str = "", at: int | None = None) -> None:
        if not self.can(new):
            raise IllegalTransitionError(
                f"A job cannot go from {self.state.value} to {new.value}", {"from": self.state.value, "to": new.value}
            )
        self.state = new
        self.timeline.append({"state": new.value, "time": _now() if at is None else at, "reason": reason})

    @classmethod
    def restore(cls, state: str, timeline: list[dict[str, Any]]) -> JobStateMachine:
        return cls(JobState(state), list(timeline))


def recover(machine: JobStateMachine, restartable: bool, at: int | None = None) -> JobState:
    """Decide what happens to a job found in `machine.state` after a restart; applies and returns the new state."""
    if machine.state in (JobState.INITIALISING, JobState.RUNNING):
        if restartable:
            machine.transition(JobState.PENDING, NODE_RESTARTED + ": re-queued", at)
        else:
            machine.transition(JobState.FAILED, NODE_RESTARTED, at)
    return machine.state  # pending stays queued, postprocessing resumes, final stays final


# -- events: what happened to a job (each with its time, ms since the epoch) ------------------------------------


@dataclass(frozen=True)
class Dispatched:
    """A slot is the job's (or, for an agent's job, its turn to wait for the agent's admission)."""

    at: int
    agent: bool = False


@dataclass(frozen=True)
class Admitted:
    """The agent admitted the job (a lease): its inputs may be prepared."""

    at: int


@dataclass(frozen=True)
class InputsReady:
    at: int
    agent: bool = False


@dataclass(frozen=True)
class StartedOnAgent:
    """An agent instance is about to get the job (recorded before it does)."""

    at: int
    instance: int


@dataclass(frozen=True)
class Finished:
    """execute.sh ended well (or the agent ended the job with trigger:done)."""

    at: int
    agent: bool = False


@dataclass(frozen=True)
class OutputsStored:
    at: int


@dataclass(frozen=True)
class Failed:
    at: int
    reason: str
    finish: bool = False  # no task of the job ends it (e.g. its processor's deployment failed)


@dataclass(frozen=True)
class Cancelled:
    """The job's task was cancelled: by the user (or an undeploy), or because the node stops."""

    at: int
    stopping: bool = False
    finish: bool = False  # no task of the job ends it


@dataclass(frozen=True)
class CancelRequested:
    at: int
    reason: str
    has_task: bool


@dataclass(frozen=True)
class Deployed:
    """The deployment the job waited for ended: `ready`, or failed (`error`)."""

    at: int
    proc_id: str
    ready: bool
    error: str | None = None


@dataclass(frozen=True)
class Resumed:
    """After a restart: the job's outputs are stored (postprocessing resumes)."""

    at: int


@dataclass(frozen=True)
class Reattached:
    """After a restart: the job still runs on a remote backend; its task follows it again."""

    at: int


@dataclass(frozen=True)
class NodeRestarted:
    """The job was found unfinished after a restart. `reattachable`: it runs on a backend that can be followed
    again (a handle, its processor ready); `pid`: its process group leader, if it ran here; `agent`: an agent's."""

    at: int
    restartable: bool = False
    agent: bool = False
    reattachable: bool = False
    pid: int | None = None


@dataclass(frozen=True)
class TaskEnded:
    """The job's task ends (whatever happened): its slot, lease and log files go; a final job is finished."""

    at: int


Event = (
    Dispatched
    | Admitted
    | InputsReady
    | StartedOnAgent
    | Finished
    | OutputsStored
    | Failed
    | Cancelled
    | CancelRequested
    | Deployed
    | Resumed
    | Reattached
    | NodeRestarted
    | TaskEnded
)

# -- instructions: what the pipeline does, in order ------------------------------------------------------------


@dataclass(frozen=True)
class Persist:
    """Store the job's row (`wait=False`: queued behind the next awaited write, for a transition a restart may
    lose); audit a final state; the job no longer counts as waiting unless pending; wake its waiters. `lenient`: a
    full disk is logged (the job keeps its state in memory; a restart resumes from the board)."""

    wait: bool = True
    lenient: bool = False


@dataclass(frozen=True)
class PersistSoon:
    """Hand the row to the board's writer and let the caller wait for it (the agent gives the job to its instance
    once the row is written)."""


@dataclass(frozen=True)
class RecordError:
    reason: str


@dataclass(frozen=True)
class Audit:
    event: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Notify:
    pass


@dataclass(frozen=True)
class Enqueue:
    pass


@dataclass(frozen=True)
class Unqueue:
    pass


@dataclass(frozen=True)
class Acquire:
    """Wait for the agent's admission (fair between users); ends with `Admitted`."""


@dataclass(frozen=True)
class PrepareInputs:
    """Locate, copy, fetch and decrypt the inputs into the working folder; ends with `InputsReady`."""


@dataclass(frozen=True)
class Execute:
    """Run execute.sh (or follow it again: `reattach`); ends with `Finished`."""

    reattach: bool = False


@dataclass(frozen=True)
class ExecuteOnAgent:
    """Hand the job to a free agent instance; ends with `Finished`."""


@dataclass(frozen=True)
class StoreOutputs:
    """Check, fix and store the outputs (exactly once); ends with `OutputsStored`."""


@dataclass(frozen=True)
class Release:
    """The job's slot is free (storing outputs holds none)."""


@dataclass(frozen=True)
class Cleanup:
    """The slot, an unused agent lease and log files the job opened but no instance took."""


@dataclass(frozen=True)
class Finish:
    """The job is final: forget it (listeners told, proof forgotten, its folder removed unless retained)."""


@dataclass(frozen=True)
class CancelTask:
    """Cancel the job's task; it ends with `Cancelled`."""


@dataclass(frozen=True)
class KillLeftover:
    pid: int


@dataclass(frozen=True)
class StartTask:
    """After a restart: the job holds a slot at once and its task resumes postprocessing or re-attaches."""

    reattach: bool = False


Instruction = (
    Persist
    | PersistSoon
    | RecordError
    | Audit
    | Notify
    | Enqueue
    | Unqueue
    | Acquire
    | PrepareInputs
    | Execute
    | ExecuteOnAgent
    | StoreOutputs
    | Release
    | Cleanup
    | Finish
    | CancelTask
    | KillLeftover
    | StartTask
)


def handle(machine: JobStateMachine, event: Event) -> list[Instruction]:
    """What to do about `event` for the job of `machine` (whose state it moves on)."""
    S = JobState
    if isinstance(event, Dispatched) and event.agent:
        _expect(machine, S.PENDING, S.INITIALISING)
        return [Acquire()]
    if isinstance(event, (Dispatched, Admitted)):
        machine.transition(S.INITIALISING, "preparing inputs", event.at)
        return [Persist(wait=False), PrepareInputs()]  # lost in a restart: queued again, nothing ran yet
    if isinstance(event, InputsReady):
        if event.agent:
            _expect(machine, S.INITIALISING, S.RUNNING)
            return [ExecuteOnAgent()]
        machine.transition(S.RUNNING, "execute.sh started", event.at)  # stored with the handle once started
        return [Audit("running"), Execute()]
    if isinstance(event, StartedOnAgent):
        machine.transition(S.RUNNING, f"sent to agent instance {event.instance}", event.at)
        return [Audit("running", {"instance": event.instance}), Notify(), PersistSoon()]
    if isinstance(event, Finished):
        reason = "the agent finished the job" if event.agent else "execute.sh finished"
        machine.transition(S.POSTPROCESSING, reason, event.at)
        return [Persist(wait=False), Release(), StoreOutputs()]  # storing outputs holds no slot
    if isinstance(event, OutputsStored):
        machine.transition(S.SUCCESSFUL, "all outputs stored", event.at)
        return [Persist()]
    if isinstance(event, Failed):
        if machine.final:
            return []
        machine.transition(S.FAILED, event.reason, event.at)
        return [RecordError(event.reason), Persist(lenient=True), *([Finish()] if event.finish else [])]
    if isinstance(event, Cancelled):
        if event.stopping or machine.final:
            return []  # a stopping node leaves the job as it is: the restart decides
        machine.transition(S.CANCELLED, CANCELLED_BY_USER, event.at)
        return [Persist(), *([Finish()] if event.finish else [])]
    if isinstance(event, CancelRequested):
        if machine.final:
            return []
        if event.has_task:
            return [CancelTask()]
        machine.transition(S.CANCELLED, event.reason, event.at)
        return [Unqueue(), Persist(), Finish()]
    if isinstance(event, Deployed):
        if event.ready:
            return [Enqueue()]
        reason = f"Processor {event.proc_id} could not be deployed: {event.error}"
        return handle(machine, Failed(event.at, reason, finish=True))
    if isinstance(event, Resumed):
        _expect(machine, S.POSTPROCESSING, S.SUCCESSFUL)
        return [StoreOutputs()]
    if isinstance(event, Reattached):
        _expect(machine, S.RUNNING, S.POSTPROCESSING)
        return [Execute(reattach=True)]
    if isinstance(event, NodeRestarted):
        return _restarted(machine, event)
    if isinstance(event, TaskEnded):
        return [Cleanup(), *([Finish()] if machine.final else [])]
    raise TypeError(f"not a job event: {event!r}")


def _restarted(machine: JobStateMachine, event: NodeRestarted) -> list[Instruction]:
    """The recovery decision: re-attach, or kill what is left and fail or re-queue, or resume storing outputs."""
    before = machine.state
    if before is JobState.RUNNING and event.reattachable:
        return [StartTask(reattach=True)]
    out: list[Instruction] = []
    if before is JobState.RUNNING and event.pid:
        out.append(KillLeftover(event.pid))
    restartable = event.restartable or (event.agent and before is JobState.INITIALISING)  # no agent saw it yet
    state = recover(machine, restartable, event.at)
    if state is JobState.FAILED and before is not JobState.FAILED:
        out.append(RecordError(NODE_RESTARTED))
    if state is not before:
        out.append(Persist())
    if state in FINAL_STATES:
        out.append(Finish())
    elif state is JobState.POSTPROCESSING:
        out.append(StartTask())
    else:
        out.append(Enqueue())
    return out


def _expect(machine: JobStateMachine, state: JobState, to: JobState) -> None:
    """An event that moves no state still has to fit the job's."""
    if machine.state is not state:
        raise IllegalTransitionError(
            f"A job cannot go from {machine.state.value} to {to.value}", {"from": machine.state.value, "to": to.value}
        )


def _now() -> int:
    return int(time.time() * 1000)
