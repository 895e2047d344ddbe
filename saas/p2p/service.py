"""`P2PService`: the node's place in the network — joining through the boot node, accepting peers, keeping
NodeDB in sync, and watching liveness (DESIGN §7).

- **Peers.** A connection (in or out) becomes an accepted peer only after the identity exchange
  (`protocols.identity`); a connection not accepted within `ACCEPT_WITHIN` seconds is closed. Only accepted peers
  are served on `/saas/nodedb/1.0.0` and `/saas/dor/1.0.0` (DOR lookups: `saas.dor.remote`).
- **Joining.** `boot_node` is `host:port` or a multiaddr. With `host:port` the boot node's peer ID is learned by a
  Noise handshake (`P2PHost.probe`) and pinned in NodeDB on first use; a later different answer is refused. A
  boot address that is this node itself makes it the first node. Joining retries with backoff until it works;
  then the joiner exchanges snapshots with the boot node and, after a short delay (`DIAL_DELAY`), connects to every
  node it learned of.
- **Sync.** Accepted NodeDB changes (a new identity published here, a newer node record) are pushed to every
  peer; each round (`p2p_sync_interval`) also runs anti-entropy with one random peer, pings peers not heard from
  lately, re-dials known nodes that are not connected, and forgets nodes unseen for `p2p_forget_after`.
- **Liveness.** A peer that does not answer a ping within `ping_timeout` (a third of `p2p_offline_after`, at most
  `REQUEST_TIMEOUT`) is dropped: shown offline and its connection closed, so network-wide work stops asking it. A
  request to a peer that times out (or a network-wide call it did not answer in time: `suspect`) makes the peer be
  pinged at once. A dropped peer is accepted again as soon as a
  connection to it works (re-dialled every round, or it dials us).
- **Leaving.** `leave` tells every peer we go; they show us offline at once.

Background tasks belong to this service and end in `stop`."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import logging
import random
import socket
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from saas.core.errors import IdentityError, P2PError, SaaSError
from saas.core.helpers import parse_address
from saas.core.identity import Identity
from saas.nodedb.schemas import NodeInfo
from saas.p2p.protocols import DOR, IDENTITY, NODEDB
from saas.p2p.protocols import identity as identity_protocol
from saas.p2p.protocols import nodedb as nodedb_protocol

if TYPE_CHECKING:
    from saas.node import Node
    from saas.p2p.host import P2PHost

__all__ = ["P2PService", "P2PStatus"]

logger = logging.getLogger(__name__)

ACCEPT_WITHIN = 5.0  # seconds a new connection has to complete the identity exchange
REQUEST_TIMEOUT = 5.0
JOIN_BACKOFF = (0.25, 3.0)  # first and largest delay between join attempts
PUSH_DELAY = 0.05  # seconds changes gather before one batched update goes to a peer
RETRY_DELAY = 0.1  # seconds before an idempotent request that failed in transport is tried again
# Nodes just heard of (or all known ones, after joining) are dialled after a random delay: while many nodes join at
# once, the small pushes that tell everyone about them go out before the CPU-heavy handshakes of the full mesh.
# Measured with 20 node processes on 2 cores: every node knows all 20 after ~2 s instead of ~3.5 s; the full mesh
# takes ~0.4 s longer.
DIAL_DELAY = (1.0, 2.0)


class P2PStatus(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"


class P2PService:
    def __init__(self, node: Node):
        from saas.p2p.host import P2PHost

        self._node = node
        config = node.config
        listen = ("0.0.0.0" if config.bind_all else config.p2p_address[0], config.p2p_address[1])
        self.host: P2PHost = P2PHost(
            config.datastore / "p2p" / "peer.key",
            listen,
            config.p2p_address,
            on_connected=self._on_connected,
            on_disconnected=self._on_disconnected,
            psk=config.network_psk,
        )
        self.host.set_handler(IDENTITY, self._handle_identity)
        self.host.set_handler(NODEDB, self._handle_nodedb)
        self.host.set_handler(DOR, self._handle_dor)
        self.status = P2PStatus.CREATED
        self._peers: dict[str, str] = {}  # accepted peer ID -> node identity ID
        self._tasks: set[asyncio.Task[Any]] = set()
        self._joined = asyncio.Event()
        self._dialing: set[str] = set()
        self._retry_at: dict[str, float] = {}  # peer ID -> loop time before which we do not re-dial
        self._outbox: dict[str, dict[str, dict[str, Any]]] = {}  # peer ID -> kind -> record ID -> record
        self._flushing: set[str] = set()  # peers with a flush task running
        self._pinging: set[str] = set()  # peers with a liveness ping in flight

    @property
    def _db(self) -> Any:
        return self._node.nodedb

    @property
    def _network(self) -> str:
        return self._node.config.network_name

    @property
    def peer_id(self) -> str:
        return self.host.peer_id

    @property
    def multiaddrs(self) -> list[str]:
        return self.host.multiaddrs

    @property
    def address(self) -> tuple[str, int]:
        """The advertised P2P address (with the real port if the configured one was 0)."""
        return self._node.config.p2p_address[0], self.host.port

    def peers(self) -> dict[str, str]:
        """Accepted peers: peer ID -> identity ID."""
        return dict(self._peers)

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.status is not P2PStatus.CREATED:
            return
        await self.host.start()
        self._db.add_listener(self._on_nodedb_change)
        self.status = P2PStatus.RUNNING

    def join(self) -> None:
        """Start joining the network and the maintenance rounds in the background (returns at once)."""
        self._spawn(self._join_loop())
        self._spawn(self._maintenance_loop())

    async def wait_joined(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._joined.wait(), timeout)
        return self._joined.is_set()

    async def leave(self) -> None:
        """Tell every peer this node goes (best effort, bounded)."""
        if self.status is not P2PStatus.RUNNING or not self._peers:
            return
        await asyncio.gather(
            *(self._request(pid, {"type": "leave"}, timeout=1.0) for pid in list(self._peers)),
            return_exceptions=True,
        )

    async def stop(self) -> None:
        if self.status is not P2PStatus.RUNNING:
            self.status = P2PStatus.STOPPED
            return
        self.status = P2PStatus.STOPPED
        self._db.remove_listener(self._on_nodedb_change)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.host.stop()
        for iid in self._peers.values():
            self._db.set_online(iid, False)
        self._peers.clear()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("P2P background task failed", exc_info=task.exception())

    # -- peers: identity exchange ---------------------------------------------------------------------------------

    async def _on_connected(self, peer_id: str) -> None:
        if self.status is P2PStatus.RUNNING:
            self._spawn(self._expect_accepted(peer_id))

    async def _expect_accepted(self, peer_id: str) -> None:
        await asyncio.sleep(ACCEPT_WITHIN)
        if peer_id not in self._peers and peer_id in self.host.connected_peers():
            logger.info("closing connection from %s: no valid identity exchange", peer_id)
            await self.host.disconnect(peer_id)

    async def _on_disconnected(self, peer_id: str) -> None:
        iid = self._peers.pop(peer_id, None)
        if iid is not None:
            self._db.set_online(iid, False)
            logger.info("peer %s (%s) disconnected", iid[:8], peer_id)

    @property
    def ping_timeout(self) -> float:
        return min(REQUEST_TIMEOUT, self._node.config.p2p_offline_after / 3)

    async def _ping(self, peer_id: str) -> bool:
        """Ping an accepted peer; a peer that does not answer in time is dropped. Returns whether it answered."""
        if peer_id in self._pinging:
            return True
        self._pinging.add(peer_id)
        try:
            await self._request(peer_id, {"type": "ping"}, timeout=self.ping_timeout, liveness=False)
            return True
        except SaaSError as e:
            if peer_id in self._peers:
                await self._drop(peer_id, f"no answer to a ping ({e.reason})")
            return False
        finally:
            self._pinging.discard(peer_id)

    def suspect(self, peer_id: str) -> None:
        """A peer did not answer a network-wide call in time: ping it now (dropped if it does not answer either)."""
        if peer_id in self._peers and self.status is P2PStatus.RUNNING:
            self._spawn(self._ping(peer_id))

    async def _drop(self, peer_id: str, reason: str) -> None:
        """Show a peer offline and close its connection (it is accepted again when a connection works)."""
        iid = self._peers.pop(peer_id, None)
        if iid is None:
            return
        self._db.set_online(iid, False)
        logger.warning("peer %s (node %s) shown offline: %s", peer_id, iid[:8], reason)
        await self.host.disconnect(peer_id)

    async def _accept(self, peer_id: str, info: NodeInfo) -> None:
        token = _relaying.set(False)  # a record from a hello is not relayed (see `_on_nodedb_change`)
        try:
            with contextlib.suppress(SaaSError):
                await self._publish(info.identity)
            await self._db.update_node(info)
        finally:
            _relaying.reset(token)
        self._peers[peer_id] = info.identity.id
        self._retry_at.pop(peer_id, None)
        self._db.set_online(info.identity.id, True)
        logger.info("peer %s accepted: node %s", peer_id, info.identity.id[:8])

    async def _publish(self, identity: Identity) -> None:
        known = self._db.get_identity(identity.id)
        if known is None or known.nonce < identity.nonce:
            await self._db.publish_identity(identity)

    async def _handle_identity(self, peer_id: str, message: dict[str, Any]) -> dict[str, Any] | None:
        try:
            info = await identity_protocol.check_hello(message, peer_id, self._node.iid, self._network)
        except IdentityError as e:
            logger.warning("refused peer %s: %s", peer_id, e.reason)
            self._node.audit.refusal(f"peer {peer_id}", "peer.refused", peer_id=peer_id, reason=e.reason)
            self._spawn(self.host.disconnect(peer_id))
            return {"error": e.reason}
        await self._accept(peer_id, info)
        return identity_protocol.hello(self._db.own, self._network)

    async def connect(self, peer_id: str, addrs: list[str]) -> str:
        """Connect to a peer and run the identity exchange; returns its identity ID. Raises `P2PError` or
        `IdentityError` (and drops the connection) if it fails."""
        if peer_id in self._peers:
            return self._peers[peer_id]
        await self.host.connect(peer_id, addrs, timeout=REQUEST_TIMEOUT)
        try:
            response = await self.host.request(
                peer_id, IDENTITY, identity_protocol.hello(self._db.own, self._network), timeout=REQUEST_TIMEOUT
            )
            info = await identity_protocol.check_hello(response, peer_id, self._node.iid, self._network)
        except SaaSError:
            await self.host.disconnect(peer_id)
            raise
        await self._accept(peer_id, info)
        return info.identity.id

    # -- joining ------------------------------------------------------------------------------------------------

    def _boot_target(self) -> tuple[str, int, str | None] | None:
        """(host, port, peer ID if given) of the boot node, or None if this node is the first."""
        boot = self._node.config.boot_node
        if not boot:
            return None
        peer_id = None
        if boot.startswith("/"):
            parts = boot.strip("/").split("/")
            fields = dict(zip(parts[::2], parts[1::2], strict=False))
            host = fields.get("ip4") or fields.get("ip6") or fields.get("dns4") or fields.get("dns")
            if host is None or "tcp" not in fields:
                raise P2PError(f"Boot node multiaddr '{boot}' has no host or TCP port", {"boot_node": boot})
            address = (host, int(fields["tcp"]))
            peer_id = fields.get("p2p")
        else:
            address = parse_address(boot)
        if peer_id == self.peer_id or self._is_own_address(address):
            return None
        return address[0], address[1], peer_id

    def _is_own_address(self, address: tuple[str, int]) -> bool:
        own_host, own_port = self.address
        if address[1] != own_port:
            return False
        if address[0] == own_host:
            return True
        try:
            return socket.gethostbyname(address[0]) == socket.gethostbyname(own_host)
        except OSError:
            return False

    async def _join_loop(self) -> None:
        delay = JOIN_BACKOFF[0]
        while True:
            try:
                target = self._boot_target()
                if target is None:
                    logger.info("this node is the first node of its network")
                    self._joined.set()
                    return
                await self._join(*target)
                self._joined.set()
                return
            except SaaSError as e:
                logger.info("joining through the boot node failed (%s); retrying in %.1f s", e.reason, delay)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, JOIN_BACKOFF[1])

    async def _join(self, host: str, port: int, peer_id: str | None) -> None:
        pin_key = f"{host}:{port}"
        if peer_id is None:
            peer_id = await self.host.probe(host, port, timeout=REQUEST_TIMEOUT)
            if peer_id == self.peer_id:
                return
            pinned = await self._db.get_pin(pin_key)
            if pinned is None:
                await self._db.set_pin(pin_key, peer_id)
            elif pinned != peer_id:
                logger.error(
                    "boot node %s answered as peer %s but was pinned as %s: refusing it (remove the pin if the "
                    "boot node really changed its P2P key)",
                    pin_key,
                    peer_id,
                    pinned,
                )
                raise P2PError("Boot node peer ID changed", {"boot_node": pin_key})
        from saas.p2p.host import tcp_multiaddr

        await self.connect(peer_id, [tcp_multiaddr(host, port)])
        answer = await self._request(peer_id, {"type": "join", **nodedb_protocol.snapshot(self._db)})
        await self._merge(peer_id, answer)
        logger.info("joined the network through %s (%s)", pin_key, peer_id)
        self._spawn(self._dial_known(delay=random.uniform(*DIAL_DELAY)))

    # -- NodeDB protocol ----------------------------------------------------------------------------------------

    async def _request(
        self,
        peer_id: str,
        message: dict[str, Any],
        timeout: float = REQUEST_TIMEOUT,
        protocol: str = NODEDB,
        liveness: bool = True,
    ) -> dict[str, Any]:
        """A request on `protocol`; hearing back counts as seeing the peer; a refusal raises `P2PError`. A
        request that times out makes the peer be pinged (`liveness`)."""
        try:
            answer = await self.host.request(peer_id, protocol, message, timeout=timeout)
        except P2PError as e:
            if liveness and "timeout" in e.details and peer_id in self._peers and self.status is P2PStatus.RUNNING:
                self._spawn(self._ping(peer_id))
            raise
        iid = self._peers.get(peer_id)
        if iid is not None:
            self._db.touch(iid)
        if "error" in answer:
            raise P2PError(f"Peer refused the request: {answer['error']}", {"peer_id": peer_id})
        return answer

    async def _handle_nodedb(self, peer_id: str, message: dict[str, Any]) -> dict[str, Any] | None:
        iid = self._peers.get(peer_id)
        if iid is None:
            return {"error": "identity exchange first"}
        self._db.touch(iid)
        kind = message.get("type")
        if kind == "ping":
            return {"type": "pong"}
        if kind == "join":
            answer = nodedb_protocol.snapshot(self._db)
            await nodedb_protocol.merge(self._db, message)  # relayed: what a newcomer brings is new to everyone
            joiner = self._db.get_node(iid)
            if joiner is not None:
                self._relay(joiner)  # stored at the hello (not relayed then): the others learn of it from us
            return answer
        if kind == "sync":
            return nodedb_protocol.records(self._db, message.get("digest") or {})
        if kind == "update":
            await self._merge(peer_id, message)
            return {}
        if kind == "leave":
            logger.info("node %s is leaving", iid[:8])
            self._peers.pop(peer_id, None)
            self._db.set_online(iid, False)
            return {}
        return {"error": f"unknown message type {kind!r}"}

    # -- DOR protocol -------------------------------------------------------------------------------------------

    def dor_peers(self) -> list[tuple[str, NodeInfo]]:
        """Accepted peers whose node runs a DOR: (peer ID, node record)."""
        result = []
        for peer_id, iid in list(self._peers.items()):
            info = self._db.get_node(iid)
            if info is not None and info.dor_service:
                result.append((peer_id, info))
        return result

    async def request_dor(
        self, peer_id: str, message: dict[str, Any], timeout: float = REQUEST_TIMEOUT
    ) -> dict[str, Any]:
        """A `/saas/dor/1.0.0` request to an accepted peer; raises `P2PError` on failure, timeout or refusal.
        DOR requests only read, so one that failed in transport (a reset stream, not a timeout or a refusal) is
        tried once more."""
        for attempt in (1, 2):
            if peer_id not in self._peers:
                raise P2PError("Not an accepted peer", {"peer_id": peer_id})
            try:
                return await self._request(peer_id, message, timeout, protocol=DOR)
            except P2PError as e:
                if attempt == 2 or "timeout" in e.details or e.reason.startswith("Peer refused"):
                    raise
                await asyncio.sleep(RETRY_DELAY)
        raise AssertionError("unreachable")

    async def _handle_dor(self, peer_id: str, message: dict[str, Any]) -> dict[str, Any] | None:
        iid = self._peers.get(peer_id)
        if iid is None:
            return {"error": "identity exchange first"}
        self._db.touch(iid)
        from saas.dor import remote

        return await remote.serve(self._node, iid, message)

    async def _merge(self, peer_id: str, message: dict[str, Any]) -> None:
        """Store the newer records of a peer's message (not relayed: see `_on_nodedb_change`)."""
        token = _relaying.set(False)
        try:
            await nodedb_protocol.merge(self._db, message)
        finally:
            _relaying.reset(token)

    def _on_nodedb_change(self, kind: str, record: Identity | NodeInfo) -> None:
        """A change was stored: relay it if this node is where it enters the network, and dial a node we just
        heard of.

        Relayed are local changes (an identity published here, our own record) and what a joining node brings
        (its records, and its own record, relayed by the join handler). Records learned from peers — in a hello,
        an update or a sync — are not relayed again: the network is a full mesh, so the node where a change enters
        reaches every node itself, and anti-entropy repairs what a push missed. (Relaying what peers pass on made
        each record cost n² messages: with 20 nodes forming at once, thousands of streams kept the CPUs busy for
        seconds.)"""
        if self.status is not P2PStatus.RUNNING:
            return
        if _relaying.get():
            self._relay(record)
        if isinstance(record, NodeInfo) and self._should_dial(record, asyncio.get_running_loop().time()):
            self._spawn(self._dial(record, delay=random.uniform(*DIAL_DELAY)))  # rather than next round

    def _relay(self, record: Identity | NodeInfo) -> None:
        """Queue a record for every peer (but the node it describes); changes are batched per peer, one update in
        flight per peer, so a join that stores many records costs each peer one message rather than one per
        record."""
        record_id = record.identity.id if isinstance(record, NodeInfo) else record.id
        for peer_id, iid in list(self._peers.items()):
            if isinstance(record, NodeInfo) and record.identity.id == iid:
                continue  # it is their own record
            box = self._outbox.setdefault(peer_id, {"nodes": {}, "identities": {}})
            box["nodes" if isinstance(record, NodeInfo) else "identities"][record_id] = record
            if peer_id not in self._flushing:
                self._flushing.add(peer_id)
                self._spawn(self._flush(peer_id))

    async def _flush(self, peer_id: str) -> None:
        try:
            while True:
                await asyncio.sleep(PUSH_DELAY)
                box = self._outbox.pop(peer_id, None)
                if not box or peer_id not in self._peers:
                    return
                message = nodedb_protocol.update(
                    nodes=list(box["nodes"].values()), identities=list(box["identities"].values())
                )
                try:
                    await self._request(peer_id, message)
                except SaaSError as e:
                    logger.debug("push to %s failed: %s", peer_id, e.reason)  # anti-entropy repairs it
        finally:
            self._flushing.discard(peer_id)

    # -- maintenance --------------------------------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        interval = self._node.config.p2p_sync_interval
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            try:
                await self._maintain()
            except Exception:
                logger.exception("P2P maintenance round failed")

    async def _maintain(self) -> None:
        config = self._node.config
        peers = list(self._peers)
        if peers:
            peer_id = random.choice(peers)
            with contextlib.suppress(SaaSError):
                answer = await self._request(peer_id, {"type": "sync", "digest": nodedb_protocol.digest(self._db)})
                await self._merge(peer_id, answer)
        # A ping refreshes both sides, so of two peers the one with the smaller peer ID pings when the link has
        # been quiet for a third of `p2p_offline_after`; the other only if it has not heard anything for two
        # thirds (its peer stopped pinging). Pings are O(n²) for a full mesh: halving them matters.
        now, third = _now_ms(), int(config.p2p_offline_after * 1000 / 3)
        stale = [
            pid
            for pid, iid in self._peers.items()
            if (node := self._db.get_node(iid)) is not None
            and (node.last_seen or 0) < now - (third if self.peer_id < pid else 2 * third)
        ]
        if stale:
            await asyncio.gather(*(self._ping(pid) for pid in stale))
        await self._dial_known()
        if not self._peers and self._joined.is_set() and self._boot_target() is not None:
            self._joined.clear()  # lost everyone: go through the boot node again
            self._spawn(self._join_loop())
        gone = await self._db.forget_nodes(int(config.p2p_forget_after * 1000))
        if gone:
            logger.info("forgot %d node(s) unseen for %.0f s", len(gone), config.p2p_forget_after)

    def _should_dial(self, info: NodeInfo, now: float) -> bool:
        """Of two nodes only the one with the smaller peer ID dials the other (simultaneous dials in both
        directions would make libp2p trim both connections); failed dials back off."""
        pid = info.peer_id
        if not pid or pid in self._peers or pid in self._dialing or pid <= self.peer_id:
            return False
        return self._retry_at.get(pid, 0) <= now

    async def _dial_known(self, delay: float = 0.0) -> None:
        """Connect to the known nodes that are not connected and that this node should dial (after `delay`)."""
        if delay:
            await asyncio.sleep(delay)
        now = asyncio.get_running_loop().time()
        targets = [info for info in self._db.nodes() if self._should_dial(info, now)]
        if targets:
            await asyncio.gather(*(self._dial(info) for info in targets))

    async def _dial(self, info: NodeInfo, delay: float = 0.0) -> None:
        from saas.p2p.host import parse_peer_multiaddr

        pid = info.peer_id
        assert pid is not None
        self._dialing.add(pid)
        try:
            if delay:
                await asyncio.sleep(delay)
                if pid in self._peers:
                    return
            addrs = [parse_peer_multiaddr(a)[0] for a in info.multiaddrs]
            await self.connect(pid, addrs)
        except SaaSError as e:
            loop = asyncio.get_running_loop()
            self._retry_at[pid] = loop.time() + self._node.config.p2p_sync_interval * random.uniform(1, 2)
            logger.debug("dialing node %s failed: %s", info.identity.id[:8], e.reason)
        finally:
            self._dialing.discard(pid)


# False while records learned from a peer are stored: they are not relayed (see `_on_nodedb_change`).
_relaying: contextvars.ContextVar[bool] = contextvars.ContextVar("saas_p2p_relaying", default=True)


def _now_ms() -> int:
    from saas.nodedb.service import now_ms

    return now_ms()
