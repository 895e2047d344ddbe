"""`Node`: owns the services and starts/stops them in order (DESIGN §3).

Start: datastore → audit log → NodeDB → DOR/RTI → P2P → REST → join; stop in reverse. `start`/`stop` are idempotent and
guarded by a status. Only the outermost runner (`run_node`) handles signals."""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING

from saas.audit.log import AuditLog
from saas.config import NodeConfig
from saas.core.keystore import Keystore
from saas.datastore import FOLDER_MODE, NODE_UMASK, tighten
from saas.nodedb.schemas import NodeInfo
from saas.nodedb.service import NodeDBService
from saas.ops.health import HealthMonitor
from saas.ops.logring import LogRing
from saas.ops.metrics import NodeMetrics
from saas.rest.replay import SeenRequests
from saas.rest.sessions import Sessions

if TYPE_CHECKING:
    from saas.dor.service import DORService
    from saas.p2p.service import P2PService
    from saas.rest.connections import HTTPLimits
    from saas.rest.server import RESTServer
    from saas.rti.service import RTIService

__all__ = ["Node", "NodeStatus", "run_node"]

logger = logging.getLogger(__name__)


class NodeStatus(enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Node:
    def __init__(self, config: NodeConfig, keystore: Keystore):
        self.config = config
        self.keystore = keystore
        self.status = NodeStatus.CREATED
        self.nodedb = NodeDBService(
            config.datastore,
            max_identities=config.max_identities,
            max_nodes=config.max_nodes,
            publish_rate=config.identity_publish_rate,
            publish_burst=config.identity_publish_burst,
        )
        self.seen_requests = SeenRequests(config.datastore / "requests.sqlite")  # signed requests: no replay
        self.sessions = Sessions(  # dashboard sign-in (saas.dashboard)
            config.datastore / "sessions.sqlite",
            keystore.iid,
            config.dashboard_session_lifetime,
            config.dashboard_max_sessions,
        )
        self.audit = AuditLog(
            config.datastore / "audit.sqlite", keystore, config.audit_max_entries, config.audit_max_age_days
        )
        self.dor: DORService | None = None
        self.rti: RTIService | None = None
        self.rest: RESTServer | None = None
        self.p2p: P2PService | None = None
        # Operating the node (issue 19): its last log lines, its view of the network's health, its metrics
        self.log_ring = LogRing(config.log_ring_lines)
        self.health = HealthMonitor(self)
        self.metrics = NodeMetrics(self)
        self.started_ms = 0
        self._sequence = 0
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, config: NodeConfig) -> Node:
        return cls(config, Keystore.load(config.keystore, config.password.get_secret_value()))

    @property
    def iid(self) -> str:
        return self.keystore.iid

    @property
    def rest_address(self) -> tuple[str, int]:
        return self.config.rest_address

    def _record(self) -> NodeInfo:
        """This node's record, signed; each signing gets a higher sequence (ms clock, strictly increasing)."""
        self._sequence = max(int(time.time() * 1000), self._sequence + 1)
        p2p = self.p2p
        info = NodeInfo(
            identity=self.keystore.identity,
            dor_service=self.config.has_dor,
            rti_service=self.config.has_rti,
            rest_address=self.config.rest_address,
            p2p_address=self.config.p2p_address if p2p is None else p2p.address,
            peer_id=None if p2p is None else p2p.peer_id,
            multiaddrs=[] if p2p is None else p2p.multiaddrs,
            retain_job_history=self.config.retain_job_history,
            strict_deployment=self.config.strict_deployment,
            started=self.started_ms,
            isolation=None if self.rti is None else self.rti.isolation,
            sequence=self._sequence,
        )
        return info.model_copy(update={"signature": self.keystore.sign(info.signed_content())})

    async def start(self) -> None:
        async with self._lock:
            if self.status is not NodeStatus.CREATED:
                return
            self.status = NodeStatus.STARTING
            try:
                await self._start()
            except BaseException:
                await self._stop()
                self.status = NodeStatus.STOPPED
                raise
            self.status = NodeStatus.RUNNING

    async def _start(self) -> None:
        from saas.rest.app import create_app
        from saas.rest.server import RESTServer

        self.started_ms = int(time.time() * 1000)
        self.log_ring.attach()
        await asyncio.to_thread(self._open_datastore)
        await self.audit.start()
        await self.nodedb.start()
        await self.seen_requests.start(self.started_ms)
        await self.sessions.start()
        await self.nodedb.publish_identity(self.keystore.identity, bounded=False)
        self.nodedb.set_own(await asyncio.to_thread(self._record))
        if self.config.has_dor:
            from saas.dor.service import DORService

            self.dor = DORService(self)
            await self.dor.start()
            self.nodedb.add_anchors(self.dor.identities_in_use)  # NodeDB keeps the identities the DOR refers to
        if self.config.has_rti:
            from saas.rti.service import RTIService

            self.rti = RTIService(self)
            self.rti.on_finish.extend((self.metrics.job_finished, self.health.job_finished))
            await self.rti.start()
            self.nodedb.add_anchors(self.rti.identities_in_use)
        from saas.p2p.service import P2PService

        self.p2p = P2PService(self)
        await self.p2p.start()
        self.nodedb.set_own(await asyncio.to_thread(self._record))  # now with peer ID and multiaddrs
        host, port = self.config.rest_bind
        self.rest = RESTServer(
            create_app(self),
            host,
            port,
            self.config.log_level,
            self._http_limits(),
            self.config.stop_grace,
            sendfile_threads=self.config.http_sendfile_threads,
        )
        await self.rest.start()
        self.p2p.join()
        logger.info("node %s running: REST %s:%d, P2P %s", self.iid, *self.config.rest_address, self.p2p.multiaddrs[0])

    def _http_limits(self) -> HTTPLimits:
        from saas.rest.connections import HTTPLimits

        config = self.config
        return HTTPLimits(
            max_header_size=config.http_max_header_size,
            header_timeout=config.http_header_timeout,
            body_timeout=config.http_body_timeout,
            keepalive_timeout=config.http_keepalive_timeout,
            max_connections=config.http_max_connections,
            max_connections_per_client=config.http_max_connections_per_client,
            trusted_proxies=tuple(config.trusted_proxies),
        )

    def _open_datastore(self) -> None:
        """Create the datastore (0700) or make an existing one private (DESIGN §12). Blocking: walks the folder."""
        self.config.datastore.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
        tighten(self.config.datastore)

    async def stop(self) -> None:
        async with self._lock:
            if self.status in (NodeStatus.STOPPED, NodeStatus.CREATED):
                self.status = NodeStatus.STOPPED
                return
            self.status = NodeStatus.STOPPING
            await self._stop()
            self.status = NodeStatus.STOPPED

    async def _stop(self) -> None:
        if self.p2p is not None:
            await self.p2p.leave()
        if self.rest is not None:
            await self.rest.stop()
        await self.seen_requests.stop()
        await self.sessions.stop()
        if self.p2p is not None:
            await self.p2p.stop()
        if self.rti is not None:
            await self.rti.stop()
        if self.dor is not None:
            await self.dor.stop()
        await self.nodedb.stop()
        self.health.stop()
        self.log_ring.detach()
        await self.audit.stop()


async def run_node(node: Node, on_started: object = None) -> None:
    """Start the node, wait for SIGINT/SIGTERM, stop gracefully. The outermost runner only.

    The handlers stay installed while the node stops, so a repeated signal cannot interrupt the shutdown
    halfway. Repeats within a second are ignored (tools such as `timeout` deliver one signal to the process and
    to its group); a signal after that means "stop now" and exits at once.

    The process's umask becomes 077, so everything the node (and any process it starts) creates is private to its
    user. That is process-wide state, like the signal handlers, hence here and not in `Node.start`: a node started
    in-process (tests, embedding applications) leaves its host's umask alone and still gets a private datastore
    root and the tightening at start."""
    os.umask(NODE_UMASK)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    first_signal: list[float] = []

    def on_signal(sig: signal.Signals) -> None:
        now = loop.time()
        if not first_signal:
            first_signal.append(now)
            logger.info("%s received: stopping (send it again to stop at once)", sig.name)
            stop.set()
        elif now - first_signal[0] > 1.0:
            print("Stopping at once.", file=sys.stderr, flush=True)
            os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await node.start()
        if callable(on_started):
            on_started(node)
        await stop.wait()
    finally:
        try:
            await node.stop()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
