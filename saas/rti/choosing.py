"""Choosing a node across the network (issue 18, item 4), client side: ask every RTI node for an offer at once
under one deadline (`saas.nodedb.fanout`), rank the offers, and submit to the best one with its offer.

What callers may rely on:
- `find_offers` returns the offers whose node signature verifies against the node's record, ranked: the offers that
  can run the job first, then by `rank`; the nodes that did not answer (or sent an offer that does not verify) are
  in `result.unanswered`.
- `rank` is "wait" (estimated queue wait, then bytes to fetch), "locality" (bytes to fetch, then wait) or an
  expression over `wait`, `duration` (seconds), `held`, `fetch` (bytes), `cores`, `memory` (MiB of the package)
  with numbers, `+ - * /` and parentheses: the lowest value wins.
- `submit_anywhere` submits the task, with the chosen offer, to that node; the node honours its valid offer (the
  package it offered) and refuses an expired or altered one. Importing this module is light (no server parts)."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from saas.core.errors import InvalidInputError, InvalidSignatureError, RTIError
from saas.nodedb.fanout import DEFAULT_DEADLINE, NetworkList, ask_nodes
from saas.nodedb.proxy import NodeDBProxy
from saas.nodedb.schemas import NodeInfo
from saas.rti.offer_schemas import Offer, OfferParameters
from saas.rti.proxy import RTIProxy
from saas.rti.schemas import Job

if TYPE_CHECKING:
    from saas.core.signing import Signer

__all__ = ["NoOfferError", "find_offers", "offer_request", "rank_offers", "submit_anywhere", "submit_with_offer"]

_OPERATORS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


class NoOfferError(RTIError):
    """No node of the network can run the job (`details`: each node's reasons)."""


def offer_request(task: dict[str, Any]) -> dict[str, Any]:
    """The offer request for a task (the seed's job descriptor): its processor, package, resources and the object
    IDs of its by-reference inputs."""
    if not isinstance(task, dict) or "proc_id" not in task:
        raise InvalidInputError("A job descriptor is a JSON object with proc_id, user_iid, input and output")
    request: dict[str, Any] = {"proc_id": task["proc_id"]}
    inputs = task.get("input") or []
    request["input"] = [i["obj_id"] for i in inputs if isinstance(i, dict) and i.get("type") == "reference"]
    for key in ("package", "resources", "deadline"):
        if task.get(key) is not None:
            request[key] = task[key]
    return request


def _variables(offer: Offer) -> dict[str, float]:
    package = offer.package
    return {
        "wait": offer.queue.wait,
        "duration": offer.queue.mean_duration or 0.0,
        "held": float(offer.locality.held_bytes),
        "fetch": float(offer.locality.fetch_bytes),
        "cores": float(package.cores) if package else 0.0,
        "memory": float(package.memory) if package else 0.0,
    }


def _scorer(rank: str) -> Callable[[Offer], tuple[float, ...]]:
    if rank == "wait":
        return lambda o: (o.queue.wait, o.locality.fetch_bytes)
    if rank == "locality":
        return lambda o: (o.locality.fetch_bytes, o.queue.wait)
    try:
        tree = ast.parse(rank, mode="eval").body
    except SyntaxError:
        raise InvalidInputError(f"--rank must be wait, locality or an expression, not '{rank}'") from None

    def value(node: ast.AST, names: dict[str, float]) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in names:
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = value(node.left, names), value(node.right, names)
            if isinstance(node.op, ast.Div) and right == 0:
                return float("inf")
            return _OPERATORS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand, names)
        raise InvalidInputError(
            f"--rank expression '{rank}': use numbers, + - * /, parentheses and wait, duration, held, fetch, cores, "
            "memory"
        )

    names = dict.fromkeys(("wait", "duration", "held", "fetch", "cores", "memory"), 0.0)
    value(tree, names)  # check the expression once, before any offer
    return lambda o: (value(tree, _variables(o)),)


def rank_offers(offers: Sequence[tuple[NodeInfo, Offer]], rank: str = "wait") -> list[tuple[NodeInfo, Offer]]:
    """Offers that can run the job first, each group by `rank` (lowest first)."""
    score = _scorer(rank)
    return sorted(offers, key=lambda pair: (not pair[1].can, *score(pair[1])))


def find_offers(
    address: str | tuple[str, int],
    task: dict[str, Any] | OfferParameters,
    user: Signer,
    rank: str = "wait",
    deadline: float = DEFAULT_DEADLINE,
    first_best: bool = False,
) -> NetworkList[tuple[NodeInfo, Offer]]:
    """Ask every RTI node of the network of the node at `address` for an offer at once; ranked (see module). With
    `first_best`, stop waiting as soon as an offer arrives that no other can beat (it can run the job, with no wait
    and nothing to fetch, for the ranks "wait" and "locality"): the nodes not waited for are in `unanswered`."""
    params = task if isinstance(task, OfferParameters) else OfferParameters.model_validate(task)
    score = _scorer(rank)  # a bad expression fails before the network is asked
    unbeatable = _lowest(rank) if first_best else None
    with NodeDBProxy(address, timeout=deadline) as db:
        nodes = [n for n in db.get_network() if n.rti_service and n.online is not False]

    def ask(node: NodeInfo) -> Offer:
        with RTIProxy(node.rest_address, user, node_iid=node.identity.id, timeout=deadline) as rti:
            offer = rti.get_offer(params, user)
        # verified here, in the asking thread, so that a best offer is trusted before the others are waited for
        signed = offer.node_iid == node.identity.id and node.identity.verify_signature(
            offer.signed_content(), offer.signature
        )
        if not signed:
            raise InvalidSignatureError("its offer is not signed by it")
        return offer

    def enough(offer: Offer) -> bool:
        assert unbeatable is not None
        return offer.can and score(offer) <= unbeatable

    outcome = ask_nodes(ask, nodes, deadline, None if unbeatable is None else enough)
    return NetworkList(rank_offers(outcome.answers, rank), outcome.unanswered)


def _lowest(rank: str) -> tuple[float, ...] | None:
    """The best score an offer can have under `rank`, when there is one (wait and fetched bytes are never below 0)."""
    return (0.0, 0) if rank in ("wait", "locality") else None


def submit_anywhere(
    address: str | tuple[str, int],
    task: dict[str, Any],
    user: Signer,
    rank: str = "wait",
    deadline: float = DEFAULT_DEADLINE,
) -> tuple[NodeInfo, Offer, Job]:
    """Submit `task` to the node with the best offer (raises `NoOfferError` when no node can run it). An offer that
    cannot be beaten (see `find_offers`) is taken as soon as it arrives; among equal offers, the first to arrive."""
    found = find_offers(address, offer_request(task), user, rank, deadline, first_best=True)
    best = next(((node, offer) for node, offer in found if offer.can), None)
    if best is None:
        details = {o.node_iid: o.reasons for _, o in found} | {u.node.identity.id: [u.reason] for u in found.unanswered}
        raise NoOfferError("No node of the network can run this job", {"nodes": details})
    node, offer = best
    return node, offer, submit_with_offer(node, offer, task, user)


def submit_with_offer(node: NodeInfo, offer: Offer, task: dict[str, Any], user: Signer) -> Job:
    """Submit `task` to `node` with its `offer` (the node honours it while it is valid)."""
    with RTIProxy(node.rest_address, user, node_iid=node.identity.id) as rti:
        return rti.submit_task({**task, "offer": offer.model_dump(mode="json")}, user)
