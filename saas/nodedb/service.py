"""NodeDB service: this node's signed record, the identities it knows, and the nodes it has heard of.

Identities are kept in memory (they are small and every signed request needs one) and persisted in SQLite.
An identity is accepted only if it verifies (self-signed, ID bound to its key) and its nonce is higher than the
one stored; re-publishing the identical record is a no-op."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from saas.core.errors import ConflictError, NodeDBError, NotFoundError
from saas.core.identity import Identity
from saas.nodedb.schemas import NodeInfo
from saas.sqlite import Database

__all__ = ["NodeDBService", "UnknownIdentityError"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (iid TEXT PRIMARY KEY, nonce INTEGER NOT NULL, record TEXT NOT NULL,
                                       updated INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (iid TEXT PRIMARY KEY, record TEXT NOT NULL, last_seen INTEGER NOT NULL);
"""


class UnknownIdentityError(NodeDBError, NotFoundError):
    pass


def now_ms() -> int:
    return int(time.time() * 1000)


class NodeDBService:
    def __init__(self, datastore: Path):
        self._db = Database(datastore / "nodedb.sqlite", SCHEMA)
        self._identities: dict[str, Identity] = {}
        self._nodes: dict[str, NodeInfo] = {}
        self._own: NodeInfo | None = None
        self._publish_lock = asyncio.Lock()

    async def start(self) -> None:
        await asyncio.to_thread(self._db.open)
        rows = await self._db.run(lambda c: c.execute("SELECT record FROM identities").fetchall())
        self._identities = {i.id: i for i in (Identity.model_validate_json(r["record"]) for r in rows)}
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

    async def publish_identity(self, identity: Identity) -> Identity:
        """Store a verified identity record; raises `IdentityError` (invalid) or `ConflictError` (stale)."""
        await asyncio.to_thread(identity.verify)
        async with self._publish_lock:
            known = self._identities.get(identity.id)
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
            return identity

    # -- nodes --------------------------------------------------------------------------------------------------

    def set_own(self, info: NodeInfo) -> None:
        self._own = info

    @property
    def own(self) -> NodeInfo:
        if self._own is None:
            raise NodeDBError("This node has no record yet")
        return self._own

    async def update_node(self, info: NodeInfo) -> None:
        """Remember another node's verified record (the P2P layer calls this)."""
        await asyncio.to_thread(info.verify)
        seen = now_ms()

        def store(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO nodes (iid, record, last_seen) VALUES (?, ?, ?)",
                (info.identity.id, json.dumps(info.model_dump(mode="json", exclude={"last_seen", "online"})), seen),
            )

        await self._db.run(store)
        self._nodes[info.identity.id] = info.model_copy(update={"last_seen": seen})

    def network(self, offline_after_ms: int = 60_000) -> list[NodeInfo]:
        now = now_ms()
        own = self.own.model_copy(update={"last_seen": now, "online": True})
        others = [
            n.model_copy(update={"online": (now - (n.last_seen or 0)) <= offline_after_ms})
            for iid, n in self._nodes.items()
            if iid != own.identity.id
        ]
        return [own, *sorted(others, key=lambda n: n.identity.id)]
