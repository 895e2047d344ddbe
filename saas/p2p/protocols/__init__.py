"""The node's P2P protocols (versioned IDs under `/saas/`): message building and checking, no I/O, no libp2p."""

from __future__ import annotations

__all__ = ["DOR", "IDENTITY", "NODEDB"]

IDENTITY = "/saas/identity/1.0.0"  # identity + node record exchange after each new connection
NODEDB = "/saas/nodedb/1.0.0"  # join snapshot, sync (anti-entropy), update, leave, ping
DOR = "/saas/dor/1.0.0"  # lookup of object metadata by obj_id, provenance lookup by c_hash
