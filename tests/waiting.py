"""Waiting in tests for something to happen, instead of sleeping a fixed time and hoping it did.

`wait_until` (threads, blocking) and `until` (coroutines) poll a predicate until it returns something truthy and
return that value. Past the timeout they fail the test with `WaitTimeout` (an `AssertionError`) naming what was
awaited, the predicate's last value or the last exception it raised, and what `detail()` adds (a log, a page). Only
exception types listed in `ignore` count as "not yet"; any other, `pytest.fail` included, propagates at once.

A fixed `time.sleep` stays in a test only where time passing is itself the behaviour under test (an expiry, a pace,
a quiet period in which nothing may happen), with a comment saying so.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

__all__ = ["WaitTimeout", "until", "wait_until"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 20.0  # seconds; generous, since the machines running the tests are often loaded
DEFAULT_INTERVAL = 0.05


class WaitTimeout(AssertionError):
    """A condition a test waited for did not come true in time."""

    def __init__(self, what: str, timeout: float, last: Any, error: BaseException | None, detail: str = "") -> None:
        seen = f"last value {last!r}" if error is None else f"last error {type(error).__name__}: {error}"
        super().__init__(
            f"timed out after {timeout:g} s waiting for {what} ({seen})" + (f"\n{detail}" if detail else "")
        )
        self.what = what
        self.timeout = timeout
        self.last = last
        self.error = error


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    what: str = "a condition",
    ignore: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
) -> T:
    """Call `predicate` every `interval` seconds until it returns something truthy and return that; raise
    `WaitTimeout` once `timeout` seconds have passed. Exceptions of the types in `ignore` count as "not yet";
    `detail()` (e.g. a daemon's log) is added to the failure message."""
    deadline = time.monotonic() + timeout
    while True:
        last: Any = None
        error: BaseException | None = None
        try:
            last = predicate()
        except ignore as e:
            error = e
        else:
            if last:
                return cast(T, last)
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout, last, error, detail() if detail else "")
        time.sleep(interval)


async def until(
    predicate: Callable[[], Awaitable[T]] | Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    what: str = "a condition",
    ignore: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] | None = None,
) -> T:
    """`wait_until` for coroutines: the event loop runs between checks (`interval=0` yields once per check), and
    `predicate` may return an awaitable, which is awaited."""
    deadline = time.monotonic() + timeout
    while True:
        last: Any = None
        error: BaseException | None = None
        try:
            last = predicate()
            if inspect.isawaitable(last):
                last = await last
        except ignore as e:
            error = e
        else:
            if last:
                return cast(T, last)
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout, last, error, detail() if detail else "")
        await asyncio.sleep(interval)
