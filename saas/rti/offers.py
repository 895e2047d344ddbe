"""Offers (issue 18): "can I do this?" answered by a node, signed and expiring.

`POST /rti/offers` takes a task (processor, package or resources, input object IDs, optional deadline) and answers
with an `Offer` signed by the node: whether it can run it, with every reason why not; the package the job would get
(the smallest the user's level allows that covers what is asked, so it may offer more than asked); whether the
processor is deployed here; data locality (bytes of the inputs held here and to fetch from other nodes); the
estimated wait in the queue (jobs ahead and the recent durations of the processor's jobs); and what the user's
quota leaves. An offer is valid for `offer_lifetime` seconds (`t_expires`); `Offer.verify` checks the node's
signature and expiry.

A node owner may add a veto hook (`offer_veto`): an executable given the offer request (with the user and the
package) as JSON on stdin, answering on stdout with JSON `{"accept": bool, "reason": str}`; it runs as a
subprocess (never on the event loop) for at most `offer_veto_timeout` seconds. A hook that fails, answers
something else or is too slow rejects, with that reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import statistics
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from saas.core.errors import AuthorisationError, InvalidInputError, NotFoundError
from saas.core.identity import Identity
from saas.dor.schemas import CDataObject
from saas.rti.offer_schemas import Locality, Offer, OfferParameters, QueueEstimate
from saas.rti.packages import evaluate
from saas.rti.schemas import Task

if TYPE_CHECKING:
    import sqlite3
    from pathlib import Path

    from saas.node import Node
    from saas.rti.ports import NodeKeys
    from saas.rti.service import RTIService

__all__ = ["Locality", "Offer", "OfferParameters", "QueueEstimate", "honour", "make_offer", "run_veto"]

logger = logging.getLogger(__name__)

RECENT_JOBS = 20  # finished jobs of a processor whose durations estimate the next one's
LOOKUP_TIMEOUT = 5.0  # seconds other nodes have to say which inputs they hold
VETO_OUTPUT = 4096  # bytes of the veto hook's answer read


async def _locality(node: Node, user: Identity, obj_ids: list[str]) -> Locality:
    from saas.dor import remote

    found = Locality()
    elsewhere = []
    for obj_id in dict.fromkeys(obj_ids):
        meta = None
        if node.dor is not None:
            with contextlib.suppress(NotFoundError):
                meta = await node.dor.get_meta(obj_id, user)
        if isinstance(meta, CDataObject):
            found.held.append(obj_id)
            found.held_bytes += meta.size
        else:
            elsewhere.append(obj_id)
    records: dict[str, Any] = {}
    if elsewhere:
        with contextlib.suppress(TimeoutError):
            records = await asyncio.wait_for(remote.lookup(node, elsewhere), LOOKUP_TIMEOUT)
    for obj_id in elsewhere:
        record = records.get(obj_id)
        if isinstance(record, CDataObject):
            found.fetch.append(obj_id)
            found.fetch_bytes += record.size
        else:
            found.missing.append(obj_id)
    return found


def _durations(conn: sqlite3.Connection, proc_id: str) -> list[float]:
    """Seconds from start to end of the processor's recent successful jobs."""
    rows = conn.execute(
        "SELECT status FROM jobs WHERE proc_id = ? AND state = 'successful' ORDER BY seq DESC LIMIT ?",
        (proc_id, RECENT_JOBS),
    ).fetchall()
    durations = []
    for row in rows:
        timeline = json.loads(row["status"]).get("timeline", [])
        started = next((t["time"] for t in timeline if t["state"] == "initialising"), None)
        if started is not None and timeline:
            durations.append(max(0.0, (timeline[-1]["time"] - started) / 1000))
    return durations


async def _queue(rti: RTIService, proc_id: str, remote: bool) -> QueueEstimate:
    pool = rti.scheduler.remote if remote else rti.scheduler.local
    durations = await rti.db.run(_durations, proc_id)
    mean = statistics.fmean(durations) if durations else None
    pending, running = len(pool.queue), pool.running
    # the job starts once the jobs ahead of it, and one of the running ones, have ended: ahead / slots rounds
    busy = pending + running - pool.limit + 1
    wait = 0.0 if busy <= 0 or mean is None else mean * -(-busy // pool.limit)
    return QueueEstimate(
        pending=pending, running=running, slots=pool.limit, mean_duration=mean, samples=len(durations), wait=wait
    )


async def run_veto(hook: Path, timeout: float, request: dict[str, Any]) -> str | None:
    """The veto hook's reason to reject, or None when it accepts."""
    try:
        proc = await asyncio.create_subprocess_exec(
            str(hook),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as e:
        logger.warning("the offer veto hook %s cannot start: %s", hook, e)
        return "The node's veto hook cannot start"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(json.dumps(request).encode("utf-8")), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the hook and whatever it started
        await proc.wait()
        return f"The node's veto hook did not answer within {timeout:g} s"
    try:
        answer = json.loads(out[:VETO_OUTPUT])
        accept, reason = answer["accept"], answer.get("reason", "")
        if not isinstance(accept, bool) or not isinstance(reason, str):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return "The node's veto hook gave no valid answer"
    if proc.returncode != 0:
        return f"The node's veto hook failed (exit code {proc.returncode})"
    return None if accept else f"Rejected by the node's policy: {reason[:500] or 'no reason given'}"


async def make_offer(rti: RTIService, node: Node, caller: Identity, params: OfferParameters) -> Offer:
    config = node.config
    reasons: list[str] = []
    level = rti.levels.get(caller.id)
    try:
        processor = rti.get_processor(params.proc_id)
    except NotFoundError:
        processor = None
        reasons.append(f"Processor {params.proc_id} is not deployed on this node")
    asked: dict[str, Any] = {}
    if processor is not None and processor.gpp is not None:
        declared = (processor.gpp.proc_descriptor.model_extra or {}).get("resources")
        asked.update(declared if isinstance(declared, dict) else {})
        if processor.state == "failed":
            reasons.append(f"Processor {params.proc_id} failed to deploy on this node")
    if params.resources is not None:
        asked.update(params.resources.model_dump(exclude_none=True))
    asked.pop("partition", None)
    remote = processor is not None and processor.backend.get("name") in ("ssh", "slurm")
    sized = not remote or config.packages_file is not None  # as `RTIService.grant`
    allowed = rti.levels.allowed(caller.id)
    package, refusals = evaluate(rti.packages, allowed, asked, params.package, sized, config.job_gpus)
    reasons += [r.reason for r in refusals]
    locality = await _locality(node, caller, params.input)
    reasons += [f"Input {obj_id} is not found on this network (or not visible to you)" for obj_id in locality.missing]
    queue = await _queue(rti, params.proc_id, remote)
    now = int(time.time() * 1000)
    if params.deadline is not None:
        done = now + (queue.wait + (queue.mean_duration or 0.0)) * 1000
        if done > params.deadline:
            reasons.append(f"The job would end after the deadline (estimated in {(done - now) / 1000:.0f} s)")
    exempt = caller.id == node.iid
    pending_left = None
    if config.max_pending_per_user is not None and not exempt:
        pending_left = max(0, config.max_pending_per_user - rti.scheduler.pending_of(caller.id))
        if pending_left == 0:
            reasons.append(f"You have {config.max_pending_per_user} pending jobs, the most this node accepts per user")
    running_left = None
    if config.max_running_per_user is not None and not exempt:
        pool = rti.scheduler.remote if remote else rti.scheduler.local
        running_left = max(0, config.max_running_per_user - pool.running_of(caller.id))
    if config.offer_veto is not None:
        request = {**params.model_dump(mode="json"), "user_iid": caller.id, "level": level.level}
        request["package"] = package.model_dump() if package is not None else None
        veto = await run_veto(config.offer_veto, config.offer_veto_timeout, request)
        if veto is not None:
            reasons.append(veto)
    offer = Offer(
        offer_id=secrets.token_hex(16),
        node_iid=node.iid,
        user_iid=caller.id,
        proc_id=params.proc_id,
        can=not reasons,
        reasons=reasons,
        level=level.level,
        package=package,
        asked=asked,
        deployed=processor is not None and processor.state != "failed",
        processor_state=processor.state if processor is not None else None,
        locality=locality,
        queue=queue,
        booking=await rti.bookings.earliest(caller.id),
        pending_left=pending_left,
        running_left=running_left,
        t_issued=now,
        t_expires=now + int(config.offer_lifetime * 1000),
    )
    signature = await asyncio.to_thread(node.keystore.sign, offer.signed_content())
    return offer.model_copy(update={"signature": signature})


async def honour(keys: NodeKeys, caller: Identity, task: Task) -> str | None:
    """The package of the offer a task carries, if it is this node's (`keys`) valid offer to the caller for this
    task; raises `InvalidInputError` (400) for an expired, altered or negative offer, `AuthorisationError` (403) for
    another's."""
    try:
        offer = Offer.model_validate(task.offer)
    except ValidationError:
        raise InvalidInputError("The task's offer is not an offer") from None
    identity = keys.identity
    signed = offer.node_iid == keys.iid and await asyncio.to_thread(
        identity.verify_signature, offer.signed_content(), offer.signature
    )
    if not signed:
        raise InvalidInputError("The task's offer is not signed by this node", {"offer_id": offer.offer_id})
    if offer.user_iid != caller.id:
        raise AuthorisationError("The task's offer was made to another identity", {"offer_id": offer.offer_id})
    if int(time.time() * 1000) >= offer.t_expires:
        raise InvalidInputError(
            "The task's offer has expired: ask for a new one",
            {"offer_id": offer.offer_id, "t_expires": offer.t_expires},
        )
    if offer.proc_id != task.proc_id:
        raise InvalidInputError("The task's offer is for another processor", {"offer_id": offer.offer_id})
    if not offer.can:
        raise InvalidInputError("The task's offer says this node cannot run it", {"offer_id": offer.offer_id})
    offered = offer.package.name if offer.package is not None else None
    if task.package is not None and task.package != offered:
        raise InvalidInputError(
            f"The task names package '{task.package}' but its offer is for '{offered}'", {"offer_id": offer.offer_id}
        )
    return offered
