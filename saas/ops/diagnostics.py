"""Diagnostics of one node (issue 19, item 2): why jobs fail there, what is slow, and what needs attention.

`diagnose(node, owner)` reads the most recent final jobs of the RTI's board (`saas.ops.jobstats`), the jobs that
are still running, the datastore's disk and what NodeDB counted of peers whose records did not verify:

- failed jobs grouped by processor and reason, with counts and first / last seen;
- the slowest recent jobs, and jobs running longer than expected (`LONG_RUN_FACTOR` times the median of their
  processor's recent successful jobs, at least `LONG_RUN_MIN_S`);
- warnings: a processor whose recent jobs mostly fail, jobs running long, a nearly full disk, a peer that keeps
  failing verification;
- for the node owner only: the node's last log lines (`saas.ops.logring`).

Anyone may ask for the public part: counts, processors and times. Failure reasons, job IDs and log lines can tell
about users' work, so they are the owner's only (others see each processor's failures as one group)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pydantic import BaseModel

from saas.ops.health import NodeHealth
from saas.ops.jobstats import BoardStats, FinalJob, time_stats
from saas.rti.jobs import JobState

if TYPE_CHECKING:
    from saas.node import Node

__all__ = ["DiagnosticWarning", "Diagnostics", "FailureGroup", "JobTime", "diagnose"]

SLOWEST = 10  # slowest recent jobs shown
MANY_FAILURES = 5  # failures among a processor's last `FAILURE_WINDOW` final jobs that raise a warning ...
FAILURE_SHARE = 0.5  # ... if they are at least this share of them
FAILURE_WINDOW = 20
LONG_RUN_FACTOR = 3.0
LONG_RUN_MIN_S = 5.0
DISK_FREE_SHARE = 0.05  # a disk with less free than this share, or less than DISK_FREE_BYTES, is nearly full
DISK_FREE_BYTES = 2**30
HIDDEN = "(reasons are shown to the node owner only)"


class FailureGroup(BaseModel):
    proc_id: str
    reason: str
    count: int
    first_seen: int  # ms
    last_seen: int  # ms


class JobTime(BaseModel):
    proc_id: str
    job_id: str | None = None  # the node owner only
    state: str
    seconds: float
    submitted: int  # ms
    expected: float | None = None  # running jobs: the seconds after which they count as long


class DiagnosticWarning(BaseModel):
    kind: str  # "failures", "long-run", "disk", "peer-verification"
    message: str


class Diagnostics(BaseModel):
    iid: str
    time: int  # ms
    owner: bool  # whether the owner's parts (reasons, job IDs, log lines) are included
    jobs_read: int  # recent final jobs the figures are based on
    failures: list[FailureGroup] = []
    slowest: list[JobTime] = []
    long_running: list[JobTime] = []
    warnings: list[DiagnosticWarning] = []
    logs: list[str] | None = None  # the node owner only: the last log lines, oldest first


async def diagnose(node: Node, owner: bool, health: NodeHealth, cache: dict[str, BoardStats]) -> Diagnostics:
    now = int(time.time() * 1000)
    recent: list[FinalJob] = []
    long_running: list[JobTime] = []
    if node.rti is not None:
        stats = await BoardStats.cached(node.rti.db, cache, node.config.health_recent_jobs)
        recent = stats.recent
        long_running = _long_running(node, stats, owner, now)
    failures = _failures(recent, owner)
    slowest = sorted(recent, key=lambda j: j.seconds, reverse=True)[:SLOWEST]
    warnings = _failure_warnings(recent, owner) + _other_warnings(node, health, long_running)
    return Diagnostics(
        iid=node.iid,
        time=now,
        owner=owner,
        jobs_read=len(recent),
        failures=failures,
        slowest=[_job_time(j, owner) for j in slowest],
        long_running=long_running,
        warnings=warnings,
        logs=node.log_ring.lines() if owner else None,
    )


def _job_time(job: FinalJob, owner: bool) -> JobTime:
    return JobTime(
        proc_id=job.proc_id,
        job_id=job.job_id if owner else None,
        state=job.state,
        seconds=job.seconds,
        submitted=job.submitted,
    )


def _failures(recent: list[FinalJob], owner: bool) -> list[FailureGroup]:
    groups: dict[tuple[str, str], FailureGroup] = {}
    for job in recent:
        if job.state != JobState.FAILED.value:
            continue
        key = (job.proc_id, job.reason if owner else HIDDEN)
        group = groups.get(key)
        if group is None:
            groups[key] = FailureGroup(
                proc_id=key[0], reason=key[1], count=1, first_seen=job.ended, last_seen=job.ended
            )
        else:
            group.count += 1
            group.first_seen = min(group.first_seen, job.ended)
            group.last_seen = max(group.last_seen, job.ended)
    return sorted(groups.values(), key=lambda g: (-g.count, g.proc_id, g.reason))


def _failure_warnings(recent: list[FinalJob], owner: bool) -> list[DiagnosticWarning]:
    warnings = []
    by_processor: dict[str, list[FinalJob]] = {}
    for job in recent:  # newest first
        by_processor.setdefault(job.proc_id, []).append(job)
    for proc_id, jobs in sorted(by_processor.items()):
        window = jobs[:FAILURE_WINDOW]
        failed = [j for j in window if j.state == JobState.FAILED.value]
        if len(failed) >= MANY_FAILURES and len(failed) >= FAILURE_SHARE * len(window):
            message = f"processor {proc_id}: {len(failed)} of its last {len(window)} jobs failed"
            if owner:
                reasons: dict[str, int] = {}
                for j in failed:
                    reasons[j.reason] = reasons.get(j.reason, 0) + 1
                common = max(reasons.items(), key=lambda item: item[1])
                message += f" (most often: {common[0]!r}, {common[1]} times)"
            warnings.append(DiagnosticWarning(kind="failures", message=message))
    return warnings


def _long_running(node: Node, stats: BoardStats, owner: bool, now: int) -> list[JobTime]:
    assert node.rti is not None
    by_processor = stats.by_processor()
    found = []
    for active in node.rti.active_jobs():
        if active.machine.state is JobState.PENDING or not active.machine.timeline:
            continue
        times = time_stats(by_processor.get(active.job.proc_id, []))
        if times is None:
            continue  # nothing to compare with yet
        expected = max(LONG_RUN_FACTOR * times.median, LONG_RUN_MIN_S)
        submitted = int(active.machine.timeline[0]["time"])
        seconds = max(0, now - submitted) / 1000
        if seconds > expected:
            found.append(
                JobTime(
                    proc_id=active.job.proc_id,
                    job_id=active.job.id if owner else None,
                    state=active.machine.state.value,
                    seconds=seconds,
                    submitted=submitted,
                    expected=expected,
                )
            )
    return sorted(found, key=lambda j: -j.seconds)


def _other_warnings(node: Node, health: NodeHealth, long_running: list[JobTime]) -> list[DiagnosticWarning]:
    warnings = []
    if long_running:
        longest = long_running[0]
        warnings.append(
            DiagnosticWarning(
                kind="long-run",
                message=f"{len(long_running)} job(s) running longer than expected (longest: {longest.seconds:.0f} s "
                f"on processor {longest.proc_id}, expected at most {longest.expected:.0f} s)",
            )
        )
    disk = health.disk
    if disk and (disk["free"] < DISK_FREE_SHARE * disk["total"] or disk["free"] < DISK_FREE_BYTES):
        warnings.append(
            DiagnosticWarning(
                kind="disk",
                message=f"the datastore's disk is nearly full: {disk['free'] / 2**30:.2f} GiB free of "
                f"{disk['total'] / 2**30:.2f} GiB",
            )
        )
    for info in node.nodedb.network(int(node.config.p2p_offline_after * 1000))[1:]:
        if info.lies:
            warnings.append(
                DiagnosticWarning(
                    kind="peer-verification",
                    message=f"node {info.identity.id[:16]}… ({info.identity.name}) sent {info.lies} record(s) or "
                    "content(s) that did not verify",
                )
            )
    return warnings
