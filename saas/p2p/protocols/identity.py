"""`/saas/identity/1.0.0`: after a connection opens, the dialer sends its signed node record (which carries its
identity) and the other side answers with its own. A record is accepted only if it verifies (identity
self-signed, record signed by that identity) **and** the peer ID it claims is the Noise-authenticated peer ID of
the connection it arrived on — so no one can present another node's record, nor their own record from someone
else's connection. Both sides also state their network name; a peer of another network is refused."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import ValidationError

from saas.core.errors import IdentityError
from saas.nodedb.schemas import OBSERVED, NodeInfo

__all__ = ["check_hello", "hello"]


def hello(own: NodeInfo, network: str = "default") -> dict[str, Any]:
    return {"node": own.model_dump(mode="json", exclude=set(OBSERVED)), "network": network}


async def check_hello(message: dict[str, Any], peer_id: str, own_iid: str, network: str = "default") -> NodeInfo:
    """The peer's verified record; raises `IdentityError` if it is missing, invalid, not the peer's own, or the
    peer belongs to another network (a hello without a network name is of the network "default")."""
    theirs = message.get("network", "default")
    if theirs != network:
        raise IdentityError(
            "Peer belongs to another network", {"peer_id": peer_id, "network": str(theirs)[:64], "ours": network}
        )
    try:
        info = NodeInfo.model_validate(message.get("node"))
    except ValidationError as e:
        raise IdentityError("Peer sent no valid node record", {"peer_id": peer_id}) from e
    await asyncio.to_thread(info.verify)
    if info.peer_id != peer_id:
        raise IdentityError(
            "Peer presented a node record for another peer",
            {"peer_id": peer_id, "claimed": info.peer_id, "iid": info.identity.id},
        )
    if info.identity.id == own_iid:
        raise IdentityError("Peer presented this node's own identity", {"peer_id": peer_id})
    return info
