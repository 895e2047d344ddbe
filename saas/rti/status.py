"""Reading jobs (DESIGN §8): a job's status, a user's jobs and a job's log folder, for the job's user only.

`JobReader` reads the live record of a job that is not final (`ActiveJob`, shared with the service that runs it)
and the job board's row of any other; it changes nothing. Callers may rely on: an unknown job is
`UnknownJobError` (404) and another user's job `AuthorisationError` (403), for every method; a status answered
after a wait reflects the job's latest state (from the board if it left memory meanwhile); a job's outputs are
shown as stored (on this node's DOR, through `LocalDOR.records`, or as another node's DOR answered)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas.core.errors import AuthorisationError, NotFoundError, RTIError
from saas.core.identity import Identity
from saas.dor.schemas import CDataObject
from saas.rti import board
from saas.rti.records import ActiveJob
from saas.rti.schemas import Job, JobStatus, ListedJob
from saas.sqlite import Database

if TYPE_CHECKING:
    import sqlite3

    from saas.rti.ports import LocalDOR

__all__ = ["JobReader", "UnknownJobError"]


class UnknownJobError(RTIError, NotFoundError):
    pass


class JobReader:
    def __init__(self, db: Database, active: dict[str, ActiveJob], logs_root: Path, dor: LocalDOR | None):
        self._db = db
        self._active = active  # the service's: jobs that are not final yet
        self._logs_root = logs_root
        self._dor = dor

    async def job(self, job_id: str, caller: Identity) -> tuple[Job, ActiveJob | None, sqlite3.Row | None]:
        """The job, its live record (None once final) and its board row (read only when it is not live)."""
        active = self._active.get(job_id)
        row = None
        if active is not None:
            job = active.job
        else:
            row = await self._db.run(board.get_job, job_id)
            if row is None:
                raise UnknownJobError(f"Job {job_id} not found", {"job_id": job_id})
            job = Job.model_validate_json(row["job"])
        if job.task.user_iid != caller.id:
            raise AuthorisationError(f"Only the owner of job {job_id} may do this", {"job_id": job_id})
        return job, active, row

    async def get_status(
        self, job_id: str, caller: Identity, wait: float = 0.0, until_final: bool = False
    ) -> JobStatus:
        """With `wait`: answer at the job's next change (or, `until_final`, once it is final), at most `wait` s."""
        job, active, row = await self.job(job_id, caller)
        if active is not None and wait > 0 and not active.machine.final:
            with contextlib.suppress(TimeoutError):  # one wake-up: at the next change, or once final
                await asyncio.wait_for((active.ended if until_final else active.changed).wait(), wait)
            if job_id not in self._active and not active.machine.final:  # gone (e.g. the node is stopping)
                row = await self._db.run(board.get_job, job_id)
                active = None
        known: dict[str, CDataObject] = {}
        if active is not None:
            state, doc, known = active.machine.state.value, active.status_doc(), active.stored
        else:
            assert row is not None
            state, doc = row["state"], json.loads(row["status"])
        return JobStatus(
            state=state,
            progress=doc["progress"],
            output=await self.output_meta(doc["outputs"], doc.get("stored_elsewhere") or {}, known),
            messages=doc["messages"],
            errors=doc["errors"],
            timeline=doc["timeline"],
            job=job,
        )

    async def output_meta(
        self, outputs: dict[str, str], elsewhere: dict[str, dict[str, Any]], known: dict[str, CDataObject]
    ) -> dict[str, CDataObject]:
        """Metadata of a job's outputs: as just stored (`known`, while the job is in memory), else from this node's
        DOR, or as stored on another node's DOR."""
        if known.keys() == outputs.keys():
            return dict(known)
        found: dict[str, CDataObject] = {}
        if self._dor is not None and outputs:
            records = await self._dor.records(list(outputs.values()))
            for name, obj_id in outputs.items():
                model = records.get(obj_id)
                if isinstance(model, CDataObject):
                    found[name] = model
        for name, meta in elsewhere.items():
            if name not in found:
                with contextlib.suppress(ValueError):
                    found[name] = CDataObject.model_validate(meta)
        return found

    async def get_jobs(self, caller: Identity, limit: int = 1000) -> list[ListedJob]:
        """The caller's jobs with their states, newest first (a job not final yet: its live state)."""
        rows = await self._db.run(board.jobs_of, caller.id, limit)
        listed = []
        for r in rows:
            active = self._active.get(r["id"])
            state = active.machine.state.value if active is not None else r["state"]
            listed.append(ListedJob.model_validate({**json.loads(r["job"]), "state": state}))
        return listed

    async def logs_folder(self, job_id: str, caller: Identity) -> tuple[Path, bool]:
        """The job's log folder and whether the job is still running (for follow)."""
        await self.job(job_id, caller)
        return self._logs_root / job_id, job_id in self._active
