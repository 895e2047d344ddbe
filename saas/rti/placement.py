"""Where a job's data lives (DESIGN §6 to §8): the GPP of a processor, the DOR holding each by-reference input, and
the DOR its outputs go to — this node's DOR or another node's, found through the network.

- **Inputs**: this node's DOR first (read as the job's user); otherwise every DOR of the network is asked. A
  restricted object on another node is visible only with the user's `Delegation` for this node, carried in the
  input's `user_signature` (base64 JSON, as in the `saas-delegation` header; `RTIProxy.submit_job` adds one,
  naming the nodes that hold the object as servers). The delegation must be issued by the job's user, name this
  node as delegate and allow `metadata` and `content`; each serving node checks that it is named.
- **Encrypted inputs**: this node decrypts one (with the key envelope the owner gave it) only for a job whose user
  holds the key too: the object's owner, or an identity with a key envelope of its own. The object's DOR says so
  (this node's catalog, or the custodian asked over REST, signed by this node: `require_key`); being allowed to
  read the ciphertext is not enough.
- **GPPs**: a GPP from another node is used only if it hashes to the proc_id asked for (`saas.dor.remote` checks
  every record against its address); `gpp_custodian` names the only node it is taken from.
- **Outputs go only where the user said**: `target_node_iid` names the DOR; without it, this node's DOR. Only an
  open output (neither restricted nor encrypted) may go to the nearest DOR (the first accepted peer, never one
  caught lying, to answer a lookup) when this node has none; for a restricted or encrypted one, submission is
  refused (400) and the user is told to name `target_node_iid`.
- **Bytes** move over HTTP between the nodes' REST services, signed by this node (`saas.dor.remote`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from saas.core.delegation import JOB_INPUT_SCOPES, Delegation
from saas.core.errors import AuthorisationError, InvalidInputError, NotFoundError, RTIError, SaaSError
from saas.dor.schemas import CDataObject, GitProcessorPointer, GPPDataObject
from saas.nodedb.schemas import NodeInfo
from saas.rti.schemas import Task

if TYPE_CHECKING:
    from saas.node import Node

__all__ = [
    "InputLocation",
    "KeyCheckError",
    "delegation_of",
    "find_gpp",
    "find_input",
    "nearest_dor",
    "output_dor",
    "require_key",
]

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0  # seconds a DOR has to answer the nearest-DOR probe


@dataclass
class InputLocation:
    """A by-reference input: its metadata and, for an object on another node, that node and the delegation."""

    meta: CDataObject
    custodian: NodeInfo | None = None  # None: this node's DOR
    delegation: Delegation | None = None


class KeyCheckError(RTIError):
    """Whether the job's user holds the key of an encrypted input could not be learnt (e.g. its custodian did not
    answer): undecided, so the input is not decrypted."""


async def require_key(node: Node, name: str, location: InputLocation, user_iid: str) -> None:
    """For an encrypted input: raise `AuthorisationError` unless the job's user holds its content key (owns it or
    has a key envelope of their own), as the object's DOR says now; `KeyCheckError` if that DOR cannot tell."""
    meta = location.meta
    if not meta.content_encrypted:
        return
    custodian = location.custodian
    try:
        if custodian is None:
            assert node.dor is not None
            holds = await node.dor.holds_key(meta.obj_id, user_iid)
        else:
            holds = await asyncio.to_thread(_remote_holds_key, node, custodian, meta.obj_id, user_iid)
    except SaaSError as e:
        where = "this node's DOR" if custodian is None else f"node {custodian.identity.id[:8]}"
        # The custodian answers only a key holder: this node, with the envelope it decrypts with.
        refused = custodian is not None and isinstance(e, (AuthorisationError, NotFoundError))
        hint = " (this node needs a key envelope of its own there)" if refused else ""
        raise KeyCheckError(
            f"Input '{name}': could not learn from {where} whether the user holds the key of encrypted data object "
            f"{meta.obj_id}: {e.reason}{hint}",
            {"input": name, "obj_id": meta.obj_id},
        ) from None
    if not holds:
        raise AuthorisationError(
            f"Input '{name}': data object {meta.obj_id} is encrypted and user {user_iid} holds no key for it (only "
            "its owner and users given a key envelope of their own may use it in a job)",
            {"input": name, "obj_id": meta.obj_id, "user_iid": user_iid},
        )


def _remote_holds_key(node: Node, custodian: NodeInfo, obj_id: str, user_iid: str) -> bool:
    from saas.dor.proxy import DORProxy

    with DORProxy(custodian.rest_address, keystore=node.keystore, node_iid=custodian.identity.id) as proxy:
        return proxy.holds_key(obj_id, user_iid, node.keystore)


def delegation_of(item: Task.InputReference, user_iid: str, node_iid: str) -> Delegation | None:
    """The delegation carried in an input's `user_signature`; raises `InvalidInputError` if it is malformed or not
    the job user's delegation to this node (the signature itself is checked by the node that serves the object)."""
    if not item.user_signature:
        return None
    try:
        delegation = Delegation.from_header(item.user_signature)
    except SaaSError:
        raise InvalidInputError(
            f"Input '{item.name}': user_signature is not a delegation (base64 JSON, as RTIProxy.submit_job makes)"
        ) from None
    if delegation.issuer_iid != user_iid:
        raise InvalidInputError(f"Input '{item.name}': the delegation is not issued by the job's user")
    if delegation.delegate_iid != node_iid:
        raise InvalidInputError(f"Input '{item.name}': the delegation is for another node")
    if not delegation.covers(item.obj_id):
        raise InvalidInputError(f"Input '{item.name}': the delegation is for another data object")
    if not set(JOB_INPUT_SCOPES) <= set(delegation.scopes):
        raise InvalidInputError(
            f"Input '{item.name}': the delegation does not allow reading the object's metadata and content (it "
            f"allows: {', '.join(delegation.scopes)})"
        )
    return delegation


async def find_input(
    node: Node, item: Task.InputReference, user_iid: str, touch: bool = False, skip: str | None = None
) -> InputLocation:
    """Where the input `item` is: this node's DOR (read as the user; `touch` records the access, for a caller
    about to read it) or another node's (never node `skip`), whose record reproduces the obj_id. Raises
    `NotFoundError`."""
    from saas.dor import remote

    user = node.nodedb.get_identity(user_iid)
    delegation = delegation_of(item, user_iid, node.iid)
    if node.dor is not None and user is not None:
        with contextlib.suppress(NotFoundError):
            meta = await node.dor.get_meta(item.obj_id, user, touch)
            if isinstance(meta, CDataObject):
                return InputLocation(meta)
    found = await remote.lookup(node, [item.obj_id], delegation, skip=skip)
    held = found.get(item.obj_id)
    if isinstance(held, CDataObject) and held.custodian is not None:
        return InputLocation(held, held.custodian, delegation)
    hint = (
        " (a restricted object on another node needs the user's delegation)"
        if delegation is None
        else " (with the delegation given it must be on a node the delegation names as a server, readable by the user)"
    )
    raise NotFoundError(f"Input '{item.name}': data object {item.obj_id} not found{hint}", {"obj_id": item.obj_id})


async def find_gpp(node: Node, proc_id: str, custodian_iid: str | None = None) -> GitProcessorPointer:
    """The GPP of `proc_id`: from the DOR of `custodian_iid` only when given (this node's included), else from this
    node's DOR, else from any DOR of the network. One from another node is used only if it hashes to `proc_id`."""
    from saas.dor import remote

    if node.dor is not None and custodian_iid in (None, node.iid):
        with contextlib.suppress(NotFoundError):
            meta = await node.dor.get_meta(proc_id, None)
            if isinstance(meta, GPPDataObject):
                return meta.gpp
    if custodian_iid != node.iid:
        found = await remote.lookup(node, [proc_id], only=custodian_iid)
        held = found.get(proc_id)
        if isinstance(held, GPPDataObject):
            return held.gpp
    if custodian_iid is None:
        where = "in any DOR of the network"
    elif custodian_iid == node.iid:
        where = "in this node's DOR (gpp_custodian)"
    else:
        where = f"on node {custodian_iid} (gpp_custodian)"
    raise NotFoundError(f"No GPP data object {proc_id} found {where}", {"proc_id": proc_id})


async def nearest_dor(node: Node) -> NodeInfo | None:
    """The DOR of another node that answers a (tiny) lookup first, or None when no DOR answers. Only accepted peers
    (their node record verified) that no record or content of theirs was caught lying are asked."""
    from saas.p2p.protocols import dor as dor_protocol

    p2p = node.p2p
    if p2p is None:
        return None
    peers = [(pid, info) for pid, info in p2p.dor_peers() if node.nodedb.lies(info.identity.id) == 0]
    if not peers:
        return None

    async def probe(peer_id: str, info: NodeInfo) -> NodeInfo:
        await p2p.request_dor(peer_id, dor_protocol.lookup([]), timeout=PROBE_TIMEOUT)
        return info

    tasks = [asyncio.create_task(probe(pid, info)) for pid, info in peers]
    try:
        for done in asyncio.as_completed(tasks):
            with contextlib.suppress(SaaSError, TimeoutError):
                return await done
        return None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def target_record(node: Node, out: Task.Output) -> NodeInfo | None:
    """The node record of an output's explicit target, None for none or this node. Raises `NotFoundError` if the
    target is no longer known or has no DOR (it was at submission): the output never goes anywhere else."""
    target = out.target_node_iid
    if target in (None, node.iid):
        return None
    info = node.nodedb.get_node(target)
    if info is None or not info.dor_service:
        raise NotFoundError(f"Output '{out.name}': target node {target} is not known to this node or has no DOR")
    return info


def _nearest_refused(node: Node, out: Task.Output) -> InvalidInputError | None:
    """Why an output without a target may not go to the nearest DOR (restricted or encrypted), else None."""
    if out.target_node_iid is not None or node.dor is not None:
        return None
    if not (out.restricted_access or out.content_encrypted):
        return None
    kind = "encrypted" if out.content_encrypted else "restricted"
    return InvalidInputError(
        f"Output '{out.name}' is {kind} and this node has no DOR: name the node to store it on (target_node_iid); "
        "only open outputs go to the nearest DOR",
        {"output": out.name},
    )


def check_target(node: Node, out: Task.Output) -> None:
    """Raise `InvalidInputError` if an output's target cannot take it, or it has none and may not go to the nearest
    DOR (restricted or encrypted on a node without a DOR)."""
    target = out.target_node_iid
    if target in (None, node.iid):
        if node.dor is None and target == node.iid:
            raise InvalidInputError(f"Output '{out.name}': this node has no DOR")
        refused = _nearest_refused(node, out)
        if refused is not None:
            raise refused
        return
    info = node.nodedb.get_node(target)
    if info is None:
        raise InvalidInputError(f"Output '{out.name}': target node {target} is not known to this node")
    if not info.dor_service:
        raise InvalidInputError(f"Output '{out.name}': target node {target} has no DOR")


async def output_dor(node: Node, out: Task.Output) -> NodeInfo | None:
    """The DOR an output goes to: None for this node's DOR, else the node record of another node's DOR (the named
    target, or for an open output the nearest DOR). Raises `NotFoundError` if there is none, `InvalidInputError`
    if a restricted or encrypted output has no target and this node no DOR."""
    target = target_record(node, out)
    if target is not None:
        return target
    if out.target_node_iid == node.iid or node.dor is not None:
        return None
    refused = _nearest_refused(node, out)
    if refused is not None:
        raise refused
    nearest = await nearest_dor(node)
    if nearest is None:
        raise NotFoundError(f"Output '{out.name}': this node has no DOR and no other DOR answers")
    return nearest


def describe(location: InputLocation) -> dict[str, Any]:
    """What the recipe records about an input."""
    meta = location.meta
    return {"c_hash": meta.c_hash, "data_type": meta.data_type, "data_format": meta.data_format, "obj_id": meta.obj_id}
