"""The job board of the RTI: the rows of processors and jobs in SQLite (`<datastore>/rti/jobs.sqlite`), SQL only.
The records they mirror live in `saas.rti.records`. The functions below
block: run them through `Database.run`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from saas.dor.schemas import TaskProof
from saas.rti.jobs import FINAL_STATES

if TYPE_CHECKING:
    import sqlite3

    from saas.rti.records import ActiveJob, ProcessorRecord

__all__ = [
    "SCHEMA",
    "delete_processor",
    "forget_proof",
    "get_job",
    "get_proof",
    "insert_job",
    "jobs_of",
    "migrate",
    "output_stored",
    "outputs_created",
    "processors",
    "purge_finished",
    "put_processor",
    "unfinished",
    "update_job",
]


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


def processors(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every deployed processor's row (at start)."""
    return conn.execute("SELECT * FROM processors").fetchall()


def delete_processor(conn: sqlite3.Connection, proc_id: str) -> None:
    conn.execute("DELETE FROM processors WHERE proc_id = ?", (proc_id,))


def jobs_of(conn: sqlite3.Connection, user_iid: str, limit: int) -> list[sqlite3.Row]:
    """A user's jobs and their states, newest first (at most `limit`)."""
    return conn.execute(
        "SELECT id, state, job FROM jobs WHERE user_iid = ? ORDER BY seq DESC LIMIT ?", (user_iid, limit)
    ).fetchall()
