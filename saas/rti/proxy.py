"""`RTIProxy`: the RTI of one node over REST. Method names and argument order follow the original middleware.

`submit_job(proc_id, job_input, job_output, with_authorisation_by, name=None, description=None)` takes
`Task.InputReference` / `Task.InputValue` / `Task.Output` items (or their dicts) and returns a `Job`."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from saas.core.errors import NotFoundError
from saas.core.signing import Signer
from saas.dor.schemas import GitProcessorPointer
from saas.rest.proxy import RESTProxy
from saas.rti.schemas import Job, JobStatus, Processor, Task

__all__ = ["RTIProxy"]

_PROCESSORS = TypeAdapter(list[Processor])
_JOBS = TypeAdapter(list[Job])
FINAL = ("successful", "failed", "cancelled")


def _dump(item: Any) -> dict[str, Any]:
    return item.model_dump(mode="json") if hasattr(item, "model_dump") else dict(item)


class RTIProxy(RESTProxy):
    def __init__(self, address: str | tuple[str, int], keystore: Signer | None = None, **kwargs: Any):
        super().__init__(address, keystore, **kwargs)

    # -- processors ---------------------------------------------------------------------------------------------

    def get_deployed(self) -> list[Processor]:
        return list(_PROCESSORS.validate_python(self.get_json("/rti")))

    def deploy(
        self,
        proc_id: str,
        authority: Signer,
        deployment: str = "native",
        gpp_custodian: str | None = None,
        ssh_credentials: Any = None,
        github_credentials: Any = None,
        *,
        backend: str | None = None,
        partition: str | None = None,
    ) -> Processor:
        """Start deploying; returns at once (poll `get_status` or use `wait_deployed`).

        `ssh_credentials` (`SSHCredentials`) deploy on that host (backend `ssh`, the default with credentials) or
        submit to SLURM through it (`backend="slurm"`); `backend="slurm"` without them uses the node's own SLURM.
        Credentials travel encrypted for the node."""
        encrypted = None if github_credentials is None else self.encrypt_github_credentials(github_credentials)
        body: dict[str, Any] = {
            "deployment": deployment,
            "gpp_custodian": gpp_custodian,
            "github_credentials": encrypted,
            "ssh_credentials": None if ssh_credentials is None else self.encrypt_ssh_credentials(ssh_credentials),
        }
        if backend is not None:
            body["backend"] = backend
        if partition is not None:
            body["partition"] = partition
        return Processor.model_validate(
            self.request("POST", f"/rti/proc/{proc_id}", json_body=body, signer=authority).json()
        )

    def undeploy(self, proc_id: str, authority: Signer, force: bool = False) -> Processor:
        params = {"force": "true"} if force else None
        return Processor.model_validate(
            self.request("DELETE", f"/rti/proc/{proc_id}", params=params, signer=authority).json()
        )

    def get_status(self, proc_id: str) -> Processor:
        return Processor.model_validate(self.get_json(f"/rti/proc/{proc_id}"))

    def get_gpp(self, proc_id: str) -> GitProcessorPointer | None:
        try:
            return self.get_status(proc_id).gpp
        except NotFoundError:
            return None

    def wait_deployed(self, proc_id: str, timeout: float = 600.0, interval: float = 0.05) -> Processor:
        """Poll until the processor is ready or failed."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            status = self.get_status(proc_id)
            if status.state != "deploying" or time.monotonic() > deadline:
                return status
            time.sleep(interval)

    # -- jobs ---------------------------------------------------------------------------------------------------

    def submit_job(
        self,
        proc_id: str,
        job_input: Sequence[Task.InputReference | Task.InputValue | dict[str, Any]],
        job_output: Sequence[Task.Output | dict[str, Any]],
        with_authorisation_by: Signer,
        name: str | None = None,
        description: str | None = None,
    ) -> Job:
        task = {
            "proc_id": proc_id,
            "user_iid": with_authorisation_by.iid,
            "input": [_dump(i) for i in job_input],
            "output": [_dump(o) for o in job_output],
            "name": name,
            "description": description,
        }
        return self.submit_task(task, with_authorisation_by)

    def submit_task(self, task: Task | dict[str, Any], with_authorisation_by: Signer) -> Job:
        """Submit a whole task (the seed's job descriptor)."""
        body = _dump(task)
        response = self.request(
            "POST", f"/rti/proc/{body['proc_id']}/jobs", json_body=body, signer=with_authorisation_by
        )
        return Job.model_validate(response.json())

    def get_jobs_by_user(self, authority: Signer) -> list[Job]:
        return list(_JOBS.validate_python(self.get_json("/rti/job", signer=authority)))

    def get_job_status(self, job_id: str, with_authorisation_by: Signer, wait: float = 0.0) -> JobStatus:
        """The job's status; with `wait`, the node answers at the next change (or after `wait` seconds)."""
        params = {"wait": wait} if wait else None
        return JobStatus.model_validate(
            self.get_json(f"/rti/job/{job_id}/status", params=params, signer=with_authorisation_by)
        )

    def wait_for_job(self, job_id: str, with_authorisation_by: Signer, timeout: float | None = None) -> JobStatus:
        """Block until the job is final (the node answers as soon as anything changes)."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.get_job_status(job_id, with_authorisation_by, wait=10.0)
            if status.state in FINAL or (deadline is not None and time.monotonic() > deadline):
                return status

    def get_job_logs(self, job_id: str, with_authorisation_by: Signer, download_path: str | Path) -> Path:
        """Download the logs (tar.gz) to `download_path`."""
        response = self.request("GET", f"/rti/job/{job_id}/logs", signer=with_authorisation_by)
        target = Path(download_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(response.content)
        with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz"):
            pass  # a valid archive
        return target

    def follow_job_logs(self, job_id: str, with_authorisation_by: Signer) -> Iterator[str]:
        """Log lines as the job writes them; ends when the job is final."""
        response = self.request(
            "GET", f"/rti/job/{job_id}/logs", params={"follow": "true"}, signer=with_authorisation_by, stream=True
        )
        try:
            yield from response.iter_lines()
        finally:
            response.close()

    def cancel_job(self, job_id: str, with_authorisation_by: Signer) -> JobStatus:
        return JobStatus.model_validate(
            self.request("DELETE", f"/rti/job/{job_id}", signer=with_authorisation_by).json()
        )
