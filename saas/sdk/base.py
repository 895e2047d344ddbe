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

This module holds the context and `connect`; the objects are in `saas.sdk.objects`, processors and jobs in
`saas.sdk.jobs`, the context's booking methods in `saas.sdk.bookings`. Every public name stays importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from saas.core.errors import InvalidInputError, NotFoundError, UnreachableError
from saas.core.identity import Identity
from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy, search_network
from saas.dor.schemas import DataObject, GPPDataObject
from saas.nodedb.fanout import DEFAULT_DEADLINE, NetworkList, Unanswered, ask_nodes
from saas.nodedb.proxy import NodeDBProxy
from saas.nodedb.schemas import NodeInfo
from saas.rti.proxy import RTIProxy
from saas.rti.schemas import Job, ListedJob, Processor
from saas.sdk.bookings import BookingsMixin
from saas.sdk.jobs import SDKJob, SDKProcessor, SDKProductSpecification
from saas.sdk.objects import NodeRef, SDKCDataObject, SDKDataObject, SDKGPPDataObject

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


# -- the context ----------------------------------------------------------------------------------------------------


class SDKContext(BookingsMixin):
    """The network as seen from the node `connect` was given, acting as the keystore's identity.

    Network-wide calls (finding objects, processors and jobs, publishing the identity) ask every node at once and
    return within `deadline` seconds with what arrived; `unanswered` then names the nodes that failed or did not
    answer in time (a stalled node costs the deadline, not a timeout per node). Bookings of resource packages
    (`get_availability`, `book`, `get_bookings`, `unbook`, ...) are in `saas.sdk.bookings`."""

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
        return RTIProxy(node.rest_address, self._keystore, node_iid=node.identity.id, timeout=timeout)

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

        def lookup(node: NodeInfo) -> ListedJob | None:
            with self._rti_proxy(node, timeout=self.deadline) as rti:
                return next((j for j in rti.get_jobs_with_states(self._keystore) if j.id == job_id), None)

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
                return SDKJob(processor, _job(job), self, node, job.state)
        return None

    def find_jobs(self) -> NetworkList[SDKJob]:
        """All your jobs on every RTI of the network, each with its state (`job.state`; one request per RTI, not per
        job); `result.unanswered`: the RTIs that did not answer."""

        def jobs(node: NodeInfo) -> list[ListedJob]:
            with self._rti_proxy(node, timeout=self.deadline) as rti:
                return rti.get_jobs_with_states(self._keystore)

        found = [
            SDKJob(None, _job(j), self, n, j.state)
            for n, jobs_of in self._ask(jobs, self._rti_nodes())
            for j in jobs_of
        ]
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


def _job(listed: ListedJob) -> Job:
    """The job of a job list's entry (its state is the `SDKJob`'s, not part of the job)."""
    return Job.model_validate(listed.model_dump(exclude={"state"}))


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
