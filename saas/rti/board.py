"""The job board of the RTI: a processor's and a job's live record (in memory while they matter) and their rows in
SQLite (`<datastore>/rti/jobs.sqlite`). The functions below block: run them through `Database.run`."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from saas.dor.schemas import CDataObject, GitProcessorPointer, TaskProof
from saas.rti import runner
from saas.rti.agents import AgentPool, Lease
from saas.rti.backends import Backend
from saas.rti.backends.base import UnusableBackend
from saas.rti.jobs import FINAL_STATES, JobStateMachine
from saas.rti.messages import MessageLog
from saas.rti.schemas import Job, Processor

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "SCHEMA",
    "ActiveJob",
    "ProcessorRecord",
    "apply_line",
    "forget_proof",
    "get_job",
    "get_proof",
    "insert_job",
    "migrate",
    "output_stored",
    "outputs_created",
    "put_processor",
    "unfinished",
    "update_job",
]


NOTIFY_INTERVAL = 0.2  # seconds between wake-ups of a job's waiters for the lines its adapter writes


def now_ms() -> int:
    return int(time.time() * 1000)


SCHEMA = """
CREATE TABLE IF NOT EXISTS processors (
    proc_id TEXT PRIMARY KEY, state TEXT NOT NULL, gpp TEXT NOT NULL, error TEXT, log_tail TEXT, backend TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, proc_id TEXT NOT NULL, user_iid TEXT NOT NULL,
    state TEXT NOT NULL, job TEXT NOT NULL, status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_user ON jobs(user_iid);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS proofs (
    job_id TEXT PRIMARY KEY, proof TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outputs (
    job_id TEXT NOT NULL, name TEXT NOT NULL, created INTEGER NOT NULL, obj_id TEXT, PRIMARY KEY (job_id, name)
);
"""


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
            state=self.state,  # type: ignore[arg-type]
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


# -- rows ----------------------------------------------------------------


def put_processor(conn: sqlite3.Connection, p: ProcessorRecord) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO processors (proc_id, state, gpp, error, log_tail, backend) VALUES (?, ?, ?, ?, ?, ?)",
        (p.proc_id, p.state, p.gpp.model_dump_json(), p.error, p.log_tail, json.dumps(p.spec)),
    )


def migrate(conn: sqlite3.Connection) -> None:
    """Boards from before execution backends lack processors.backend (NULL reads as local)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(processors)")}
    if "backend" not in columns:
        conn.execute("ALTER TABLE processors ADD COLUMN backend TEXT")


def insert_job(conn: sqlite3.Connection, a: ActiveJob, proof: TaskProof | None = None) -> None:
    """Store a new job, with the user's signed submission (`proof`) that its outputs are stored with."""
    if proof is not None:
        conn.execute("INSERT INTO proofs (job_id, proof) VALUES (?, ?)", (a.job.id, proof.model_dump_json()))
    conn.execute(
        "INSERT INTO jobs (id, proc_id, user_iid, state, job, status) VALUES (?, ?, ?, ?, ?, ?)",
        (
            a.job.id,
            a.job.proc_id,
            a.job.task.user_iid,
            a.machine.state.value,
            a.job.model_dump_json(),
            json.dumps(a.status_doc()),
        ),
    )


def get_proof(conn: sqlite3.Connection, job_id: str) -> TaskProof | None:
    """The user's signed submission of a job; None for jobs submitted before nodes kept it."""
    row = conn.execute("SELECT proof FROM proofs WHERE job_id = ?", (job_id,)).fetchone()
    return None if row is None else TaskProof.model_validate_json(row["proof"])


def forget_proof(conn: sqlite3.Connection, job_id: str | None = None) -> None:
    """A final job stores no more outputs: its signed submission is no longer needed. Without `job_id`: those of
    every final job (at start, after a crash that lost a queued removal)."""
    if job_id is not None:
        conn.execute("DELETE FROM proofs WHERE job_id = ?", (job_id,))
        return
    final = tuple(s.value for s in FINAL_STATES)
    conn.execute(
        f"DELETE FROM proofs WHERE job_id IN (SELECT id FROM jobs WHERE state IN ({','.join('?' * len(final))}))",
        final,
    )


def update_job(conn: sqlite3.Connection, job_id: str, state: str, status: str) -> None:
    conn.execute("UPDATE jobs SET state = ?, status = ? WHERE id = ?", (state, status, job_id))


def get_job(conn: sqlite3.Connection, job_id: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()


def unfinished(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    final = tuple(s.value for s in FINAL_STATES)
    return conn.execute(
        f"SELECT * FROM jobs WHERE state NOT IN ({','.join('?' * len(final))}) ORDER BY seq", final
    ).fetchall()


def purge_finished(conn: sqlite3.Connection) -> list[str]:
    """Forget every finished job (`--purge-inactive-jobs`); returns their IDs."""
    final = tuple(s.value for s in FINAL_STATES)
    marks = ",".join("?" * len(final))
    ids = [r["id"] for r in conn.execute(f"SELECT id FROM jobs WHERE state IN ({marks})", final).fetchall()]
    conn.executemany("DELETE FROM outputs WHERE job_id = ?", [(i,) for i in ids])
    conn.executemany("DELETE FROM proofs WHERE job_id = ?", [(i,) for i in ids])
    conn.execute(f"DELETE FROM jobs WHERE state IN ({marks})", final)
    return ids


def outputs_created(
    conn: sqlite3.Connection, job_id: str, names: list[str], created: int
) -> dict[str, tuple[int, str | None]]:
    """Per output: the creation time fixed for it (the first call fixes it) and its obj_id once stored."""
    found: dict[str, tuple[int, str | None]] = {}
    for name in names:
        conn.execute("INSERT OR IGNORE INTO outputs (job_id, name, created) VALUES (?, ?, ?)", (job_id, name, created))
        row = conn.execute(
            "SELECT created, obj_id FROM outputs WHERE job_id = ? AND name = ?", (job_id, name)
        ).fetchone()
        found[name] = (int(row["created"]), row["obj_id"])
    return found


def output_stored(conn: sqlite3.Connection, job_id: str, name: str, obj_id: str) -> None:
    conn.execute("UPDATE outputs SET obj_id = ? WHERE job_id = ? AND name = ?", (obj_id, job_id, name))


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
