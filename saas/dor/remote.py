"""The DOR across the network (DESIGN §6, §7): metadata and provenance lookups on other nodes over
`/saas/dor/1.0.0`, and content fetched from another node's REST service.

- **Serving** (`serve`): an accepted peer asks for obj_ids (`lookup`) or c_hashes (`provenance`); the answer holds
  only what is visible — unrestricted objects, plus restricted ones the user of a valid delegation (naming that
  peer as delegate, this node as a server and the request's scope: `metadata` for a lookup, `provenance` for a
  provenance request) may read. Unknown or invisible IDs are simply absent. The custodian is not sent: the asker
  fills in the record of the peer it asked, which it has verified already.
- **Asking** (`lookup`, `find_c_hashes`): every accepted peer with a DOR is asked concurrently (at most
  `MAX_CONCURRENT` at once), each with a timeout; a peer that fails or times out counts as holding nothing. A
  delegation goes only to the peers it names as servers.
- **Fetching** (`fetch_remote`): bulk content moves over HTTP, never libp2p. The node signs the request as itself
  and, for a restricted object, sends the user's `Delegation`; the content streams to a temp file beside the
  destination, is checked against the c_hash (a mismatch deletes it and raises `DORError`), and only then appears
  at the destination."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from saas.core.delegation import Delegation, Scope
from saas.core.errors import DORError, SaaSError
from saas.core.identity import Identity
from saas.dor.schemas import AnyDataObject, CDataObject, GPPDataObject
from saas.nodedb.schemas import NodeInfo
from saas.p2p.protocols import dor as dor_protocol

if TYPE_CHECKING:
    from saas.node import Node

__all__ = ["fetch_remote", "find_c_hashes", "lookup", "serve"]

logger = logging.getLogger(__name__)

MAX_CONCURRENT = 16  # peers asked at once
REQUEST_TIMEOUT = 5.0  # seconds per peer
_ANY = TypeAdapter(AnyDataObject)
DataObjectModel = CDataObject | GPPDataObject


# -- serving ------------------------------------------------------------------------------------------------------


async def _reader(
    node: Node, requester_iid: str, message: dict[str, Any], scope: Scope
) -> tuple[Identity | None, Delegation | None]:
    delegation = Delegation.from_message(message.get("delegation"))
    if delegation is None:
        return None, None
    try:
        issuer = node.nodedb.get_identity(delegation.issuer_iid)
        return await asyncio.to_thread(delegation.check, issuer, requester_iid, node.iid, scope), delegation
    except SaaSError as e:
        logger.info("ignored a delegation from node %s: %s", requester_iid[:8], e.reason)
        return None, None


def _ids(message: dict[str, Any], key: str) -> list[str]:
    values = message.get(key)
    if not isinstance(values, list):
        return []
    return [v for v in values[: dor_protocol.MAX_IDS] if isinstance(v, str) and len(v) == 64]


async def serve(node: Node, requester_iid: str, message: dict[str, Any]) -> dict[str, Any]:
    """Answer a `/saas/dor/1.0.0` request from the accepted peer whose node identity is `requester_iid`."""
    dor = node.dor
    kind = message.get("type")
    if kind not in ("lookup", "provenance"):
        return {"error": f"unknown message type {kind!r}"}
    if dor is None:
        return {"objects": []}
    reader, delegation = await _reader(node, requester_iid, message, "metadata" if kind == "lookup" else "provenance")
    if kind == "lookup":
        objects = await dor.lookup(_ids(message, "obj_ids"), reader)
    else:
        objects = await dor.find_c_hashes(_ids(message, "c_hashes"), reader)
    visible = [
        o for o in objects if not o.access_restricted or (delegation is not None and delegation.covers(o.obj_id))
    ]
    return {"objects": [o.model_dump(mode="json", exclude={"custodian"}) for o in visible]}


# -- asking -------------------------------------------------------------------------------------------------------


async def _ask_all(node: Node, message: dict[str, Any]) -> list[DataObjectModel]:
    p2p = node.p2p
    if p2p is None:
        return []
    targets = p2p.dor_peers()
    if not targets:
        return []
    limit = asyncio.Semaphore(MAX_CONCURRENT)

    async def ask(peer_id: str, info: NodeInfo) -> list[DataObjectModel]:
        async with limit:
            try:
                answer = await p2p.request_dor(
                    peer_id, dor_protocol.for_peer(message, info.identity.id), timeout=REQUEST_TIMEOUT
                )
            except SaaSError as e:
                logger.info("DOR %s on node %s failed: %s", message.get("type"), info.identity.id[:8], e.reason)
                return []
        objects: list[DataObjectModel] = []
        for raw in answer.get("objects") or []:
            try:
                obj = _ANY.validate_python(raw)
            except ValidationError:
                logger.info("node %s sent an invalid object record", info.identity.id[:8])
                continue
            obj.custodian = info
            objects.append(obj)
        return objects

    results = await asyncio.gather(*(ask(pid, info) for pid, info in targets))
    return [obj for objects in results for obj in objects]


async def lookup(
    node: Node, obj_ids: Sequence[str], delegation: Delegation | None = None
) -> dict[str, DataObjectModel]:
    """Metadata of `obj_ids` held by other nodes (obj_id -> object, custodian filled in); absent when no node
    holds one or it is not visible."""
    wanted = set(obj_ids)
    if not wanted:
        return {}
    found = await _ask_all(node, dor_protocol.lookup(sorted(wanted), delegation))
    return {o.obj_id: o for o in found if o.obj_id in wanted}


async def find_c_hashes(
    node: Node, c_hashes: Sequence[str], delegation: Delegation | None = None
) -> dict[str, DataObjectModel]:
    """For each c_hash another node holds an object of: one such object (preferring one with a recipe)."""
    wanted = set(c_hashes)
    if not wanted:
        return {}
    result: dict[str, DataObjectModel] = {}
    for obj in await _ask_all(node, dor_protocol.provenance(sorted(wanted), delegation)):
        if obj.c_hash not in wanted:
            continue
        known = result.get(obj.c_hash)
        if known is None or (getattr(known, "recipe", None) is None and getattr(obj, "recipe", None) is not None):
            result[obj.c_hash] = obj
    return result


# -- fetching -----------------------------------------------------------------------------------------------------


async def fetch_remote(
    node: Node,
    obj_id: str,
    custodian: NodeInfo,
    destination: Path,
    delegation: Delegation | None = None,
    expected_c_hash: str | None = None,
) -> Path:
    """Fetch the content of `obj_id` from `custodian`'s REST service to `destination`, signing as this node (with
    the user's `delegation` for a restricted object). Checked against `expected_c_hash` if given, else against
    the c_hash the custodian states; on a mismatch nothing is left behind and `DORError` is raised."""
    from saas.dor.proxy import DORProxy

    if not custodian.dor_service:
        raise DORError(f"Node {custodian.identity.id} has no DOR", {"node": custodian.identity.id})

    def run() -> Path:
        with DORProxy(custodian.rest_address, keystore=node.keystore, node_iid=custodian.identity.id) as proxy:
            return proxy.get_content(
                obj_id, node.keystore, destination, delegation=delegation, expected_c_hash=expected_c_hash
            )

    return await asyncio.to_thread(run)
