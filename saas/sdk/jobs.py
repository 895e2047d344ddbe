"""The SDK's processors and jobs: `SDKProcessor` (submit a task built from objects and values, checked by
`saas.rti.validation.check_task` first), `SDKJob` (wait with the RTI's long-poll, cancel, outcome, logs) and the
thread that follows a job's log for its progress and message triggers (`saas.core.triggers`). Made by an
`SDKContext` (`saas.sdk.base`); errors are those of `saas.core.errors` (a failed job raises `JobError`).
"""

from __future__ import annotations

import io
import logging
import tarfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from saas.core.errors import InvalidInputError, JobError, RTIError, SaaSError
from saas.core.identity import Identity
from saas.core.triggers import parse_trigger
from saas.dor.schemas import DataObject
from saas.nodedb.schemas import NodeInfo
from saas.rti.proxy import FINAL
from saas.rti.schemas import Job, JobStatus, Processor, Task
from saas.rti.validation import BY_REFERENCE, check_task
from saas.sdk.objects import SDKCDataObject, SDKDataObject, _address

if TYPE_CHECKING:
    from saas.sdk.base import SDKContext

__all__ = ["SDKJob", "SDKProcessor", "SDKProductSpecification"]

logger = logging.getLogger(__name__)
LOG_TAIL_LINES = 20
LONG_POLL = 10.0  # seconds one status request may wait for the next change


# -- processors and jobs ------------------------------------------------------------------------------------------


class SDKProductSpecification(BaseModel):
    """How an output is stored; unset fields take the defaults (owned by you, open access, not encrypted)."""

    restricted_access: bool | None = None
    content_encrypted: bool | None = None
    owner: Identity | None = None
    target_node: NodeInfo | None = None


class SDKProcessor:
    """A processor deployed on an RTI node. `descriptor` is its record (`proc_id`, `state`, `gpp`)."""

    def __init__(self, processor: Processor, context: SDKContext, node: NodeInfo):
        self._processor = processor
        self._context = context
        self._node = node

    def __repr__(self) -> str:
        return f"<SDKProcessor {self.proc_id} {self.name} on {_address(self._node)}>"

    @property
    def proc_id(self) -> str:
        return self._processor.proc_id

    @property
    def name(self) -> str | None:
        return self._processor.gpp.proc_descriptor.name if self._processor.gpp else None

    @property
    def descriptor(self) -> Processor:
        return self._processor

    @property
    def node(self) -> NodeInfo:
        return self._node

    def status(self) -> Processor:
        with self._context._rti_proxy(self._node) as rti:
            self._processor = rti.get_status(self.proc_id, self._context.keystore)  # the node owner sees the log
        return self._processor

    def undeploy(self, force: bool = False) -> Processor:
        """Undeploy (refused while jobs are unfinished unless `force`, which cancels them)."""
        with self._context._rti_proxy(self._node) as rti:
            return rti.undeploy(self.proc_id, self._context.keystore, force=force)

    def _task_inputs(self, consume_specs: Mapping[str, Any]) -> list[Task.InputReference | Task.InputValue]:
        gpp = self._processor.gpp or self.status().gpp
        if gpp is None:
            raise RTIError(f"Processor {self.proc_id} has no descriptor (state: {self._processor.state})")
        expected = [spec.name for spec in gpp.proc_descriptor.input]
        check_task(
            gpp.proc_descriptor,
            (
                (name, BY_REFERENCE if isinstance(given, SDKDataObject | DataObject) else given)
                for name, given in consume_specs.items()
            ),
        )
        inputs: list[Task.InputReference | Task.InputValue] = []
        for name in expected:
            given = consume_specs[name]
            if isinstance(given, SDKDataObject):
                self._share_key(given)
                inputs.append(Task.InputReference(name=name, obj_id=given.meta.obj_id))
            elif isinstance(given, DataObject):
                inputs.append(Task.InputReference(name=name, obj_id=given.obj_id))
            else:
                inputs.append(Task.InputValue(name=name, value=given))
        return inputs

    def _share_key(self, obj: SDKDataObject) -> None:
        """An encrypted input is readable by the RTI node only with a key envelope for it: grant the node access
        (which shares the key) if the keystore holds the key and the node has no access yet."""
        meta = obj.meta
        if not getattr(meta, "content_encrypted", False) or self._node.identity.id in meta.access:
            return
        if self._context.keystore.content_keys.get(meta.obj_id) and meta.owner_iid == self._context.keystore.iid:
            obj.grant_access(self._node.identity)

    def submit(
        self,
        consume_specs: Mapping[str, SDKDataObject | Any],
        product_specs: Mapping[str, SDKProductSpecification | Mapping[str, Any]] | None = None,
        name: str | None = None,
        description: str | None = None,
    ) -> SDKJob:
        """Submit a job: `consume_specs` maps each input name to an uploaded object (by reference) or a JSON value
        (by value); `product_specs` optionally sets each output's owner, restriction and encryption."""
        inputs, outputs = self._task_io(consume_specs, product_specs)
        with self._context._rti_proxy(self._node) as rti:
            job = rti.submit_job(
                self.proc_id, inputs, outputs, self._context.keystore, name=name, description=description
            )
        return SDKJob(self, job, self._context)

    def _task_io(
        self,
        consume_specs: Mapping[str, SDKDataObject | Any],
        product_specs: Mapping[str, SDKProductSpecification | Mapping[str, Any]] | None,
    ) -> tuple[list[Task.InputReference | Task.InputValue], list[Task.Output]]:
        keystore = self._context.keystore
        inputs = self._task_inputs(consume_specs)
        gpp = self._processor.gpp
        assert gpp is not None
        specs = dict(product_specs or {})
        unknown = sorted(set(specs) - {o.name for o in gpp.proc_descriptor.output})
        if unknown:
            raise InvalidInputError(f"Unknown output(s) in product_specs: {', '.join(unknown)}")
        outputs = []
        for spec in gpp.proc_descriptor.output:
            given = specs.get(spec.name) or SDKProductSpecification()
            product = (
                given if isinstance(given, SDKProductSpecification) else SDKProductSpecification.model_validate(given)
            )
            outputs.append(
                Task.Output(
                    name=spec.name,
                    owner_iid=product.owner.id if product.owner else keystore.iid,
                    restricted_access=bool(product.restricted_access),
                    content_encrypted=bool(product.content_encrypted),
                    target_node_iid=product.target_node.identity.id if product.target_node else None,
                )
            )
        return inputs, outputs

    def submit_and_wait(
        self,
        consume_specs: Mapping[str, SDKDataObject | Any],
        product_specs: Mapping[str, SDKProductSpecification | Mapping[str, Any]] | None = None,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        callback_progress: Callable[[int], None] | None = None,
        callback_message: Callable[[str, str], None] | None = None,
    ) -> dict[str, SDKCDataObject]:
        """`submit(...)` then `wait(...)`: the outputs by name, or `JobError` if the job fails. Without callbacks
        the node answers the submission itself once the job is final (one round trip for a quick job)."""
        if callback_progress is not None or callback_message is not None:
            job = self.submit(consume_specs, product_specs, name=name, description=description)
            return job.wait(timeout=timeout, callback_progress=callback_progress, callback_message=callback_message)
        inputs, outputs = self._task_io(consume_specs, product_specs)
        with self._context._rti_proxy(self._node, timeout=LONG_POLL + 30) as rti:
            status = rti.run_job(
                self.proc_id,
                inputs,
                outputs,
                self._context.keystore,
                name=name,
                description=description,
                timeout=timeout,
            )
        return SDKJob(self, status.job, self._context).outcome(status, timeout)


class SDKJob:
    """A submitted job. `status` is the last status seen; `refresh_status()` asks the node again; `state` is the
    last state seen (a job list such as `context.find_jobs()` gives it without a request per job)."""

    def __init__(
        self,
        processor: SDKProcessor | None,
        job: Job,
        context: SDKContext,
        node: NodeInfo | None = None,
        state: str | None = None,
    ):
        self._processor = processor
        self._job = job
        self._context = context
        self._node = node or (processor.node if processor is not None else None)
        if self._node is None:
            raise InvalidInputError("A job needs the node that runs it")
        self._status: JobStatus | None = None
        self._state = state  # as listed, until a status is seen

    def __repr__(self) -> str:
        state = self._status.state if self._status else self._state or "?"
        return f"<SDKJob {self._job.id} {state}>"

    @property
    def id(self) -> str:
        return self._job.id

    @property
    def content(self) -> Job:
        return self._job

    @property
    def processor(self) -> SDKProcessor | None:
        return self._processor

    @property
    def status(self) -> JobStatus:
        """The last status seen (asked for if none was seen yet, or the job was not final)."""
        if self._status is None or self._status.state not in FINAL:
            self.refresh_status()
        assert self._status is not None
        return self._status

    @property
    def state(self) -> str:
        """The last state seen: of the last status, else as the job list gave it (asked for if neither). It is not
        refreshed: `refresh_status().state` is the state now."""
        if self._status is not None:
            return self._status.state
        return self._state if self._state is not None else self.refresh_status().state

    def refresh_status(self) -> JobStatus:
        with self._context._rti_proxy(self._node) as rti:  # type: ignore[arg-type]
            self._status = rti.get_job_status(self._job.id, self._context.keystore)
        return self._status

    def cancel(self) -> JobStatus:
        """Cancel the job (any state that is not final); its processes are killed."""
        with self._context._rti_proxy(self._node) as rti:  # type: ignore[arg-type]
            self._status = rti.cancel_job(self._job.id, self._context.keystore)
        return self._status

    def logs(self, download_path: str | Path) -> Path:
        """Download the job's logs (tar.gz with execute_stdout.log and execute_stderr.log)."""
        with self._context._rti_proxy(self._node) as rti:  # type: ignore[arg-type]
            return rti.get_job_logs(self._job.id, self._context.keystore, download_path)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the job's stdout and stderr ('' if the logs cannot be read)."""
        try:
            with self._context._rti_proxy(self._node) as rti:  # type: ignore[arg-type]
                response = rti.request("GET", f"/rti/job/{self._job.id}/logs", signer=self._context.keystore)
            parts = []
            with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
                for member in tar.getmembers():
                    f = tar.extractfile(member)
                    text = f.read().decode("utf-8", "replace") if f else ""
                    tail = text.splitlines()[-lines:]
                    if tail:
                        parts.append(f"--- {member.name} ---\n" + "\n".join(tail))
            return "\n".join(parts)
        except (SaaSError, tarfile.TarError, OSError):
            return ""

    def wait(
        self,
        timeout: float | None = None,
        callback_progress: Callable[[int], None] | None = None,
        callback_message: Callable[[str, str], None] | None = None,
        pace: float | None = None,
    ) -> dict[str, SDKCDataObject]:
        """Block until the job is final (`pace`, the original's polling interval, is accepted and not needed: the
        node answers at each change). Returns `{output name: object}` when it succeeded; raises `JobError`
        (reason, log tail) when it failed or was cancelled, or when `timeout` seconds passed first.

        `callback_progress(percent)` and `callback_message(severity, text)` get each trigger the adapter printed,
        in order; they run in a helper thread that follows the job's log stream. An exception a callback raises
        stops the callbacks and is raised here once the job is final."""
        keystore = self._context.keystore
        deadline = None if timeout is None else time.monotonic() + timeout
        follower = None
        if callback_progress is not None or callback_message is not None:
            follower = _TriggerFollower(self._context, self._node, self._job.id, callback_progress, callback_message)  # type: ignore[arg-type]
            follower.start()
        try:
            with self._context._rti_proxy(self._node, timeout=LONG_POLL + 30) as rti:  # type: ignore[arg-type]
                status = rti.get_job_status(self._job.id, keystore)
                while status.state not in FINAL:
                    remaining = LONG_POLL if deadline is None else deadline - time.monotonic()
                    if remaining <= 0:
                        return self.outcome(status, timeout)  # raises: not final in time
                    status = rti.get_job_status(self._job.id, keystore, wait=max(0.01, min(LONG_POLL, remaining)))
            if follower is not None:
                follower.finish(5.0)  # the log stream ends right after the job; deliver what is left
        finally:
            if follower is not None:
                follower.stop()
        if follower is not None and follower.callback_error is not None:
            raise follower.callback_error
        return self.outcome(status, timeout)

    def outcome(self, status: JobStatus, timeout: float | None = None) -> dict[str, SDKCDataObject]:
        """What `wait` returns for a status seen: the outputs by name once successful, else `JobError`."""
        self._status = status
        if status.state not in FINAL:
            raise JobError(
                f"Job {self._job.id} is still {status.state} after {timeout:g} s",
                {"job_id": self._job.id, "state": status.state, "errors": status.errors},
            )
        if status.state != "successful":
            reason = (
                status.errors[-1] if status.errors else (status.timeline[-1].get("reason") if status.timeline else "")
            )
            tail = self.log_tail()
            message = f"Job {self._job.id} {status.state}" + (f": {reason}" if reason else "")
            if tail:
                message += f"\nLog tail:\n{tail}"
            raise JobError(
                message, {"job_id": self._job.id, "state": status.state, "errors": status.errors, "log_tail": tail}
            )
        targets = {o.name: o.target_node_iid for o in self._job.task.output}
        return {
            name: SDKCDataObject(meta, self._context, self._output_node(targets.get(name)))
            for name, meta in status.output.items()
        }

    def _output_node(self, target_iid: str | None) -> NodeInfo:
        """Where an output is stored: its target node if the task named one, else the node that ran the job."""
        assert self._node is not None
        if target_iid is None or target_iid == self._node.identity.id:
            return self._node
        return self._context._node_info_by_iid(target_iid)


class _TriggerFollower:
    """Follows a job's log stream in a daemon thread and calls the callbacks for each trigger line, in order."""

    def __init__(
        self,
        context: SDKContext,
        node: NodeInfo,
        job_id: str,
        on_progress: Callable[[int], None] | None,
        on_message: Callable[[str, str], None] | None,
    ):
        self._context = context
        self._node = node
        self._job_id = job_id
        self._on_progress = on_progress
        self._on_message = on_message
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"sdk-follow-{job_id}", daemon=True)
        self.callback_error: Exception | None = None

    def start(self) -> None:
        self._thread.start()

    def finish(self, timeout: float) -> None:
        self._thread.join(timeout)

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()

    def _run(self) -> None:
        try:
            # no read timeout: the node sends nothing while the job is silent, and ends the stream when it is final
            with self._context._rti_proxy(self._node, timeout=None) as rti:
                for line in rti.follow_job_logs(self._job_id, self._context.keystore):
                    if self._stopped.is_set():
                        return
                    trigger = parse_trigger(line)
                    if trigger is None:
                        continue
                    kind, value = trigger
                    with self._lock:
                        if self._stopped.is_set():
                            return
                        try:
                            if kind == "progress" and self._on_progress is not None:
                                self._on_progress(value)
                            elif kind == "message" and self._on_message is not None:
                                self._on_message(*value)
                        except Exception as e:  # the caller's bug: `wait` raises it once the job is final
                            self.callback_error = e
                            return
        except Exception:  # the stream broke (e.g. the node went away): waiting goes on with the status long-poll
            logger.debug("following the logs of job %s stopped", self._job_id, exc_info=True)
