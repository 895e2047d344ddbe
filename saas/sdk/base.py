"""The high-level SDK: `connect(address, keystore)` gives an `SDKContext` for the whole network of that node.

Names and argument orders follow the original middleware's `saas.sdk.base`, so existing application scripts keep
working: `context.upload_content(...)`, `context.upload_gpp(...)`, `gpp.deploy(context.rti())`,
`proc.submit_and_wait({"a": obj_a, "b": {"v": 2}})`, `obj.download(path)`, `context.find_data_objects([...])`.
What callers may rely on:

- Every call talks to nodes through the proxies (`NodeDBProxy`, `DORProxy`, `RTIProxy`); errors are those of
  `saas.core.errors` (a job that fails or is cancelled raises `JobError` with its reason and log tail).
- Encrypted content is encrypted before upload and decrypted after download with the keystore's content keys
  (`saas.dor.encryption`, shared with `saas-cli dor`).
- `SDKJob.wait` follows the job with the RTI's long-poll (`GET /rti/job/{id}/status?wait=`): a finished job is
  noticed at once, not at the next tick of a polling loop. Progress and message callbacks get every trigger the
  adapter printed, in order (read from the followed log stream).
- Importing this module is light: no FastAPI, uvicorn or libp2p.
"""

from __future__ import annotations

import io
import logging
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from saas.core.errors import InvalidInputError, JobError, NotFoundError, RTIError, SaaSError, UnreachableError
from saas.core.identity import Identity
from saas.core.keystore import Keystore
from saas.core.triggers import parse_trigger
from saas.dor.proxy import DORProxy, search_network
from saas.dor.schemas import CDataObject, DataObject, DataObjectProvenance, GPPDataObject
from saas.nodedb.fanout import DEFAULT_DEADLINE, NetworkList, Unanswered, ask_nodes
from saas.nodedb.proxy import NodeDBProxy
from saas.nodedb.schemas import NodeInfo
from saas.rti.proxy import FINAL, RTIProxy
from saas.rti.schemas import Job, JobStatus, Processor, Task
from saas.rti.validation import BY_REFERENCE, check_task

__all__ = [
    "SDKCDataObject",
    "SDKContext",
    "SDKDataObject",
    "SDKGPPDataObject",
    "SDKJob",
    "SDKProcessor",
    "SDKProductSpecification",
    "connect",
    "publish_identity",
]

T = TypeVar("T")
logger = logging.getLogger(__name__)
NodeRef = NodeInfo | str | tuple[str, int]
LOG_TAIL_LINES = 20
LONG_POLL = 10.0  # seconds one status request may wait for the next change


def _address(node: NodeInfo) -> str:
    return "{}:{}".format(*node.rest_address)


# -- data objects -------------------------------------------------------------------------------------------------


class SDKDataObject:
    """A data object and the DOR node that holds it. `meta` is refreshed by every call that changes the object."""

    def __init__(self, meta: DataObject, context: SDKContext, node: NodeInfo):
        if meta.custodian is None:
            meta.custodian = node
        self._meta = meta
        self._context = context
        self._node = node

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._meta.obj_id} {self._meta.data_type}/{self._meta.data_format}>"

    @property
    def meta(self) -> DataObject:
        return self._meta

    @property
    def node(self) -> NodeInfo:
        """The DOR node holding this object."""
        return self._node

    def _dor(self) -> DORProxy:
        return self._context._dor_proxy(self._node)

    def _update(self, meta: DataObject) -> None:
        meta.custodian = self._node
        self._meta = meta

    def delete(self) -> DataObject:
        """Delete the object (owner only); an encrypted object's key leaves the keystore too."""
        from saas.dor.encryption import forget_content_key

        with self._dor() as dor:
            meta = dor.delete_data_object(self._meta.obj_id, self._context.keystore)
        forget_content_key(self._context.keystore, self._meta.obj_id)
        return meta

    def grant_access(self, identity: Identity) -> None:
        """Give `identity` access (for encrypted content whose key the keystore holds, the key is shared too)."""
        with self._dor() as dor:
            self._update(dor.grant_access(self._meta.obj_id, self._context.keystore, identity))

    def revoke_access(self, identity: Identity | str) -> None:
        with self._dor() as dor:
            self._update(dor.revoke_access(self._meta.obj_id, self._context.keystore, identity))

    def transfer_ownership(self, new_owner: Identity | str) -> None:
        with self._dor() as dor:
            self._update(dor.transfer_ownership(self._meta.obj_id, self._context.keystore, new_owner))

    def update_tags(self, tags: Sequence[DataObject.Tag] | Mapping[str, Any]) -> None:
        """Set tags: `DataObject.Tag` items or a mapping of key to (JSON) value."""
        items = (
            [DataObject.Tag(key=k, value=v) for k, v in tags.items()]
            if isinstance(tags, Mapping)
            else [t if isinstance(t, DataObject.Tag) else DataObject.Tag.model_validate(t) for t in tags]
        )
        with self._dor() as dor:
            self._update(dor.update_tags(self._meta.obj_id, self._context.keystore, items))

    def remove_tags(self, keys: Sequence[str]) -> None:
        with self._dor() as dor:
            self._update(dor.remove_tags(self._meta.obj_id, self._context.keystore, list(keys)))

    def get_provenance(self) -> DataObjectProvenance:
        """How the object came to be: its recipe followed across every DOR of the network."""
        with self._dor() as dor:
            return dor.get_provenance(self._meta.obj_id)


class SDKCDataObject(SDKDataObject):
    """A content data object."""

    @property
    def meta(self) -> CDataObject:
        assert isinstance(self._meta, CDataObject)
        return self._meta

    def download(self, download_path: str | Path) -> Path:
        """Download the content to `download_path` (a folder: `<folder>/<obj_id>.<format>`), decrypted if needed.
        The file appears only once complete and checked against the object's c_hash."""
        from saas.dor.encryption import download_content

        target = Path(download_path)
        if target.is_dir():
            target = target / f"{self._meta.obj_id}.{self._meta.data_format}"
        with self._dor() as dor:
            return download_content(dor, self._context.keystore, self._meta, target)


class SDKGPPDataObject(SDKDataObject):
    """A Git-Processor-Pointer: deploy it on an RTI node to get a processor."""

    @property
    def meta(self) -> GPPDataObject:
        assert isinstance(self._meta, GPPDataObject)
        return self._meta

    def deploy(
        self, node: NodeRef, ssh_profile: str | None = None, wait: bool = True, timeout: float = 600.0
    ) -> SDKProcessor:
        """Deploy on the RTI of `node` (a `NodeInfo` such as `context.rti()`, or an address) and, with `wait`,
        block until it is ready; a failed deployment raises `RTIError` with the install log tail. `ssh_profile`
        names SSH credentials in the keystore for nodes that run adapters on a remote host."""
        keystore = self._context.keystore
        info = self._context._node_info(node)
        if not info.rti_service:
            raise InvalidInputError(f"Node {info.identity.id} at {_address(info)} has no RTI service")
        ssh_credentials = None
        if ssh_profile is not None:
            ssh_credentials = keystore.ssh_credentials.get(ssh_profile)
            if ssh_credentials is None:
                raise NotFoundError(f"No SSH credentials '{ssh_profile}' in the keystore", {"profile": ssh_profile})
        github_credentials = keystore.github_credentials.get(self.meta.gpp.source.rstrip("/"))
        custodian = None if self._node.identity.id == info.identity.id else self._node.identity.id
        with self._context._rti_proxy(info) as rti:
            processor = rti.deploy(
                self._meta.obj_id,
                keystore,
                gpp_custodian=custodian,
                ssh_credentials=ssh_credentials,
                github_credentials=github_credentials,
            )
            if wait:
                processor = rti.wait_deployed(self._meta.obj_id, timeout=timeout, authority=keystore)
                if processor.state == "deploying":
                    raise RTIError(f"Processor {self._meta.obj_id} is still deploying after {timeout:g} s")
                if processor.state != "ready":
                    raise RTIError(
                        f"Deploying processor {self._meta.obj_id} failed: {processor.error}",
                        {"proc_id": self._meta.obj_id, "log_tail": processor.log_tail},
                    )
        return SDKProcessor(processor, self._context, info)


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
    """A submitted job. `status` is the last status seen; `refresh_status()` asks the node again."""

    def __init__(self, processor: SDKProcessor | None, job: Job, context: SDKContext, node: NodeInfo | None = None):
        self._processor = processor
        self._job = job
        self._context = context
        self._node = node or (processor.node if processor is not None else None)
        if self._node is None:
            raise InvalidInputError("A job needs the node that runs it")
        self._status: JobStatus | None = None

    def __repr__(self) -> str:
        state = self._status.state if self._status else "?"
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


# -- the context ----------------------------------------------------------------------------------------------------


class SDKContext:
    """The network as seen from the node `connect` was given, acting as the keystore's identity.

    Network-wide calls (finding objects, processors and jobs, publishing the identity) ask every node at once and
    return within `deadline` seconds with what arrived; `unanswered` then names the nodes that failed or did not
    answer in time (a stalled node costs the deadline, not a timeout per node)."""

    def __init__(
        self,
        address: tuple[str, int],
        keystore: Keystore,
        network: Sequence[NodeInfo],
        timeout: float,
        deadline: float = DEFAULT_DEADLINE,
    ):
        self._address = address
        self._keystore = keystore
        self._timeout = timeout
        self.deadline = deadline
        self.unanswered: list[Unanswered] = []  # of the last network-wide call
        self._nodes: dict[str, NodeInfo] = {n.identity.id: n for n in network}

    def __repr__(self) -> str:
        return f"<SDKContext {self._keystore.iid[:12]} @ {self._address[0]}:{self._address[1]}>"

    @property
    def keystore(self) -> Keystore:
        return self._keystore

    @property
    def authority(self) -> Keystore:  # the original SDK's name
        return self._keystore

    @property
    def user(self) -> Keystore:  # the original SDK's name
        return self._keystore

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    # -- nodes --------------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Ask the node for the network again (nodes that joined or left since `connect`)."""
        with NodeDBProxy(self._address, timeout=self._timeout) as db:
            self._nodes = {n.identity.id: n for n in _usable(db.get_network(), db.get_node())}

    def nodes(self) -> list[NodeInfo]:
        return list(self._nodes.values())

    def _first_node(self) -> NodeInfo | None:
        return next((n for n in self._nodes.values() if tuple(n.rest_address) == tuple(self._address)), None)

    def _pick(self, service: str, preferred_iid: str | None) -> NodeInfo:
        candidates = [n for n in self._nodes.values() if getattr(n, service)]
        label = "DOR" if service == "dor_service" else "RTI"
        if preferred_iid is not None:
            for n in candidates:
                if n.identity.id == preferred_iid:
                    return n
            raise NotFoundError(f"No node {preferred_iid} with a {label} in the network", {"iid": preferred_iid})
        if not candidates:
            raise NotFoundError(f"No node with a {label} in the network of {self._address[0]}:{self._address[1]}")
        own = self._first_node()  # prefer the node we connected to
        return own if own is not None and own in candidates else candidates[0]

    def dor(self, preferred_iid: str | None = None) -> NodeInfo:
        """A node with a DOR (the one connected to, if it has one)."""
        return self._pick("dor_service", preferred_iid)

    def rti(self, preferred_iid: str | None = None) -> NodeInfo:
        """A node with an RTI (the one connected to, if it has one)."""
        return self._pick("rti_service", preferred_iid)

    def _node_info(self, node: NodeRef) -> NodeInfo:
        if isinstance(node, NodeInfo):
            return node
        with NodeDBProxy(node, timeout=self._timeout) as db:
            return db.get_node()

    def _node_info_by_iid(self, iid: str) -> NodeInfo:
        """A node of the network by identity ID (asking the node connected to if it joined after `connect`)."""
        if iid not in self._nodes:
            self.refresh()
        if iid not in self._nodes:
            raise NotFoundError(f"Node {iid} is not in the network of {self._address[0]}:{self._address[1]}")
        return self._nodes[iid]

    def _dor_proxy(self, node: NodeInfo, timeout: float | None = None) -> DORProxy:
        return DORProxy(node.rest_address, self._keystore, node_iid=node.identity.id, timeout=timeout or 60.0)

    def _rti_proxy(self, node: NodeInfo, timeout: float | None = 60.0) -> RTIProxy:
        """A proxy for the node's RTI; `timeout=None` waits without limit (for the followed log stream)."""
        return RTIProxy(node.rest_address, self._keystore, node_iid=node.identity.id, timeout=timeout)  # type: ignore[arg-type]

    def _dor_nodes(self) -> list[NodeInfo]:
        return [n for n in self._nodes.values() if n.dor_service]

    def _rti_nodes(self) -> list[NodeInfo]:
        return [n for n in self._nodes.values() if n.rti_service]

    def _ask(self, function: Callable[[NodeInfo], T], nodes: Sequence[NodeInfo]) -> list[tuple[NodeInfo, T]]:
        """`function` on every node at once, within the deadline: (node, result) of the nodes that answered, in
        their order; the others are remembered in `unanswered`."""
        outcome = ask_nodes(function, nodes, self.deadline)
        self.unanswered = outcome.unanswered
        return outcome.answers

    # -- adding -------------------------------------------------------------------------------------------------

    def upload_content(
        self,
        content_path: str | Path,
        data_type: str,
        data_format: str,
        access_restricted: bool,
        content_encrypted: bool = False,
        creators: Sequence[Identity] | None = None,
        license_by: bool = False,
        license_sa: bool = False,
        license_nc: bool = False,
        license_nd: bool = False,
        preferred_dor_iid: str | None = None,
    ) -> SDKCDataObject:
        """Upload a file as a data object you own; with `content_encrypted` it is encrypted here first (the key
        stays in your keystore)."""
        from saas.dor.encryption import add_content

        node = self.dor(preferred_dor_iid)
        if not Path(content_path).is_file():
            raise InvalidInputError(f"'{content_path}' is not a file")
        with self._dor_proxy(node) as dor:
            meta = add_content(
                dor,
                self._keystore,
                content_path,
                data_type,
                data_format,
                access_restricted,
                content_encrypted,
                creators=creators,
                license_by=license_by,
                license_sa=license_sa,
                license_nc=license_nc,
                license_nd=license_nd,
            )
        return SDKCDataObject(meta, self, node)

    def upload_gpp(
        self,
        source: str,
        commit_id: str,
        proc_path: str,
        proc_config: str,
        creators: Sequence[Identity] | None = None,
        preferred_dor_iid: str | None = None,
    ) -> SDKGPPDataObject:
        """Add a Git-Processor-Pointer (the keystore's GitHub credentials for `source` are used if it has some)."""
        node = self.dor(preferred_dor_iid)
        credentials = self._keystore.github_credentials.get(source.rstrip("/"))
        with self._dor_proxy(node) as dor:
            meta = dor.add_gpp_data_object(
                source,
                commit_id,
                proc_path,
                proc_config,
                self._keystore.identity,
                creators=list(creators) if creators else [self._keystore.identity],
                github_credentials=credentials,
            )
        return SDKGPPDataObject(meta, self, node)

    # -- finding ------------------------------------------------------------------------------------------------

    def _wrap(self, meta: DataObject, node: NodeInfo) -> SDKCDataObject | SDKGPPDataObject:
        if isinstance(meta, GPPDataObject):
            return SDKGPPDataObject(meta, self, node)
        return SDKCDataObject(meta, self, node)

    def _deployed(self) -> list[tuple[NodeInfo, Processor]]:
        def deployed(node: NodeInfo) -> list[Processor]:
            with self._rti_proxy(node, timeout=self.deadline) as rti:
                return rti.get_deployed()

        return [(node, p) for node, found in self._ask(deployed, self._rti_nodes()) for p in found]

    def find_processors(self, pattern: str | None = None) -> list[SDKProcessor]:
        """Ready processors on every RTI of the network whose name contains `pattern` (all without one)."""
        return [
            SDKProcessor(p, self, node)
            for node, p in self._deployed()
            if p.state == "ready" and p.gpp is not None and (not pattern or pattern in p.gpp.proc_descriptor.name)
        ]

    def find_processor_by_id(self, proc_id: str) -> SDKProcessor | None:
        return next((SDKProcessor(p, self, n) for n, p in self._deployed() if p.proc_id == proc_id), None)

    def find_processor_by_name(self, proc_name: str) -> SDKProcessor | None:
        return next(
            (
                SDKProcessor(p, self, n)
                for n, p in self._deployed()
                if p.gpp is not None and p.gpp.proc_descriptor.name == proc_name
            ),
            None,
        )

    def find_data_object(self, obj_id: str) -> SDKCDataObject | SDKGPPDataObject | None:
        """The object with this ID on any DOR of the network (asked concurrently), or None."""

        def lookup(node: NodeInfo) -> DataObject | None:
            try:
                with self._dor_proxy(node, timeout=self.deadline) as dor:
                    return dor.get_meta(obj_id)
            except NotFoundError:
                return None

        for node, meta in self._ask(lookup, self._dor_nodes()):
            if meta is not None:
                return self._wrap(meta, node)
        return None

    def find_data_objects(
        self,
        patterns: Sequence[str] | None = None,
        owner_iid: str | None = None,
        data_type: str | None = None,
        data_format: str | None = None,
        c_hashes: Sequence[str] | None = None,
    ) -> NetworkList[SDKCDataObject | SDKGPPDataObject]:
        """Objects visible to you on every DOR of the network (searched concurrently, within the deadline), newest
        first; `result.unanswered` names the DORs that did not answer. Patterns match substrings of type, format
        and tags."""
        found = search_network(
            self._address,
            self._keystore,
            timeout=self._timeout,
            deadline=self.deadline,
            patterns=list(patterns) if patterns else None,
            owner_iid=owner_iid,
            data_type=data_type,
            data_format=data_format,
            c_hashes=list(c_hashes) if c_hashes else None,
            limit=1000,
        )
        self.unanswered = found.unanswered
        result = []
        for meta in found:
            node = self._nodes.get(meta.custodian.identity.id) if meta.custodian else None
            result.append(self._wrap(meta, node or meta.custodian))  # type: ignore[arg-type]
        return NetworkList(result, found.unanswered)

    def find_job(self, job_id: str) -> SDKJob | None:
        """One of your jobs on any RTI of the network, or None."""

        def lookup(node: NodeInfo) -> Job | None:
            with self._rti_proxy(node, timeout=self.deadline) as rti:
                return next((j for j in rti.get_jobs_by_user(self._keystore) if j.id == job_id), None)

        for node, job in self._ask(lookup, self._rti_nodes()):
            if job is not None:
                processor = next(
                    (
                        SDKProcessor(p, self, node)
                        for n, p in self._deployed()
                        if n.identity.id == node.identity.id and p.proc_id == job.proc_id
                    ),
                    None,
                )
                return SDKJob(processor, job, self, node)
        return None

    def find_jobs(self) -> NetworkList[SDKJob]:
        """All your jobs on every RTI of the network (`result.unanswered`: the RTIs that did not answer)."""

        def jobs(node: NodeInfo) -> list[Job]:
            with self._rti_proxy(node, timeout=self.deadline) as rti:
                return rti.get_jobs_by_user(self._keystore)

        found = [SDKJob(None, j, self, n) for n, jobs_of in self._ask(jobs, self._rti_nodes()) for j in jobs_of]
        return NetworkList(found, self.unanswered)

    find_all_jobs_with_status = find_jobs  # the original SDK's name

    def find_offers(self, task: Mapping[str, Any], rank: str = "wait") -> NetworkList[tuple[NodeInfo, Any]]:
        """Ask every RTI of the network "can I do this?" for `task` (a job descriptor or an offer request): their
        signed offers, ranked (`saas.rti.choosing`); `result.unanswered`: the RTIs that did not answer in time."""
        from saas.rti.choosing import find_offers, offer_request

        request = offer_request(dict(task)) if "output" in task else dict(task)
        found = find_offers(self._address, request, self._keystore, rank, self.deadline)
        self.unanswered = found.unanswered
        return found

    def submit_anywhere(self, task: Mapping[str, Any], rank: str = "wait") -> SDKJob:
        """Submit `task` (a job descriptor) to the RTI with the best offer; raises `NoOfferError` if none can."""
        from saas.rti.choosing import submit_anywhere

        node, _, job = submit_anywhere(self._address, dict(task), self._keystore, rank, self.deadline)
        return SDKJob(None, job, self, node)

    def publish_identity(self, identity: Identity | None = None) -> None:
        """Publish an identity record (yours by default) to every node of the network."""
        record = identity or self._keystore.identity

        def publish(node: NodeInfo) -> None:
            with NodeDBProxy(node.rest_address, timeout=self.deadline) as db:
                db.update_identity(record)

        with NodeDBProxy(self._address, timeout=self._timeout) as db:
            db.update_identity(record)
        self._ask(publish, [n for n in self._nodes.values() if tuple(n.rest_address) != tuple(self._address)])


def publish_identity(address: str | tuple[str, int], identity: Identity) -> None:
    """Publish an identity record to the node at `address` (it reaches the rest of the network from there)."""
    with NodeDBProxy(address) as db:
        db.update_identity(identity)


def _usable(network: list[NodeInfo], own: NodeInfo) -> list[NodeInfo]:
    """The nodes worth talking to: the one connected to, and every other node seen online."""
    nodes = {own.identity.id: own}
    for n in network:
        if n.identity.id != own.identity.id and n.online is not False:
            nodes[n.identity.id] = n
    return list(nodes.values())


def connect(
    address: str | tuple[str, int],
    keystore: Keystore | None = None,
    timeout: float = 10.0,
    deadline: float = DEFAULT_DEADLINE,
    *,
    authority: Keystore | None = None,
) -> SDKContext:
    """Connect to the node at `address` ("host:port" or (host, port)) as the keystore's identity: publishes the
    identity to every node of the network and learns which nodes have a DOR or an RTI. `timeout` bounds a call to
    one node, `deadline` a network-wide call (see `SDKContext`). `authority` is the original SDK's name for
    `keystore`. Raises `InvalidInputError` for a malformed address or no keystore, and `UnreachableError` when no
    node answers there."""
    from saas.core.helpers import parse_address

    keystore = keystore if keystore is not None else authority
    if keystore is None:
        raise InvalidInputError("connect() needs the keystore of the identity to act as")

    parsed = parse_address(address)
    try:
        with NodeDBProxy(parsed, timeout=timeout) as db:
            own = db.get_node()
            network = db.get_network()
    except UnreachableError as e:
        raise UnreachableError(
            f"Cannot connect: no SaaS node answers at {parsed[0]}:{parsed[1]} ({e.reason})", e.details
        ) from e
    context = SDKContext(parsed, keystore, _usable(network, own), timeout, deadline)
    context.publish_identity()
    return context
