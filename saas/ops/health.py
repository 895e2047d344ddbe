"""Health of a node and of the network (issue 19, item 1).

- `own_health(node)`: this node's `NodeHealth` — version, uptime, services, jobs by state, queue length, running and
  queued jobs and agent instances per processor, job time statistics (min / median / max per processor, over the
  most recent final jobs: `saas.ops.jobstats`), CPU load, memory, the datastore's disk, peers online, and the last
  error the node logged (`saas.ops.logring`; identifiers and paths masked). Public: counts and states only, never
  job IDs, users or inputs.
- `HealthMonitor.network(deadline)`: every node this node knows, asked at once under one deadline (the client-side
  fan-out of `saas.nodedb.fanout`, run in a worker thread). A node that does not answer shows its last known
  health (as this node last received it), when that was, and since when it has not answered.
- Health documents are signed by their node (`NodeHealth.signature`, over every other field). An answer that is
  not signed by the identity the node's record names, or that is older (or newer) than the node's request window,
  is not taken: the node is shown unreachable with the reason, and its last verified health stays."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from saas import __version__
from saas.core.errors import RemoteError, UnreachableError
from saas.core.signing import canonical_json
from saas.nodedb.fanout import ask_nodes
from saas.ops.jobstats import BoardStats, time_stats
from saas.rti.jobs import FINAL_STATES, JobState

if TYPE_CHECKING:
    from saas.core.identity import Identity
    from saas.node import Node
    from saas.nodedb.schemas import NodeInfo

__all__ = ["HealthMonitor", "NetworkHealth", "NodeHealth", "ProcessorHealth", "own_health"]

MAX_DEADLINE = 30.0
MAX_ANSWER = 1 << 20  # bytes of a peer's health document read at most


class ProcessorHealth(BaseModel):
    proc_id: str
    name: str | None = None
    state: str
    backend: str = "local"
    running: int = 0  # jobs initialising, running or storing their outputs
    queued: int = 0  # jobs waiting to start
    instances: list[dict[str, Any]] | None = None  # agents: state, jobs served and restarts of each instance
    job_time: dict[str, Any] | None = None  # seconds of recent successful jobs: count, min, median, max


class NodeHealth(BaseModel):
    iid: str
    name: str
    version: str
    time: int  # ms: when this document was made
    started: int  # ms
    uptime: float  # seconds
    services: list[str]  # "dor", "rti"
    isolation: str | None = None
    jobs: dict[str, int] = {}  # state -> jobs on the board
    queue_length: int = 0
    processors: list[ProcessorHealth] = []
    cpu: dict[str, Any] = {}  # count, load1, load5, load15
    memory: dict[str, int] = {}  # bytes: total, available
    disk: dict[str, int] = {}  # bytes of the datastore's file system: total, free
    peers_online: int = 0
    nodes_known: int = 0
    last_error: dict[str, Any] | None = None  # time (ms), logger, message
    signature: str | None = None  # by the node's identity over every other field (`signed_content`)

    def signed_content(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", exclude={"signature"}))

    def signed_by(self, identity: Identity) -> bool:
        """True if `identity` is this document's node and signed it as it is."""
        return (
            self.iid == identity.id
            and self.signature is not None
            and identity.verify_signature(self.signed_content(), self.signature)
        )


class NetworkHealth(BaseModel):
    """One node of the network as the asked node sees it. `health` is the node's answer, or (unreachable) the last
    one received (`answered` says when; None if it never answered); `unreachable_since` is when it first failed to
    answer after its last answer."""

    iid: str
    name: str
    rest_address: tuple[str, int]
    reachable: bool
    reason: str | None = None
    answered: int | None = None
    unreachable_since: int | None = None
    health: NodeHealth | None = None


async def own_health(node: Node, cache: dict[str, BoardStats]) -> NodeHealth:
    """This node's health. `cache` holds the last reading of the job board (reused for a couple of seconds)."""
    now = int(time.time() * 1000)
    machine = await asyncio.to_thread(_machine, node.config.datastore)
    services = [name for name, on in (("dor", node.config.has_dor), ("rti", node.config.has_rti)) if on]
    rti = node.rti
    jobs: dict[str, int] = {}
    processors: list[ProcessorHealth] = []
    queue = 0
    if rti is not None:
        stats = await BoardStats.cached(rti.db, cache, node.config.health_recent_jobs)
        active = rti.active_jobs()
        jobs = {state.value: stats.states.get(state.value, 0) if state in FINAL_STATES else 0 for state in JobState}
        for a in active:  # live, from memory: the board's reading may be a couple of seconds old
            jobs[a.machine.state.value] += 1
        recent = stats.by_processor()
        queue = sum(1 for a in active if a.machine.state is JobState.PENDING)
        by_processor: dict[str, list[Any]] = {}
        for a in active:
            by_processor.setdefault(a.job.proc_id, []).append(a)
        for p in rti.get_deployed():
            mine = by_processor.get(p.proc_id, [])
            queued = sum(1 for a in mine if a.machine.state is JobState.PENDING)
            times = time_stats(recent.get(p.proc_id, []))
            processors.append(
                ProcessorHealth(
                    proc_id=p.proc_id,
                    name=p.gpp.proc_descriptor.name if p.gpp is not None else None,
                    state=p.state,
                    backend=str(p.backend.get("name", "local")),
                    running=len(mine) - queued,
                    queued=queued,
                    instances=None
                    if p.instances is None
                    else [i.model_dump(include={"index", "state", "jobs_served", "restarts"}) for i in p.instances],
                    job_time=None if times is None else times.document(),
                )
            )
    network = node.nodedb.network(int(node.config.p2p_offline_after * 1000))
    return NodeHealth(
        iid=node.iid,
        name=node.keystore.identity.name,
        version=__version__,
        time=now,
        started=node.started_ms,
        uptime=round(max(0, now - node.started_ms) / 1000, 1),
        services=services,
        isolation=None if rti is None else rti.isolation,
        jobs=jobs,
        queue_length=queue,
        processors=processors,
        peers_online=sum(1 for n in network[1:] if n.online),
        nodes_known=len(network),
        last_error=_public(node.log_ring.last_error),
        **machine,
    )


def _public(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last error as anyone may see it: identifiers (job, object, identity IDs: runs of 16 or more letters and
    digits) and paths are masked; the full line is in the owner's diagnostics."""
    if error is None:
        return None
    message = _IDENTIFIER.sub("…", str(error.get("message", "")))
    return {**error, "message": _PATH.sub("<path>", message)}


_IDENTIFIER = re.compile(r"[A-Za-z0-9]{16,}")
_PATH = re.compile(r"(?<![\w.])/[^\s'\"]+")


def _machine(datastore: Any) -> dict[str, Any]:
    """CPU load, memory and the datastore's disk (blocking: reads /proc and statvfs)."""
    count = os.cpu_count() or 1
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    cpu = {"count": count, "load1": round(load[0], 2), "load5": round(load[1], 2), "load15": round(load[2], 2)}
    memory: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            fields = {k.strip(): v.split() for k, v in (line.split(":", 1) for line in f if ":" in line)}
        memory = {"total": int(fields["MemTotal"][0]) * 1024, "available": int(fields["MemAvailable"][0]) * 1024}
    except (OSError, KeyError, ValueError):
        page = os.sysconf("SC_PAGE_SIZE")
        memory = {"total": page * os.sysconf("SC_PHYS_PAGES"), "available": page * os.sysconf("SC_AVPHYS_PAGES")}
    try:
        usage = shutil.disk_usage(datastore)
        disk = {"total": usage.total, "free": usage.free}
    except OSError:
        disk = {}
    return {"cpu": cpu, "memory": memory, "disk": disk}


class HealthMonitor:
    """The network's health as this node sees it, with each node's last known health."""

    def __init__(self, node: Node):
        self._node = node
        self.board_cache: dict[str, BoardStats] = {}
        self._last: dict[str, tuple[NodeHealth, int]] = {}  # iid -> (health, when it answered)
        self._failing_since: dict[str, int] = {}
        self._asking: asyncio.Task[list[NetworkHealth]] | None = None  # the network call in flight

    def stop(self) -> None:
        """The node stops: a network call in flight is given up (its threads end by their own deadline)."""
        if self._asking is not None:
            self._asking.cancel()

    def job_finished(self, _: object) -> None:
        """The RTI's listener of final jobs (`RTIService.on_finish`): the board's reading is out of date."""
        self.board_cache.clear()

    async def own(self, signed: bool = False) -> NodeHealth:
        """This node's health; `signed` adds the node's signature (what peers and clients are given)."""
        health = await own_health(self._node, self.board_cache)
        if not signed:
            return health
        signature = await asyncio.to_thread(self._node.keystore.sign, health.signed_content())
        return health.model_copy(update={"signature": signature})

    async def network(self, deadline: float) -> list[NetworkHealth]:
        """This node's health and every known node's, asked at once; returns within `deadline` seconds (plus the
        time to make this node's own document).

        The request is anonymous and makes this node ask every other node, so callers share the work: a call made
        while another is in flight waits for that one's answer (one fan-out at a time, however many ask)."""
        if self._asking is None or self._asking.done():
            self._asking = asyncio.create_task(self._ask_network(deadline))
        return await asyncio.shield(self._asking)

    async def _ask_network(self, deadline: float) -> list[NetworkHealth]:
        deadline = min(max(deadline, 0.1), MAX_DEADLINE)
        node = self._node
        known = node.nodedb.network(int(node.config.p2p_offline_after * 1000))
        own = await self.own(signed=True)
        others = known[1:]
        window = node.config.request_window
        outcome = await asyncio.to_thread(ask_nodes, lambda info: _ask(info, deadline, window), others, deadline)
        now = int(time.time() * 1000)
        answers = {info.identity.id: health for info, health in outcome.answers}
        reasons = {u.node.identity.id: u.reason for u in outcome.unanswered}
        result = [_entry(known[0], own, True, now, None, None)]
        for info in others:
            iid = info.identity.id
            health = answers.get(iid)
            if health is not None:
                self._last[iid] = (health, now)
                self._failing_since.pop(iid, None)
                result.append(_entry(info, health, True, now, None, None))
                continue
            since = self._failing_since.setdefault(iid, now)
            last, answered = self._last.get(iid, (None, None))
            result.append(_entry(info, last, False, answered, since, reasons.get(iid, "no answer")))
        for iid in set(self._last) - {info.identity.id for info in others}:  # forgotten nodes
            self._last.pop(iid, None)
            self._failing_since.pop(iid, None)
        return result


def _ask(info: NodeInfo, deadline: float, window: float) -> NodeHealth:
    """One node's health over REST (blocking; runs in a fan-out thread). At most `MAX_ANSWER` bytes are read: a
    peer cannot make this node hold a document of any size. The document must be signed by the node the record
    names and made within `window` seconds of now."""
    import httpx

    from saas.rest.proxy import RESTProxy

    with RESTProxy(info.rest_address, timeout=deadline) as proxy:
        response = proxy.request("GET", "/db/node/health", stream=True)
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_ANSWER:
                    raise RemoteError(f"Answered with more than {MAX_ANSWER} bytes", {"limit": MAX_ANSWER})
        except httpx.HTTPError as e:  # the answer stalled or broke off
            raise UnreachableError(f"The answer broke off: {type(e).__name__}", {}) from None
        finally:
            response.close()
    try:
        health = NodeHealth.model_validate(json.loads(body))
    except (ValueError, RecursionError) as e:  # not a health document: an answer, but not one to show
        raise RemoteError("Answered with an invalid health document", {"error": str(e)[:200]}) from None
    if health.iid != info.identity.id:
        raise RemoteError("Answered as another node", {"iid": health.iid})
    if not health.signed_by(info.identity):
        raise RemoteError("Answered with a health document its node did not sign", {"iid": health.iid})
    age = time.time() - health.time / 1000
    if abs(age) > window:
        raise RemoteError(
            f"Answered with a health document made {abs(age):.0f} s {'ago' if age > 0 else 'ahead'}",
            {"window": window},
        )
    return health


def _entry(
    info: NodeInfo,
    health: NodeHealth | None,
    reachable: bool,
    answered: int | None,
    since: int | None,
    reason: str | None,
) -> NetworkHealth:
    return NetworkHealth(
        iid=info.identity.id,
        name=info.identity.name,
        rest_address=info.rest_address,
        reachable=reachable,
        reason=reason,
        answered=answered,
        unreachable_since=since,
        health=health,
    )
