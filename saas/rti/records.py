"""The live records of the RTI: a deployed processor (`ProcessorRecord`) and a job that is not final yet
(`ActiveJob`), held in memory while they matter and mirrored to the job board (`saas.rti.board`, SQL only), and
`apply_line`, which turns an adapter's trigger lines into a job's live status.

Callers may rely on: `ProcessorRecord.model` hiding a failure's reason, the install log tail and the jobs agent
instances hold from anyone but the node owner; `ActiveJob.status_doc` being exactly what the board stores; waiters
of `ActiveJob.changed` waking at most every `NOTIFY_INTERVAL` s for adapter lines, at once for transitions."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from saas.dor.schemas import CDataObject, GitProcessorPointer
from saas.rti import runner
from saas.rti.agents import AgentPool, Lease
from saas.rti.backends import Backend
from saas.rti.backends.base import UnusableBackend
from saas.rti.jobs import JobStateMachine
from saas.rti.messages import MessageLog
from saas.rti.schemas import Job, Processor

__all__ = ["HIDDEN_ERROR", "NOTIFY_INTERVAL", "ActiveJob", "ProcessorRecord", "apply_line"]


def now_ms() -> int:
    return int(time.time() * 1000)


NOTIFY_INTERVAL = 0.2  # seconds between wake-ups of a job's waiters for the lines its adapter writes


HIDDEN_ERROR = "Failed (the reason and the log are shown to the node owner only)"


@dataclass
class ProcessorRecord:
    proc_id: str
    state: str
    gpp: GitProcessorPointer
    error: str | None = None
    log_tail: str | None = None
    task: asyncio.Task[None] | None = None
    agent: AgentPool | None = None  # the instances of an agent
    spec: dict[str, Any] = field(default_factory=lambda: {"name": "local"})  # stored; SSH credentials encrypted
    backend: Backend = field(default_factory=UnusableBackend)

    def model(self, owner: bool = False) -> Processor:
        """As shown to a caller: the reason of a failure, its log tail (an install log can hold secrets) and the
        jobs agent instances hold only to the node `owner`; others get the state and a generic error."""
        return Processor(
            proc_id=self.proc_id,
            state=self.state,
            gpp=self.gpp,
            error=self.error if owner or self.error is None else HIDDEN_ERROR,
            log_tail=self.log_tail if owner else None,
            instances=self.agent.status(owner) if self.agent is not None else None,
            backend=self.backend.describe(),
        )

    @property
    def is_agent(self) -> bool:
        return self.gpp.proc_descriptor.kind == "agent"


@dataclass
class ActiveJob:
    """A job that is not final yet: its state machine and live status, held in memory and mirrored to the board."""

    job: Job
    machine: JobStateMachine
    progress: int = 0
    messages: MessageLog = field(default_factory=MessageLog)  # bounded (`saas.rti.messages`)
    errors: list[str] = field(default_factory=list)
    announced: set[str] = field(default_factory=set)  # declared outputs the adapter announced
    outputs: dict[str, str] = field(default_factory=dict)  # name -> obj_id
    stored_elsewhere: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> metadata on another DOR
    consumes: dict[str, dict[str, Any]] = field(default_factory=dict)  # what the recipes record about the inputs
    stored: dict[str, CDataObject] = field(default_factory=dict)  # name -> metadata as just stored (not persisted)
    task: asyncio.Task[None] | None = None
    pid: int | None = None  # leader of the adapter's process group while it runs
    lease: Lease | None = None  # agents: the job's admission (its place among the jobs the agent prepares)
    agent_logs: tuple[BinaryIO, BinaryIO] | None = None  # agents: the job's log files, opened with its folder
    located: dict[str, Any] = field(default_factory=dict)  # inputs' locations found at submission (not persisted)
    located_at: float = 0.0  # when (time.monotonic())
    remote: dict[str, Any] | None = None  # a remote/SLURM backend's handle to re-attach to the running job
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) at every change
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # set once the job is final
    _notified_at: float = 0.0  # time.monotonic() of the last `notify`
    _notify_timer: asyncio.TimerHandle | None = None  # a coalesced `notify_soon` waiting to fire

    def notify(self) -> None:
        if self._notify_timer is not None:  # this notification carries the coalesced one
            self._notify_timer.cancel()
            self._notify_timer = None
        self._notified_at = time.monotonic()
        self.changed.set()
        self.changed = asyncio.Event()
        if self.machine.final:
            self.ended.set()

    def notify_soon(self) -> None:
        """`notify`, at most every `NOTIFY_INTERVAL` s (the live status changes with every line an adapter writes:
        waiters wake a few times per second and read the latest)."""
        if self._notify_timer is not None:
            return
        delay = self._notified_at + NOTIFY_INTERVAL - time.monotonic()
        if delay <= 0:
            self.notify()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.notify()
            return
        self._notify_timer = loop.call_later(delay, self.notify)

    def status_doc(self) -> dict[str, Any]:
        return {
            "progress": self.progress,
            "messages": self.messages.entries(),
            "errors": self.errors,
            "timeline": self.machine.timeline,
            "announced": sorted(self.announced),
            "outputs": self.outputs,
            "stored_elsewhere": self.stored_elsewhere,
            "consumes": self.consumes,
            "pid": self.pid,
            "remote": self.remote,
        }


def apply_line(active: ActiveJob, line: str) -> None:
    """A line the adapter (processor or agent) wrote for the job: triggers update its live status (bounded: only
    declared outputs are remembered as announced, messages as `MessageLog` keeps them); waiters hear of it soon."""
    trigger = runner.parse_trigger(line)
    if trigger is not None:
        kind, value = trigger
        if kind == "progress":
            active.progress = value
        elif kind == "output":
            if any(out.name == value for out in active.job.task.output):
                active.announced.add(value)
        else:
            active.messages.add(value[0], value[1], now_ms())
    active.notify_soon()
