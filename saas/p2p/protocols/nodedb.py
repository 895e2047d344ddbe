"""`/saas/nodedb/1.0.0` messages: `join` (exchange full snapshots), `sync` (anti-entropy: send a digest, get back
what the digest lacks), `update` (records pushed after a change), `leave` (graceful shutdown) and `ping`.

Records travel signed and are verified on receipt (`merge`, through `NodeDBService.merge_records`: one batch per
message); invalid or stale records are skipped, never fatal."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from saas.core.identity import Identity
from saas.nodedb.schemas import OBSERVED, NodeInfo
from saas.nodedb.service import NodeDBService

__all__ = ["digest", "merge", "records", "snapshot", "update"]

logger = logging.getLogger(__name__)

MAX_RECORDS = 10_000  # per message, for each kind


def _node(info: NodeInfo) -> dict[str, Any]:
    return info.model_dump(mode="json", exclude=set(OBSERVED))


def snapshot(db: NodeDBService) -> dict[str, Any]:
    """Every node record this node knows (its own included) and every identity."""
    nodes = [db.own, *db.nodes()]
    return {"nodes": [_node(n) for n in nodes], "identities": [i.model_dump(mode="json") for i in db.identities()]}


def update(nodes: Sequence[NodeInfo] = (), identities: Sequence[Identity] = ()) -> dict[str, Any]:
    return {
        "type": "update",
        "nodes": [_node(n) for n in nodes],
        "identities": [i.model_dump(mode="json") for i in identities],
    }


def digest(db: NodeDBService) -> dict[str, Any]:
    """What this node has: node sequence and identity nonce per ID."""
    nodes = {n.identity.id: n.sequence for n in [db.own, *db.nodes()]}
    return {"nodes": nodes, "identities": {i.id: i.nonce for i in db.identities()}}


def records(db: NodeDBService, theirs: dict[str, Any]) -> dict[str, Any]:
    """The records the holder of digest `theirs` lacks or has older versions of."""
    their_nodes = theirs.get("nodes") or {}
    their_ids = theirs.get("identities") or {}
    nodes = [n for n in [db.own, *db.nodes()] if their_nodes.get(n.identity.id, -1) < n.sequence]
    identities = [i for i in db.identities() if their_ids.get(i.id, -1) < i.nonce]
    return {
        "nodes": [_node(n) for n in nodes],
        "identities": [i.model_dump(mode="json") for i in identities],
    }


async def merge(db: NodeDBService, message: dict[str, Any]) -> tuple[int, int]:
    """Store the newer identities and node records of `message` (verified, in one batch); returns (nodes,
    identities) stored. Malformed records are skipped."""
    identities: list[Identity] = []
    for raw in (message.get("identities") or [])[:MAX_RECORDS]:
        try:
            identities.append(Identity.model_validate(raw))
        except ValidationError as e:
            logger.info("skipped a malformed identity record from a peer: %s", e)
    nodes: list[NodeInfo] = []
    for raw in (message.get("nodes") or [])[:MAX_RECORDS]:
        try:
            nodes.append(NodeInfo.model_validate(raw))
        except ValidationError as e:
            logger.info("skipped a malformed node record from a peer: %s", e)
    return await db.merge_records(identities, nodes)
