"""The job state machine: pure code, no I/O. The runner asks it whether a transition is legal and records it.

pending → initialising → running → postprocessing → successful | failed | cancelled. Every non-final state may go
to failed or cancelled. After a restart (`recover`), a job whose process died is failed with "node restarted" or,
when its adapter says it is restartable, goes back to pending; postprocessing resumes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from saas._compat import StrEnum
from saas.core.errors import ConflictError, RTIError

__all__ = ["FINAL_STATES", "IllegalTransitionError", "JobState", "JobStateMachine", "recover"]


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


class IllegalTransitionError(RTIError, ConflictError):
    pass


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


def recover(machine: JobStateMachine, restartable: bool) -> JobState:
    """Decide what happens to a job found in `machine.state` after a restart; applies and returns the new state."""
    if machine.state in (JobState.INITIALISING, JobState.RUNNING):
        if restartable:
            machine.transition(JobState.PENDING, NODE_RESTARTED + ": re-queued")
        else:
            machine.transition(JobState.FAILED, NODE_RESTARTED)
    return machine.state  # pending stays queued, postprocessing resumes, final stays final


def _now() -> int:
    return int(time.time() * 1000)
