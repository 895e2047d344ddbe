"""NodeDB service: this node's signed record, the identities it knows, and the nodes it has heard of.

Identities are kept in memory (they are small and every signed request needs one) and persisted in SQLite.
An identity is accepted only if it verifies (self-signed, ID bound to its key) and its nonce is higher than the
one stored; re-publishing the identical record is a no-op.

Bounds (issue 14, item 7): publications from one client (`client`, its address) are rate limited (a token bucket:
429 with the wait); NodeDB holds at most `max_identities` identities and `max_nodes` node records of other nodes.
When full, a new identity published to this node takes the place of one stored long ago that nothing here needs
(`saas.nodedb.eviction`); when every stored identity is needed, it is refused (429). Records from peers are skipped
(and logged) when NodeDB is full. Updates of known records (higher nonce or sequence) always pass.

Node records of other nodes come from the P2P layer (`update_node`, verified, newer sequence wins). The P2P layer
also tells NodeDB which nodes are connected (`set_online`) and when it last heard from them (`touch`); listeners
registered with `add_listener` hear of every accepted change (the P2P layer pushes those to its peers). `pins`
remember the peer ID a boot address answered with the first time (trust on first use)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from saas.core.errors import ConflictError, LimitReachedError, NodeDBError, NotFoundError, SaaSError
from saas.core.identity import Identity
from saas.core.ratelimit import TokenBuckets
from saas.nodedb import eviction
from saas.nodedb.schemas import OBSERVED, NodeInfo
from saas.sqlite import Database

__all__ = ["NodeDBFullError", "NodeDBService", "PublishRateError", "UnknownIdentityError"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (iid TEXT PRIMARY KEY, nonce INTEGER NOT NULL, record TEXT NOT NULL,
                                       updated INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (iid TEXT PRIMARY KEY, record TEXT NOT NULL, last_seen INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pins (address TEXT PRIMARY KEY, peer_id TEXT NOT NULL);
"""

logger = logging.getLogger(__name__)

# A listener hears ("identity", Identity) or ("node", NodeInfo) after the change is stored.
Listener = Callable[[str, Identity | NodeInfo], None]


class UnknownIdentityError(NodeDBError, NotFoundError):
    pass


class NodeDBFullError(NodeDBError, LimitReachedError):
    pass


class PublishRateError(NodeDBError, LimitReachedError):
    pass


FULL_LOG_EVERY = 60.0  # seconds between warnings that records from peers were skipped because NodeDB is full


def now_ms() -> int:
    return int(time.time() * 1000)


class NodeDBService:
    def __init__(
        self,
        datastore: Path,
        max_identities: int = 20_000,
        max_nodes: int = 1_000,
        publish_rate: float = 1.0,
        publish_burst: int = 30,
    ):
        self._db = Database(datastore / "nodedb.sqlite", SCHEMA)
        self.max_identities, self.max_nodes = max_identities, max_nodes
        self._publications = TokenBuckets(publish_rate, publish_burst)
        self._full_logged_at = -FULL_LOG_EVERY
        self._identities: dict[str, Identity] = {}
        self._stored: dict[str, None] = {}  # identities in the order their records were stored (oldest first)
        self._active_at: dict[str, float] = {}  # identity -> when it last made a verified request (monotonic)
        self._anchors: list[eviction.Anchors] = []
        self._nodes: dict[str, NodeInfo] = {}
        self._own: NodeInfo | None = None
        self._publish_lock = asyncio.Lock()
        self._online: set[str] = set()
        self._lies: dict[str, int] = {}  # node -> records of its DOR that did not verify (`saas.dor.remote`)
        self._listeners: list[Listener] = []

    async def start(self) -> None:
        await asyncio.to_thread(self._db.open)
        rows = await self._db.run(
            lambda c: c.execute("SELECT record FROM identities ORDER BY updated, rowid").fetchall()
        )
        self._identities = {i.id: i for i in (Identity.model_validate_json(r["record"]) for r in rows)}
        self._stored = dict.fromkeys(self._identities)
        rows = await self._db.run(lambda c: c.execute("SELECT record, last_seen FROM nodes").fetchall())
        for row in rows:
            info = NodeInfo.model_validate_json(row["record"])
            self._nodes[info.identity.id] = info.model_copy(update={"last_seen": row["last_seen"]})

    async def stop(self) -> None:
        await asyncio.to_thread(self._db.close)

    # -- identities ---------------------------------------------------------------------------------------------

    def get_identity(self, iid: str) -> Identity | None:
        return self._identities.get(iid)

    def require_identity(self, iid: str) -> Identity:
        identity = self._identities.get(iid)
        if identity is None:
            raise UnknownIdentityError(f"Identity {iid} is not known to this node", {"iid": iid})
        return identity

    def identities(self) -> list[Identity]:
        return sorted(self._identities.values(), key=lambda i: (i.name.lower(), i.id))

    async def publish_identity(self, identity: Identity, client: str | None = None, bounded: bool = True) -> Identity:
        """Store a verified identity record; raises `IdentityError` (invalid), `ConflictError` (stale),
        `PublishRateError` (`client` published too often) or `NodeDBFullError` (a new identity, and `bounded`)."""
        if self._identities.get(identity.id) == identity:
            return identity  # the stored record (verified): nothing to do, nothing to charge
        if client is not None:
            wait = self._publications.take(client)
            if wait:
                raise PublishRateError(
                    f"Too many identity publications from {client}: try again in {wait:.1f} s",
                    {"retry_after": round(wait, 1), "rate_per_s": self._publications.rate},
                )
        await asyncio.to_thread(identity.verify)
        async with self._publish_lock:
            known = self._identities.get(identity.id)
            full = known is None and bounded and len(self._identities) >= self.max_identities
            if full and not await self._make_room(1):
                logger.warning(
                    "NodeDB is full (%d identities, all in use): refused a new identity", len(self._identities)
                )
                raise NodeDBFullError(
                    f"This node knows {len(self._identities)} identities, the most it keeps, and each is in use "
                    "here: it accepts updates of known identities only",
                    {"identities": len(self._identities), "max_identities": self.max_identities},
                )
            if known is not None:
                if known == identity:
                    return known
                if identity.nonce <= known.nonce:
                    raise ConflictError(
                        f"Identity {identity.id} has a newer record here (nonce {known.nonce}); "
                        "an update needs a higher nonce",
                        {"iid": identity.id, "nonce": known.nonce},
                    )

            def store(conn: sqlite3.Connection) -> None:
                conn.execute(
                    "INSERT OR REPLACE INTO identities (iid, nonce, record, updated) VALUES (?, ?, ?, ?)",
                    (identity.id, identity.nonce, identity.model_dump_json(), now_ms()),
                )

            await self._db.run(store)
            self._identities[identity.id] = identity
            self._stored.pop(identity.id, None)
            self._stored[identity.id] = None
        self._notify("identity", identity)
        return identity

    # -- making room (saas.nodedb.eviction) ---------------------------------------------------------------------

    def add_anchors(self, anchors: eviction.Anchors) -> None:
        """A service's way to say which identities it refers to (they are never made room of)."""
        self._anchors.append(anchors)

    def touch_identity(self, iid: str) -> None:
        """Identity `iid` just made a verified request here (kept in memory: it stays for a while)."""
        if iid in self._identities:
            self._active_at[iid] = time.monotonic()

    async def _make_room(self, wanted: int) -> int:
        """Remove up to `wanted` identities nothing here needs (see `saas.nodedb.eviction`); returns how many went.
        Called with the publication lock held."""
        pinned = set(self._nodes)
        if self._own is not None:
            pinned.add(self._own.identity.id)
        found = eviction.candidates(self._stored, pinned, self._active_at, time.monotonic())
        if not found:
            return 0
        used: set[str] = set()
        for anchors in self._anchors:
            used |= await anchors(found)
        victims = [iid for iid in found if iid not in used][:wanted]
        if not victims:
            return 0
        await self._db.run(lambda c: c.executemany("DELETE FROM identities WHERE iid = ?", [(i,) for i in victims]))
        for iid in victims:
            self._identities.pop(iid, None)
            self._stored.pop(iid, None)
            self._active_at.pop(iid, None)
        logger.info("NodeDB is full: %d identities stored long ago and not in use here made room", len(victims))
        return len(victims)

    # -- change listeners ---------------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self, kind: str, record: Identity | NodeInfo) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind, record)
            except Exception:  # a listener must not break publication
                logger.exception("NodeDB listener failed")

    # -- nodes --------------------------------------------------------------------------------------------------

    def set_own(self, info: NodeInfo) -> None:
        self._own = info

    @property
    def own(self) -> NodeInfo:
        if self._own is None:
            raise NodeDBError("This node has no record yet")
        return self._own

    def get_node(self, iid: str) -> NodeInfo | None:
        return self._nodes.get(iid)

    def nodes(self) -> list[NodeInfo]:
        """Every other node's record (as stored; `online` not filled in)."""
        return list(self._nodes.values())

    async def update_node(self, info: NodeInfo) -> bool:
        """Remember another node's verified record (the P2P layer calls this). A record with a sequence no
        higher than the stored one is ignored; returns whether the record was stored. Raises `IdentityError` if
        it does not verify."""
        if self._own is not None and info.identity.id == self._own.identity.id:
            return False
        known = self._nodes.get(info.identity.id)
        if known is not None and known.sequence >= info.sequence:
            return False
        if known is None and len(self._nodes) >= self.max_nodes:
            self._log_full(0, 1)
            return False
        await asyncio.to_thread(info.verify)
        seen = now_ms()

        def store(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO nodes (iid, record, last_seen) VALUES (?, ?, ?)",
                (info.identity.id, json.dumps(info.model_dump(mode="json", exclude=set(OBSERVED))), seen),
            )

        await self._db.run(store)
        self._nodes[info.identity.id] = info.model_copy(update={"last_seen": seen})
        self._notify("node", info)
        return True

    async def merge_records(self, identities: list[Identity], nodes: list[NodeInfo]) -> tuple[int, int]:
        """Store the newer of many records at once (a peer's snapshot): one worker-thread hop verifies them all and
        one transaction stores them, rather than a hop and a commit per record. Records that do not verify are
        skipped (logged); a node record also brings its identity. Returns (nodes, identities) stored."""
        own = self._own.identity.id if self._own is not None else None

        def newer_identity(i: Identity) -> bool:
            known = self._identities.get(i.id)
            return known is None or known.nonce < i.nonce

        def newer_node(n: NodeInfo) -> bool:
            known = self._nodes.get(n.identity.id)
            return n.identity.id != own and (known is None or known.sequence < n.sequence)

        candidates = [i for i in identities if newer_identity(i)], [n for n in nodes if newer_node(n)]
        if not candidates[0] and not candidates[1]:
            return 0, 0

        def verify() -> tuple[list[Identity], list[NodeInfo]]:
            valid: tuple[list[Identity], list[NodeInfo]] = ([], [])
            records: list[Identity | NodeInfo] = [*candidates[0], *candidates[1]]
            for record in records:
                try:
                    record.verify()
                except SaaSError as e:
                    logger.info("skipped a record from a peer: %s", e.reason)
                    continue
                if isinstance(record, NodeInfo):
                    valid[1].append(record)
                else:
                    valid[0].append(record)
            return valid

        valid_identities, valid_nodes = await asyncio.to_thread(verify)
        async with self._publish_lock:
            fresh_identities: dict[str, Identity] = {}
            for identity in [*valid_identities, *(n.identity for n in valid_nodes)]:
                if newer_identity(identity) and fresh_identities.get(identity.id, identity).nonce <= identity.nonce:
                    fresh_identities[identity.id] = identity
            fresh_nodes = {n.identity.id: n for n in valid_nodes if newer_node(n)}
            skipped = self._within_bounds(fresh_identities, fresh_nodes)
            seen = now_ms()

            def store(conn: sqlite3.Connection) -> None:
                conn.executemany(
                    "INSERT OR REPLACE INTO identities (iid, nonce, record, updated) VALUES (?, ?, ?, ?)",
                    [(i.id, i.nonce, i.model_dump_json(), seen) for i in fresh_identities.values()],
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO nodes (iid, record, last_seen) VALUES (?, ?, ?)",
                    [
                        (iid, json.dumps(n.model_dump(mode="json", exclude=set(OBSERVED))), seen)
                        for iid, n in fresh_nodes.items()
                    ],
                )

            await self._db.run(store)
            self._identities.update(fresh_identities)
            for iid in fresh_identities:
                self._stored.pop(iid, None)
                self._stored[iid] = None
            for iid, info in fresh_nodes.items():
                self._nodes[iid] = info.model_copy(update={"last_seen": seen})
        for identity in fresh_identities.values():
            self._notify("identity", identity)
        for info in fresh_nodes.values():
            self._notify("node", info)
        if any(skipped):
            self._log_full(*skipped)
        return len(fresh_nodes), len(fresh_identities)

    def _within_bounds(self, identities: dict[str, Identity], nodes: dict[str, NodeInfo]) -> tuple[int, int]:
        """Drop (in place) the new records NodeDB has no room for: node records (and their identities) first, then
        other identities; updates of known records always stay. Returns (identities, nodes) dropped."""
        room_ids = self.max_identities - len(self._identities)
        room_nodes = self.max_nodes - len(self._nodes)
        dropped = [0, 0]
        for iid in list(nodes):
            new_id = iid not in self._identities and iid in identities
            if iid in self._nodes:
                continue
            if room_nodes > 0 and (not new_id or room_ids > 0):
                room_nodes -= 1
                room_ids -= int(new_id)
                continue
            del nodes[iid]
            dropped[1] += 1
        for iid in list(identities):
            if iid in self._identities or (iid in nodes and iid not in self._nodes):
                continue  # an update, or the identity of a node record admitted above
            if room_ids > 0:
                room_ids -= 1
                continue
            del identities[iid]
            dropped[0] += 1
        return dropped[0], dropped[1]

    def _log_full(self, identities: int, nodes: int) -> None:
        level = logging.WARNING if time.monotonic() - self._full_logged_at >= FULL_LOG_EVERY else logging.DEBUG
        if level == logging.WARNING:
            self._full_logged_at = time.monotonic()
        logger.log(
            level,
            "NodeDB is full (%d/%d identities, %d/%d nodes): skipped %d new identities and %d new node records from "
            "peers (updates of known records still pass)",
            len(self._identities),
            self.max_identities,
            len(self._nodes),
            self.max_nodes,
            identities,
            nodes,
        )

    def touch(self, iid: str) -> None:
        """We just heard from node `iid` (kept in memory; the stored last_seen is the time of its last record)."""
        known = self._nodes.get(iid)
        if known is not None:
            known.last_seen = now_ms()

    def set_online(self, iid: str, online: bool) -> None:
        """The P2P layer's view: is there an accepted connection to node `iid`?"""
        if online:
            self._online.add(iid)
            self.touch(iid)
        else:
            self._online.discard(iid)

    def is_online(self, iid: str, offline_after_ms: int = 60_000) -> bool:
        known = self._nodes.get(iid)
        return iid in self._online and known is not None and (now_ms() - (known.last_seen or 0)) <= offline_after_ms

    async def forget_nodes(self, unseen_for_ms: int) -> list[str]:
        """Remove nodes that are offline and unseen for longer than `unseen_for_ms`; returns their IDs."""
        cutoff = now_ms() - unseen_for_ms
        gone = [iid for iid, n in self._nodes.items() if iid not in self._online and (n.last_seen or 0) < cutoff]
        if gone:
            await self._db.run(lambda c: c.executemany("DELETE FROM nodes WHERE iid = ?", [(i,) for i in gone]))
            for iid in gone:
                self._nodes.pop(iid, None)
                self._lies.pop(iid, None)
        return gone

    def count_lie(self, iid: str, n: int = 1) -> int:
        """Count `n` records (or contents) from node `iid` that did not verify; returns its count so far. Kept in
        memory for known nodes only (a node forgotten is forgotten with its count)."""
        if iid not in self._nodes:
            return 0
        self._lies[iid] = self._lies.get(iid, 0) + n
        return self._lies[iid]

    def lies(self, iid: str) -> int:
        """How many records (or contents) from node `iid` did not verify since this node started."""
        return self._lies.get(iid, 0)

    def network(self, offline_after_ms: int = 60_000) -> list[NodeInfo]:
        """This node (online) and every node it knows: online while connected and heard from recently, with the
        number of its records that did not verify here (`lies`)."""
        now = now_ms()
        own = self.own.model_copy(update={"last_seen": now, "online": True, "lies": 0})
        others = [
            n.model_copy(update={"online": self.is_online(iid, offline_after_ms), "lies": self.lies(iid)})
            for iid, n in self._nodes.items()
            if iid != own.identity.id
        ]
        return [own, *sorted(others, key=lambda n: n.identity.id)]

    # -- pinned boot peers (trust on first use) -----------------------------------------------------------------

    async def get_pin(self, address: str) -> str | None:
        row = await self._db.run(
            lambda c: c.execute("SELECT peer_id FROM pins WHERE address = ?", (address,)).fetchone()
        )
        return None if row is None else str(row["peer_id"])

    async def set_pin(self, address: str, peer_id: str) -> None:
        await self._db.run(
            lambda c: c.execute("INSERT OR REPLACE INTO pins (address, peer_id) VALUES (?, ?)", (address, peer_id))
        )
