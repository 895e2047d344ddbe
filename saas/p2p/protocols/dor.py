"""`/saas/dor/1.0.0` messages: `lookup` (metadata of the given obj_ids) and `provenance` (the objects a node holds
for the given c_hashes, with their recipes). Unknown or not-visible objects are simply absent from the answer.

A request reads as nobody (unrestricted objects only) unless it carries a user's `Delegation` naming the
requesting node as delegate, the serving node as a server and the request's scope (`metadata` for `lookup`,
`provenance` for `provenance`); the serving node checks it against the Noise-authenticated peer's identity, so a
node cannot claim to read for a user who did not say so. The asking node sends the delegation only to the nodes
it names as servers (`for_peer`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from saas.core.delegation import Delegation

__all__ = ["MAX_IDS", "for_peer", "lookup", "provenance"]

MAX_IDS = 1000  # obj_ids or c_hashes per request


def _with(message: dict[str, Any], delegation: Delegation | None) -> dict[str, Any]:
    if delegation is not None:
        message["delegation"] = delegation.model_dump(mode="json")
    return message


def for_peer(message: dict[str, Any], peer_iid: str) -> dict[str, Any]:
    """`message` as sent to the peer whose node identity is `peer_iid`: without the delegation unless the
    delegation names that peer as a server (a delegation is shown only to the nodes it is for)."""
    delegation = message.get("delegation")
    if delegation is None or peer_iid in (delegation.get("servers") or ()):
        return message
    return {k: v for k, v in message.items() if k != "delegation"}


def lookup(obj_ids: Sequence[str], delegation: Delegation | None = None) -> dict[str, Any]:
    return _with({"type": "lookup", "obj_ids": list(obj_ids)[:MAX_IDS]}, delegation)


def provenance(c_hashes: Sequence[str], delegation: Delegation | None = None) -> dict[str, Any]:
    return _with({"type": "provenance", "c_hashes": list(c_hashes)[:MAX_IDS]}, delegation)
