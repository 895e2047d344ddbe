"""NodeDB REST routes (`/db/...`). Anonymous: the records are public and self-signed."""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Request

from saas.core.identity import Identity
from saas.nodedb.schemas import NodeInfo
from saas.nodedb.service import NodeDBService

__all__ = ["router"]

router = APIRouter(prefix="/db", tags=["nodedb"])


def _nodedb(request: Request) -> NodeDBService:
    return request.app.state.node.nodedb


@router.get("/node", response_model=NodeInfo)
async def get_node(request: Request) -> NodeInfo:
    """This node's signed record."""
    return _nodedb(request).own


@router.get("/network", response_model=list[NodeInfo])
async def get_network(request: Request) -> list[NodeInfo]:
    """Every node this node knows, with `online` and `last_seen` as observed here."""
    offline_after = request.app.state.node.config.p2p_offline_after
    return _nodedb(request).network(int(offline_after * 1000))


@router.get("/identity", response_model=list[Identity])
async def get_identities(request: Request) -> list[Identity]:
    """Every identity this node knows (published to it or learned from peers)."""
    return _nodedb(request).identities()


@router.get("/identity/{iid}", response_model=Identity)
async def get_identity(iid: str, request: Request) -> Identity:
    """One identity (404 if this node does not know it)."""
    return _nodedb(request).require_identity(iid)


@router.post("/identity", response_model=Identity)
async def update_identity(identity: Identity, request: Request) -> Identity:
    """Publish a self-signed identity record (new, or an update with a higher nonce). Rate limited per client
    address and bounded by NodeDB's size (429 with the reason)."""
    nodedb = _nodedb(request)
    known = nodedb.get_identity(identity.id)
    published = await nodedb.publish_identity(identity, client=_client(request))
    if published != known:  # new or updated (a record sent again is free and unlimited: not logged)
        audit = request.app.state.node.audit
        audit.record("identity.published", actor=published.id, owner=published.id, nonce=published.nonce)
    return published


def _client(request: Request) -> str:
    """Who publishes, for the rate limit: the client's address (IPv6: its /64, which one holder has in full)."""
    host = request.client.host if request.client is not None else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
