"""`RTIProxy`: the RTI of one node over REST. Method names and argument order follow the original middleware.

`submit_job(proc_id, job_input, job_output, with_authorisation_by, name=None, description=None)` takes
`Task.InputReference` / `Task.InputValue` / `Task.Output` items (or their dicts) and returns a `Job`; `run_job`
(same arguments, plus `timeout`) submits and returns the final `JobStatus`, in one round trip when the job ends
within the node's wait. A by-reference input restricted on another node is delegated to the node for that one
object, from the nodes holding it (`saas.core.delegation`), when the node does not find it by itself."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from pydantic import TypeAdapter

from saas.core.delegation import JOB_INPUT_SCOPES, MAX_LIFETIME_MS, MAX_SERVERS, Delegation
from saas.core.errors import InvalidInputError, NotFoundError, SaaSError
from saas.core.identity import Identity
from saas.core.signing import Signer
from saas.dor.schemas import GitProcessorPointer
from saas.rest.proxy import RESTProxy
from saas.rti.offers_proxy import OffersMixin
from saas.rti.schemas import Job, JobStatus, ListedJob, Processor, Task

__all__ = ["RTIProxy"]

_PROCESSORS = TypeAdapter(list[Processor])
_JOBS = TypeAdapter(list[Job])
_LISTED_JOBS = TypeAdapter(list[ListedJob])
FINAL = ("successful", "failed", "cancelled")
RUN_WAIT = 10.0  # seconds `run_job` lets the node wait before following the job with status requests
DELEGATION_LIFETIME_S = MAX_LIFETIME_MS / 1000 - 60  # inputs are fetched when the job starts, which may be later


def _dump(item: Any) -> dict[str, Any]:
    return item.model_dump(mode="json") if hasattr(item, "model_dump") else dict(item)


def _task(
    proc_id: str,
    job_input: Sequence[Task.InputReference | Task.InputValue | dict[str, Any]],
    job_output: Sequence[Task.Output | dict[str, Any]],
    user: Signer,
    name: str | None,
    description: str | None,
) -> dict[str, Any]:
    return {
        "proc_id": proc_id,
        "user_iid": user.iid,
        "input": [_dump(i) for i in job_input],
        "output": [_dump(o) for o in job_output],
        "name": name,
        "description": description,
    }


def _is_delegation(value: str) -> bool:
    try:
        Delegation.from_header(value)
    except SaaSError:
        return False
    return True


def _may_need_delegation(item: dict[str, Any]) -> bool:
    return item.get("type") == "reference" and not item.get("user_signature") and isinstance(item.get("obj_id"), str)


class RTIProxy(RESTProxy, OffersMixin):
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

    def get_status(self, proc_id: str, authority: Signer | None = None) -> Processor:
        """State and descriptor; for an agent its instances (signed by the node owner: also why it failed, the log
        tail and the jobs agent instances hold)."""
        if authority is None:
            return Processor.model_validate(self.get_json(f"/rti/proc/{proc_id}"))
        return Processor.model_validate(self.get_json(f"/rti/proc/{proc_id}", signer=authority))

    def get_gpp(self, proc_id: str) -> GitProcessorPointer | None:
        try:
            return self.get_status(proc_id).gpp
        except NotFoundError:
            return None

    def wait_deployed(
        self, proc_id: str, timeout: float = 600.0, interval: float = 0.05, authority: Signer | None = None
    ) -> Processor:
        """Poll until the processor is ready or failed (signed by the node owner: with the reason and log tail)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            status = self.get_status(proc_id, authority)
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
        task = _task(proc_id, job_input, job_output, with_authorisation_by, name, description)
        return self.submit_task(task, with_authorisation_by)

    def submit_task(self, task: Task | dict[str, Any], with_authorisation_by: Signer) -> Job:
        """Submit a whole task (the seed's job descriptor). A by-reference input without a `user_signature` that
        is restricted on another node gets the user's delegation for the node to read it from there (see
        `_post_task`)."""
        return Job.model_validate(self._post_task("jobs", task, with_authorisation_by).json())

    def run_job(
        self,
        proc_id: str,
        job_input: Sequence[Task.InputReference | Task.InputValue | dict[str, Any]],
        job_output: Sequence[Task.Output | dict[str, Any]],
        with_authorisation_by: Signer,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
    ) -> JobStatus:
        """`submit_job` and `wait_for_job` in one: the node answers the submission once the job is final, so a job
        that ends quickly (e.g. on a warm agent) takes one round trip. Returns the last status seen: final, or
        whatever it was when `timeout` seconds passed."""
        task = _task(proc_id, job_input, job_output, with_authorisation_by, name, description)
        return self.run_task(task, with_authorisation_by, timeout)

    def run_task(
        self, task: Task | dict[str, Any], with_authorisation_by: Signer, timeout: float | None = None
    ) -> JobStatus:
        """`submit_task`, answered once the job is final (or after `timeout` seconds); see `run_job`."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        wait = RUN_WAIT if timeout is None else max(0.0, min(RUN_WAIT, timeout))
        status = JobStatus.model_validate(
            self._post_task("run", task, with_authorisation_by, params={"wait": wait}).json()
        )
        if status.state in FINAL:
            return status
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.wait_for_job(status.job.id, with_authorisation_by, timeout=remaining)

    def _post_task(
        self, action: str, task: Task | dict[str, Any], user: Signer, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        """POST the task to `/rti/proc/{proc_id}/{action}`. If the node does not find a by-reference input that has
        no `user_signature` (it may be restricted on another node, which shows it to this node only with the
        user's delegation), the inputs are looked up in the network as the user and the task is sent once more
        with a delegation for each input that is restricted on another node (`_delegated`). Inputs the node finds
        (on its own DOR, or unrestricted elsewhere) cost nothing extra."""
        body = self._without_legacy_signatures(_dump(task), user)
        path = f"/rti/proc/{body['proc_id']}/{action}"
        try:
            return self.request("POST", path, params=params, json_body=body, signer=user)
        except InvalidInputError as e:
            delegated = self._delegated(body, user, e.details.get("obj_id"))
            if delegated is None:
                raise
        return self.request("POST", path, params=params, json_body=delegated, signer=user)

    def _without_legacy_signatures(self, body: dict[str, Any], user: Signer) -> dict[str, Any]:
        """The original middleware's `user_signature` (the user's signature of `<node id>:<obj id>`) is dropped when
        it is the user's: the proxy holds the user's keystore, so it gives a delegation wherever the node needs one
        (`_delegated`), as for an input without a signature. Anything else is sent as it is (the node judges it)."""
        identity = getattr(user, "identity", None)
        inputs = []
        for item in body.get("input") or []:
            item, signature = dict(item), item.get("user_signature")
            if isinstance(identity, Identity) and item.get("type") == "reference" and isinstance(signature, str):
                token = f"{self.node_iid}:{item.get('obj_id')}".encode()
                if not _is_delegation(signature) and identity.verify_signature(token, signature):
                    item["user_signature"] = None
            inputs.append(item)
        return {**body, "input": inputs}

    def _delegated(self, body: dict[str, Any], user: Signer, not_found: Any) -> dict[str, Any] | None:
        """`body` with the user's delegation in every by-reference input without a `user_signature` that is
        restricted on other nodes: for this node to read its `metadata` and `content` from those nodes. None if
        `not_found` is not such an input or no input needs one."""
        inputs = [dict(i) for i in body.get("input") or []]
        wanted = [i["obj_id"] for i in inputs if _may_need_delegation(i)]
        if not_found not in wanted:
            return None
        servers = self._restricted_holders(wanted, user)
        if not servers:
            return None
        for item in inputs:
            holders = servers.get(item["obj_id"]) if _may_need_delegation(item) else None
            if holders:
                delegation = Delegation.create(
                    user,
                    self.node_iid,
                    item["obj_id"],
                    servers=holders[:MAX_SERVERS],
                    scopes=JOB_INPUT_SCOPES,
                    lifetime_s=DELEGATION_LIFETIME_S,
                )
                item["user_signature"] = delegation.to_header()
        return {**body, "input": inputs}

    def _restricted_holders(self, obj_ids: list[str], user: Signer) -> dict[str, list[str]]:
        """For each of `obj_ids` that this node does not hold: the other nodes holding it restricted and readable
        by `user` (every DOR of the network is asked, concurrently, as `user`)."""
        from saas.dor.proxy import locate

        holders: dict[str, list[str]] = {}
        for obj_id, records in locate(self.address, user, list(dict.fromkeys(obj_ids))).items():
            nodes = [r.custodian.identity.id for r in records if r.custodian is not None and r.access_restricted]
            if nodes and self.node_iid not in nodes:
                holders[obj_id] = nodes
        return holders

    def get_jobs_by_user(self, authority: Signer) -> list[Job]:
        return list(_JOBS.validate_python(self.get_json("/rti/job", signer=authority)))

    def get_jobs_with_states(self, authority: Signer) -> list[ListedJob]:
        """The caller's jobs with their states, newest first: one request, not one status request per job (a node of
        an earlier release lists no states: then each job's status is asked for, as before)."""
        items = self.get_json("/rti/job", signer=authority)
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and "state" not in item and isinstance(item.get("id"), str):
                    item["state"] = self.get_job_status(item["id"], authority).state
        return list(_LISTED_JOBS.validate_python(items))

    def get_job_status(
        self, job_id: str, with_authorisation_by: Signer, wait: float = 0.0, until_final: bool = False
    ) -> JobStatus:
        """The job's status; with `wait`, the node answers at the next change (or, `until_final`, once the job is
        final), or after `wait` seconds."""
        params: dict[str, Any] | None = None
        if wait:
            params = {"wait": wait, "until": "final"} if until_final else {"wait": wait}
        return JobStatus.model_validate(
            self.get_json(f"/rti/job/{job_id}/status", params=params, signer=with_authorisation_by)
        )

    def wait_for_job(self, job_id: str, with_authorisation_by: Signer, timeout: float | None = None) -> JobStatus:
        """Block until the job is final (the node answers as soon as it is)."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 10.0 if deadline is None else max(0.0, min(10.0, deadline - time.monotonic()))
            status = self.get_job_status(job_id, with_authorisation_by, wait=wait, until_final=True)
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
