"""Network-wide calls under one deadline (DESIGN §12): every node is asked at once, the whole call returns after at
most `deadline` seconds with what arrived, and says which nodes did not answer.

- `ask_nodes` (clients: CLI, SDK) asks in threads; each request also carries the deadline as its own timeout, so
  the threads asking a stalled node end with it and do not keep a program from exiting.
- `ask_peers` (the node: lookups on other DORs) asks in asyncio tasks; what has not answered at the deadline is
  cancelled.

A stalled node (stopped, overloaded, behind a dead link) costs the deadline, never a per-node timeout in a row or
the longest timeout of all."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from saas.core.errors import SaaSError
from saas.nodedb.schemas import NodeInfo

__all__ = ["DEFAULT_DEADLINE", "Fanout", "NetworkList", "Unanswered", "ask_nodes", "ask_peers"]

DEFAULT_DEADLINE = 3.0  # seconds a network-wide call may take
MAX_THREADS = 16
MAX_CONCURRENT = 16  # peers `ask_peers` asks at once

T = TypeVar("T")


@dataclass(frozen=True)
class Unanswered:
    """A node that did not answer a network-wide call: why (its error, or that the deadline passed)."""

    node: NodeInfo
    reason: str

    def __str__(self) -> str:
        host, port = self.node.rest_address
        return f"{self.node.identity.id[:16]}… at {host}:{port}: {self.reason}"


class NetworkList(list[T]):
    """A list of results from many nodes; `unanswered` names the nodes that did not answer in time or failed."""

    unanswered: list[Unanswered]

    def __init__(self, items: Sequence[T] = (), unanswered: Sequence[Unanswered] = ()):
        super().__init__(items)
        self.unanswered = list(unanswered)


@dataclass
class Fanout(Generic[T]):
    """The outcome of `ask_nodes`: `answers` in the nodes' order (node, result) for those that answered."""

    answers: list[tuple[NodeInfo, T]]
    unanswered: list[Unanswered]


def ask_nodes(
    function: Callable[[NodeInfo], T],
    nodes: Sequence[NodeInfo],
    deadline: float,
    enough: Callable[[T], bool] | None = None,
) -> Fanout[T]:
    """`function(node)` for every node at once; returns after all answered or `deadline` seconds passed, or as soon
    as an answer makes `enough(answer)` true (the caller needs no other: the nodes still asked then are listed in
    `unanswered` as not waited for). A node whose call raised a `SaaSError` or did not return in time is listed in
    `unanswered` (other exceptions are bugs and propagate)."""
    if not nodes:
        return Fanout([], [])
    results: dict[int, T] = {}
    errors: dict[int, BaseException] = {}
    failed_at: dict[int, float] = {}
    done = threading.Condition()
    pending = list(range(len(nodes)))
    finished = 0
    satisfied = False

    def work() -> None:
        nonlocal finished, satisfied
        while True:
            with done:
                if not pending:
                    return
                index = pending.pop(0)
            try:
                value = function(nodes[index])
                best = enough is not None and enough(value)
                with done:
                    results[index] = value
                    satisfied = satisfied or best
            except BaseException as e:  # reported below
                with done:
                    errors[index] = e
                    failed_at[index] = time.monotonic()
            with done:
                finished += 1
                done.notify_all()

    end = time.monotonic() + deadline  # before any request starts: a request's own timeout ends after it
    for _ in range(min(MAX_THREADS, len(nodes))):
        threading.Thread(target=work, name="fanout", daemon=True).start()
    with done:
        while not satisfied and finished < len(nodes) and (left := end - time.monotonic()) > 0:
            done.wait(left)
        pending.clear()  # not yet started: not asked
        answers = [(nodes[i], results[i]) for i in range(len(nodes)) if i in results]
        # an error that came at the deadline or later (e.g. the request's own timeout, which is the deadline) is a
        # node that did not answer in time, whichever thread noticed first
        failed = {i: e for i, e in errors.items() if failed_at[i] < end or not isinstance(e, SaaSError)}
        stopped_early = satisfied
    unanswered = []
    for i, node in enumerate(nodes):
        if i in results:
            continue
        error = failed.get(i)
        if error is not None and not isinstance(error, SaaSError):
            raise error
        if isinstance(error, SaaSError):
            reason = error.reason
        elif stopped_early:
            reason = "not waited for: a best answer had arrived"
        else:
            reason = f"no answer within {deadline:g} s"
        unanswered.append(Unanswered(node, reason))
    return Fanout(answers, unanswered)


async def ask_peers(
    function: Callable[[NodeInfo], Awaitable[T]], nodes: Sequence[NodeInfo], deadline: float
) -> Fanout[T]:
    """`await function(node)` for every node at once (at most `MAX_CONCURRENT` at a time); returns when all
    answered or `deadline` seconds passed, and cancels what is still running then. A node whose call raised a
    `SaaSError`, or did not answer in time, is listed in `unanswered` (other exceptions are bugs and propagate)."""
    if not nodes:
        return Fanout([], [])
    limit = asyncio.Semaphore(MAX_CONCURRENT)

    async def one(node: NodeInfo) -> T:
        async with limit:
            return await function(node)

    tasks = [asyncio.create_task(one(node)) for node in nodes]
    try:
        _, pending = await asyncio.wait(tasks, timeout=deadline)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    unanswered = []
    bugs = []
    answers = []
    for node, task in zip(nodes, tasks, strict=True):
        if task in pending or task.cancelled():
            unanswered.append(Unanswered(node, f"no answer within {deadline:g} s"))
        elif isinstance(error := task.exception(), SaaSError):
            unanswered.append(Unanswered(node, error.reason))
        elif error is not None:
            bugs.append(error)
        else:
            answers.append((node, task.result()))
    if bugs:
        raise bugs[0]
    return Fanout(answers, unanswered)
