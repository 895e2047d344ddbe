"""The test helpers that wait on a condition (tests/waiting.py): they return the predicate's value once truthy, and
fail loudly, naming what was awaited, when it never is."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.waiting import WaitTimeout, until, wait_until


def test_wait_until_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert wait_until(lambda: next(counter) >= 3 and "ready", timeout=5, interval=0.001) == "ready"


def test_wait_until_names_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(WaitTimeout) as caught:
        wait_until(lambda: [], timeout=0.05, interval=0.01, what="the queue to fill", detail=lambda: "the log")
    message = str(caught.value)
    assert message.startswith("timed out after 0.05 s waiting for the queue to fill (last value [])")
    assert message.endswith("\nthe log")
    assert isinstance(caught.value, AssertionError)


def test_only_ignored_exceptions_count_as_not_yet() -> None:
    attempts: list[OSError | str] = [OSError("refused"), OSError("refused"), "up"]

    def connect() -> str:
        value = attempts.pop(0)
        if isinstance(value, OSError):
            raise value
        return value

    assert wait_until(connect, timeout=5, interval=0.001, ignore=(OSError,)) == "up"
    with pytest.raises(WaitTimeout, match="last error OSError: refused"):
        wait_until(lambda: connect_refused(), timeout=0.05, interval=0.01, ignore=(OSError,))
    with pytest.raises(ValueError):
        wait_until(lambda: int("x"), timeout=5, ignore=(OSError,))


def connect_refused() -> None:
    raise OSError("refused")


def test_until_awaits_a_coroutine_predicate_and_lets_the_loop_run() -> None:
    async def main() -> str:
        done = asyncio.Event()
        asyncio.get_running_loop().call_later(0.02, done.set)

        async def check() -> str:
            return "set" if done.is_set() else ""

        assert await until(done.is_set, timeout=5, interval=0) is True
        return await until(check, timeout=5)

    assert asyncio.run(main()) == "set"


def test_until_names_what_it_waited_for() -> None:
    with pytest.raises(WaitTimeout, match="waiting for the peer to go"):
        asyncio.run(until(lambda: False, timeout=0.05, interval=0.01, what="the peer to go"))
