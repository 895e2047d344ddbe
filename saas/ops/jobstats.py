"""Job statistics from the RTI's job board, for health, diagnostics and metrics.

A job's time is from its submission to its final state (the first and last entries of its timeline): what its user
waited. The board keeps every job, so the statistics read a bounded window of the most recent final jobs
(`RECENT`) rather than the whole history; the counts by state come from the board's state index.

`board_stats` blocks (SQLite): run it through the RTI's `Database.run`. `BoardStats.cached` keeps one reading for
`CACHE_S` seconds, so anonymous health and metrics requests cost the database one query per window at most (the
health monitor drops it when a job becomes final; the counts of jobs not final yet are taken from memory)."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from saas.rti.jobs import FINAL_STATES

if TYPE_CHECKING:
    import sqlite3

    from saas.sqlite import Database

__all__ = ["RECENT", "BoardStats", "FinalJob", "TimeStats", "board_stats", "time_stats"]

RECENT = 500  # most recent final jobs the statistics read
CACHE_S = 2.0  # seconds one reading of the board is reused


@dataclass(frozen=True)
class FinalJob:
    """A finished job as the statistics see it (`reason`: the reason of its last transition)."""

    job_id: str
    proc_id: str
    user_iid: str
    state: str
    submitted: int  # ms
    ended: int  # ms
    reason: str

    @property
    def seconds(self) -> float:
        return max(0, self.ended - self.submitted) / 1000


@dataclass(frozen=True)
class TimeStats:
    count: int
    min: float
    median: float
    max: float

    def document(self) -> dict[str, Any]:
        return {"count": self.count, "min": self.min, "median": self.median, "max": self.max}


@dataclass
class BoardStats:
    """One reading of the board: jobs by state (all of them) and the most recent final jobs, newest first."""

    states: dict[str, int] = field(default_factory=dict)
    recent: list[FinalJob] = field(default_factory=list)
    read_at: float = 0.0  # time.monotonic()

    @classmethod
    async def cached(cls, db: Database, holder: dict[str, BoardStats], recent: int = RECENT) -> BoardStats:
        """The reading in `holder` if it is fresh, else a new one of the `recent` most recent final jobs."""
        known = holder.get("stats")
        if known is not None and time.monotonic() - known.read_at < CACHE_S:
            return known
        fresh = await db.run(board_stats, recent)
        holder["stats"] = fresh
        return fresh

    def by_processor(self) -> dict[str, list[FinalJob]]:
        grouped: dict[str, list[FinalJob]] = {}
        for job in self.recent:
            grouped.setdefault(job.proc_id, []).append(job)
        return grouped


def board_stats(conn: sqlite3.Connection, recent: int = RECENT) -> BoardStats:
    """Read the board (blocking). Only the timeline's ends are extracted (by SQLite), never the messages."""
    states = {r["state"]: int(r["n"]) for r in conn.execute("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")}
    final = tuple(s.value for s in FINAL_STATES)
    rows = conn.execute(
        "SELECT id, proc_id, user_iid, state, json_extract(status, '$.timeline[0].time') AS submitted, "
        "json_extract(status, '$.timeline[#-1].time') AS ended, json_extract(status, '$.timeline[#-1].reason') "
        f"AS reason FROM jobs WHERE state IN ({','.join('?' * len(final))}) ORDER BY seq DESC LIMIT ?",
        (*final, recent),
    ).fetchall()
    jobs = [
        FinalJob(
            r["id"],
            r["proc_id"],
            r["user_iid"],
            r["state"],
            int(r["submitted"] or 0),
            int(r["ended"] or 0),
            str(r["reason"] or ""),
        )
        for r in rows
    ]
    return BoardStats(states, jobs, time.monotonic())


def time_stats(jobs: list[FinalJob]) -> TimeStats | None:
    """min / median / max seconds of the successful jobs among `jobs` (None if there are none)."""
    seconds = [j.seconds for j in jobs if j.state == "successful"]
    if not seconds:
        return None
    return TimeStats(len(seconds), min(seconds), statistics.median(seconds), max(seconds))
