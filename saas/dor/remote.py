"""The DOR across the network (DESIGN §6, §7): metadata and provenance lookups on other nodes over
`/saas/dor/1.0.0`, and content fetched from another node's REST service.

- **Serving** (`serve`): an accepted peer asks for obj_ids (`lookup`) or c_hashes (`provenance`); the answer holds
  only what is visible — unrestricted objects, plus restricted ones the user of a valid delegation (naming that
  peer as delegate, this node as a server and the request's scope: `metadata` for a lookup, `provenance` for a
  provenance request) may read. Unknown or invisible IDs are simply absent. The custodian is not sent: the asker
  fills in the record of the peer it asked, which it has verified already.
- **Asking** (`lookup`, `find_c_hashes`): every accepted peer with a DOR is asked concurrently under one overall
  deadline (`NodeConfig.network_deadline`, `saas.nodedb.fanout.ask_peers`): what arrived by then is used (every
  answer is checked, so a liar is caught whoever answered first). A peer that fails or does not answer
  in time counts as holding nothing, is named in one INFO line and pinged (liveness). A delegation goes only to the
  peers it names as servers.
- **Fetching** (`fetch_remote`): bulk content moves over HTTP, never libp2p. The node signs the request as itself
  and, for a restricted object, sends the user's `Delegation`; the content streams to a temp file beside the
  destination, is checked against the verified c_hash (a mismatch deletes it and raises `DORError`), and only then
  appears at the destination.
- **Verifying** (`saas.dor.verify`): a record from a peer is used only if it reproduces the id it was asked for
  (GPP: hash of the canonical GPP; content object: hash of c_hash, type, format, creators, created). A peer that
  answers otherwise, or serves content that does not match the verified c_hash, is logged (INFO, one line) and
  counted (`NodeDBService.lies`, shown as `lies` in `GET /db/network`); when several peers answer for an id, one
  whose record verifies is used, from the node with the fewest lies."""

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
from saas.dor.verify import record_problem
from saas.nodedb.fanout import ask_peers
from saas.nodedb.schemas import NodeInfo
from saas.p2p.protocols import dor as dor_protocol

if TYPE_CHECKING:
    from saas.node import Node

__all__ = ["fetch_remote", "find_c_hashes", "lookup", "serve"]

logger = logging.getLogger(__name__)

LATE_BY = 1.0  # seconds a request's own timeout exceeds the overall deadline
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
    for o in visible:
        if o.access_restricted and reader is not None:  # read for the delegating user (audit: its owner sees it)
            dor.audit.record("object.meta_read", actor=reader.id, owner=o.owner_iid, obj_id=o.obj_id, via=requester_iid)
    return {"objects": [o.model_dump(mode="json", exclude={"custodian"}) for o in visible]}


# -- asking -------------------------------------------------------------------------------------------------------


def _lied(node: Node, info: NodeInfo, problems: list[str]) -> None:
    """Count what node `info` said that did not verify (one lie per record), and log it in one line (the first
    problem, escaped and cut short: it may quote what the peer sent)."""
    count = node.nodedb.count_lie(info.identity.id, len(problems))
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    logger.info("node %s lied (%d so far): %s%s", info.identity.id[:8], count, ascii(problems[0][:200]), more)
    node.audit.record("peer.lied", peer=info.identity.id, records=len(problems), so_far=count, first=ascii(problems[0]))


def _verified(raws: list[Any], key: str, wanted: set[str]) -> tuple[list[DataObjectModel], list[str]]:
    """The records of one answer that parse, were asked for (`key` in `wanted`) and reproduce their obj_id; and why
    each other record was refused. Blocks (hashing): called in a worker thread."""
    objects: list[DataObjectModel] = []
    problems: list[str] = []
    for raw in raws:
        try:
            obj = _ANY.validate_python(raw)
        except ValidationError:
            problems.append("an invalid object record")
            continue
        problem = f"record {obj.obj_id} was not asked for" if getattr(obj, key) not in wanted else record_problem(obj)
        if problem is None:
            objects.append(obj)
        else:
            problems.append(problem)
    return objects, problems


async def _ask_all(
    node: Node,
    message: dict[str, Any],
    key: str,
    wanted: set[str],
    only: str | None = None,
    skip: str | None = None,
) -> list[DataObjectModel]:
    """Ask every accepted DOR peer (or only node `only`; never node `skip`) at once, under one deadline
    (`network_deadline`), and keep the records that verify, custodian filled in; a record that does not verify is
    logged, counted against its node (`NodeDBService.lies`) and skipped. Returns what arrived by the deadline; the
    peers that did not answer in time are logged (one INFO line per call) and pinged (`P2PService.suspect`). The
    records come ordered by their node's count of lies (fewest first), so the first one for an id is the one to
    use."""
    p2p = node.p2p
    if p2p is None:
        return []
    peers = {
        info.identity.id: (pid, info)
        for pid, info in p2p.dor_peers()
        if info.identity.id != skip and only in (None, info.identity.id)
    }
    if not peers:
        return []
    deadline = node.config.network_deadline

    async def ask(info: NodeInfo) -> list[DataObjectModel]:
        peer_id = peers[info.identity.id][0]
        try:
            # the overall deadline ends it first (a peer late for it is one that did not answer)
            answer = await p2p.request_dor(
                peer_id, dor_protocol.for_peer(message, info.identity.id), timeout=deadline + LATE_BY
            )
        except SaaSError as e:
            logger.info("DOR %s on node %s failed: %s", message.get("type"), info.identity.id[:8], e.reason)
            return []
        raws = answer.get("objects")
        if not isinstance(raws, list) or not raws:
            return []
        objects, problems = await asyncio.to_thread(_verified, raws, key, wanted)
        if problems:
            _lied(node, info, problems)
        for obj in objects:
            obj.custodian = info
        return objects

    outcome = await ask_peers(ask, [info for _, info in peers.values()], deadline)
    if outcome.unanswered:
        logger.info(
            "DOR %s: %d node(s) did not answer within %g s: %s",
            message.get("type"),
            len(outcome.unanswered),
            deadline,
            ", ".join(u.node.identity.id[:8] for u in outcome.unanswered),
        )
        for missing in outcome.unanswered:
            p2p.suspect(peers[missing.node.identity.id][0])
    found = [obj for _, objects in outcome.answers for obj in objects]
    return sorted(found, key=lambda o: node.nodedb.lies(o.custodian.identity.id) if o.custodian else 0)


async def lookup(
    node: Node,
    obj_ids: Sequence[str],
    delegation: Delegation | None = None,
    only: str | None = None,
    skip: str | None = None,
) -> dict[str, DataObjectModel]:
    """Metadata of `obj_ids` held by other nodes (or only by node `only`; never by node `skip`): obj_id -> a
    record that reproduces that obj_id, custodian filled in, from the node with the fewest lies; absent when no
    node holds one, it is not visible, or no answer for it verifies."""
    wanted = set(obj_ids)
    if not wanted:
        return {}
    result: dict[str, DataObjectModel] = {}
    message = dor_protocol.lookup(sorted(wanted), delegation)
    for obj in await _ask_all(node, message, "obj_id", wanted, only, skip):
        result.setdefault(obj.obj_id, obj)
    return result


async def find_c_hashes(
    node: Node, c_hashes: Sequence[str], delegation: Delegation | None = None
) -> dict[str, DataObjectModel]:
    """For each c_hash another node holds an object of: one such object whose record reproduces its obj_id
    (preferring one with a recipe, then the node with the fewest lies)."""
    wanted = set(c_hashes)
    if not wanted:
        return {}
    result: dict[str, DataObjectModel] = {}
    for obj in await _ask_all(node, dor_protocol.provenance(sorted(wanted), delegation), "c_hash", wanted):
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
    *,
    expected_c_hash: str,
) -> Path:
    """Fetch the content of `obj_id` from `custodian`'s REST service to `destination`, signing as this node (with
    the user's `delegation` for a restricted object). Checked against `expected_c_hash` — the c_hash of a record
    that reproduces `obj_id` (`saas.dor.verify`), never one the custodian merely states; on a mismatch nothing is
    left behind, the custodian's lie is counted and `ContentMismatchError` is raised."""
    from saas.dor.proxy import ContentMismatchError, DORProxy

    if not custodian.dor_service:
        raise DORError(f"Node {custodian.identity.id} has no DOR", {"node": custodian.identity.id})

    def run() -> Path:
        with DORProxy(custodian.rest_address, keystore=node.keystore, node_iid=custodian.identity.id) as proxy:
            return proxy.get_content(
                obj_id, node.keystore, destination, delegation=delegation, expected_c_hash=expected_c_hash
            )

    try:
        return await asyncio.to_thread(run)
    except ContentMismatchError:
        _lied(node, custodian, [f"content of {obj_id} does not match its c_hash {expected_c_hash}"])
        raise
