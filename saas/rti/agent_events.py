"""The vocabulary of the agent pool's machine (`agent_state.py`): the events the runner feeds it and the
instructions it answers with, and the trigger lines of an instance that end a start or a job. Pure data.

Events about an instance carry its generation (which run of the instance they come from, counted by spawns), so an
event of an older run is ignored. Timestamps are not needed: the runner's timers report as events.
"""

from __future__ import annotations

from dataclasses import dataclass

READY = "trigger:ready"
DONE = "trigger:done"
ERROR = "trigger:error:"

# -- events in ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Start every instance (the pool's `start()`)."""


@dataclass(frozen=True)
class Spawned:
    index: int
    generation: int


@dataclass(frozen=True)
class SpawnFailed:
    index: int
    generation: int
    reason: str


@dataclass(frozen=True)
class Ready:
    index: int
    generation: int


@dataclass(frozen=True)
class StartupTimedOut:
    index: int
    generation: int
    reason: str


@dataclass(frozen=True)
class Exited:
    """The process of `generation` is gone; `reason` says why as far as the runner knows (exit code, limit)."""

    index: int
    generation: int
    code: int
    reason: str


@dataclass(frozen=True)
class BackoffOver:
    index: int
    generation: int


@dataclass(frozen=True)
class Submitted:
    key: int
    job_id: str


@dataclass(frozen=True)
class StartRecorded:
    """The job's start was recorded (`error` None) or recording it failed."""

    key: int
    error: str | None = None


@dataclass(frozen=True)
class SendFailed:
    key: int
    reason: str


@dataclass(frozen=True)
class Answered:
    """trigger:done (`error` None) or trigger:error from the instance's run `generation`."""

    index: int
    generation: int
    error: str | None = None


@dataclass(frozen=True)
class TimedOut:
    key: int
    reason: str


@dataclass(frozen=True)
class Ended:
    """The job's caller is done with it (it returned, failed or was cancelled): `reason` if it still runs."""

    key: int
    reason: str


@dataclass(frozen=True)
class Closing:
    """The node is stopping: nothing is restarted from now on (`prepare_stop()`)."""


@dataclass(frozen=True)
class Stop:
    """The pool stops (`stop()`): the runner then ends every process."""


Event = (
    Start
    | Spawned
    | SpawnFailed
    | Ready
    | StartupTimedOut
    | Exited
    | BackoffOver
    | Submitted
    | StartRecorded
    | SendFailed
    | Answered
    | TimedOut
    | Ended
    | Closing
    | Stop
)


# -- instructions out --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spawn:
    """Start run `generation` of the instance (then report `Spawned`/`SpawnFailed`, `Ready`, `Exited`)."""

    index: int
    generation: int


@dataclass(frozen=True)
class SavePids:
    pass


@dataclass(frozen=True)
class StartStartupTimer:
    index: int
    generation: int


@dataclass(frozen=True)
class Backoff:
    """Report `BackoffOver` after `delay` seconds."""

    index: int
    generation: int
    delay: float


@dataclass(frozen=True)
class Kill:
    """Kill the process group of run `generation` now (its exit is reported as usual)."""

    index: int
    generation: int


@dataclass(frozen=True)
class RecordStart:
    """Record that job `key` goes to instance `index` (then report `StartRecorded`)."""

    key: int
    index: int


@dataclass(frozen=True)
class Send:
    """Hand the job's folder to the instance and write its line (or report `SendFailed`)."""

    key: int
    index: int
    generation: int


@dataclass(frozen=True)
class StartJobTimer:
    key: int


@dataclass(frozen=True)
class Settle:
    """The job's outcome: done (`error` None) or failed with `error`. At most one per job."""

    key: int
    error: str | None


@dataclass(frozen=True)
class StartDone:
    """`start()` is over: every instance is ready (`error` None), or it failed (at instance `index`)."""

    error: str | None
    index: int | None = None


@dataclass(frozen=True)
class Broken:
    """No instance is left (or the pool stopped): refuse new jobs; `notify` the owner."""

    reason: str
    notify: bool


Instruction = (
    Spawn
    | SavePids
    | StartStartupTimer
    | Backoff
    | Kill
    | RecordStart
    | Send
    | StartJobTimer
    | Settle
    | StartDone
    | Broken
)


def parse_trigger_line(text: str) -> tuple[str, str | None] | None:
    """("ready", None), ("done", None) or ("error", text) for a trigger that ends a start or a job, else None."""
    if text == READY:
        return "ready", None
    if text == DONE:
        return "done", None
    if text.startswith(ERROR):
        return "error", text[len(ERROR) :].strip() or "The agent reported an error"
    return None
