"""`saas.dor.guard.ContentGuard`: adds hold it shared (many at once), removals exclusively; a waiting removal goes
before adds that arrive after it; cancelled tasks always give the guard back. Real asyncio tasks on a real loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from saas.dor.guard import ContentGuard
from tests import waiting

WAIT = 5  # seconds before a test fails instead of hanging


async def settle() -> None:
    """Let every ready task run until nothing changes any more (before checking that something did not happen)."""
    for _ in range(20):
        await asyncio.sleep(0)  # not a wait on time: one turn of the event loop each


async def until(condition: Callable[[], bool]) -> None:
    await waiting.until(condition, WAIT, interval=0, what="the holders to get that far")


class Holder:
    """A task that enters the guard (shared or exclusive), notes it, and stays inside until released."""

    def __init__(self, guard: ContentGuard, mode: str, log: list[str], name: str):
        self.inside = False
        self.name = name
        self._release = asyncio.Event()
        self._guard = guard
        self._mode = mode
        self._log = log
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        context = self._guard.shared() if self._mode == "shared" else self._guard.exclusive()
        async with context:
            self.inside = True
            self._log.append(f"{self.name} in")
            try:
                await self._release.wait()
            finally:
                self.inside = False
                self._log.append(f"{self.name} out")

    async def leave(self) -> None:
        self._release.set()
        await asyncio.wait_for(self.task, WAIT)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), WAIT * 3))


def test_many_shared_holders_at_once() -> None:
    async def main() -> None:
        guard, log = ContentGuard(), list[str]()
        holders = [Holder(guard, "shared", log, f"s{i}") for i in range(5)]
        await until(lambda: all(h.inside for h in holders))
        for h in holders:
            await h.leave()
        # And the guard is free again afterwards: an exclusive holder gets in at once.
        e = Holder(guard, "exclusive", log, "e")
        await until(lambda: e.inside)
        await e.leave()

    run(main)


def test_exclusive_waits_for_every_shared_holder() -> None:
    async def main() -> None:
        guard, log = ContentGuard(), list[str]()
        s1, s2 = Holder(guard, "shared", log, "s1"), Holder(guard, "shared", log, "s2")
        await until(lambda: s1.inside and s2.inside)
        e = Holder(guard, "exclusive", log, "e")
        await settle()
        assert not e.inside
        await s1.leave()
        await settle()
        assert not e.inside  # s2 still holds it
        await s2.leave()
        await until(lambda: e.inside)
        await e.leave()
        assert log == ["s1 in", "s2 in", "s1 out", "s2 out", "e in", "e out"]

    run(main)


def test_shared_waits_while_exclusive_is_held() -> None:
    async def main() -> None:
        guard, log = ContentGuard(), list[str]()
        e = Holder(guard, "exclusive", log, "e")
        await until(lambda: e.inside)
        s = Holder(guard, "shared", log, "s")
        e2 = Holder(guard, "exclusive", log, "e2")
        await settle()
        assert not s.inside and not e2.inside
        await e.leave()
        await until(lambda: s.inside or e2.inside)
        await settle()
        assert not (s.inside and e2.inside)  # never shared and exclusive at once, nor two exclusive
        first, second = (s, e2) if s.inside else (e2, s)
        await first.leave()
        await until(lambda: second.inside)
        await second.leave()

    run(main)


def test_shared_arriving_while_exclusive_waits_goes_after_it() -> None:
    async def main() -> None:
        guard, log = ContentGuard(), list[str]()
        s1 = Holder(guard, "shared", log, "s1")
        await until(lambda: s1.inside)
        e = Holder(guard, "exclusive", log, "e")
        await settle()
        s2 = Holder(guard, "shared", log, "s2")  # arrives while e waits for s1
        await settle()
        assert not e.inside and not s2.inside
        await s1.leave()
        await until(lambda: e.inside)
        await settle()
        assert not s2.inside
        await e.leave()
        await until(lambda: s2.inside)
        await s2.leave()
        assert log == ["s1 in", "s1 out", "e in", "e out", "s2 in", "s2 out"]

    run(main)


def test_cancelled_exclusive_waiter_leaves_the_guard_usable() -> None:
    async def main() -> None:
        guard, log = ContentGuard(), list[str]()
        s1 = Holder(guard, "shared", log, "s1")
        await until(lambda: s1.inside)
        e = Holder(guard, "exclusive", log, "e")
        await settle()
        e.task.cancel()
        await asyncio.gather(e.task, return_exceptions=True)
        assert e.task.cancelled()
        # No removal waits any more: new adds go in next to s1.
        s2 = Holder(guard, "shared", log, "s2")
        await until(lambda: s2.inside)
        assert s1.inside
        await s1.leave()
        await s2.leave()
        e2 = Holder(guard, "exclusive", log, "e2")
        await until(lambda: e2.inside)
        await e2.leave()
        assert "e in" not in log

    run(main)


def test_cancelled_shared_holder_releases_the_guard() -> None:
    async def main() -> None:
        guard, log = ContentGuard(), list[str]()
        s = Holder(guard, "shared", log, "s")
        await until(lambda: s.inside)
        e = Holder(guard, "exclusive", log, "e")
        await settle()
        assert not e.inside
        s.task.cancel()
        await asyncio.gather(s.task, return_exceptions=True)
        assert s.task.cancelled()
        await until(lambda: e.inside)
        await e.leave()
        assert log == ["s in", "s out", "e in", "e out"]

    run(main)


def test_cancelled_exclusive_holder_releases_the_guard() -> None:
    async def main() -> None:
        guard, log = ContentGuard(), list[str]()
        e = Holder(guard, "exclusive", log, "e")
        await until(lambda: e.inside)
        s = Holder(guard, "shared", log, "s")
        await settle()
        assert not s.inside
        e.task.cancel()
        await asyncio.gather(e.task, return_exceptions=True)
        await until(lambda: s.inside)
        await s.leave()

    run(main)


def test_cancelled_shared_waiter_does_not_block_others() -> None:
    async def main() -> None:
        guard, log = ContentGuard(), list[str]()
        e = Holder(guard, "exclusive", log, "e")
        await until(lambda: e.inside)
        waiting = Holder(guard, "shared", log, "waiting")
        await settle()
        waiting.task.cancel()
        await asyncio.gather(waiting.task, return_exceptions=True)
        await e.leave()
        e2 = Holder(guard, "exclusive", log, "e2")  # nobody is left holding it shared
        await until(lambda: e2.inside)
        await e2.leave()
        assert "waiting in" not in log

    run(main)


def test_cancelled_exclusive_waiter_lets_the_adds_behind_it_go() -> None:
    """An add that queued behind a waiting removal enters as soon as that removal gives up, not only once the
    adds before it left."""

    async def main() -> None:
        guard, log = ContentGuard(), list[str]()
        s1 = Holder(guard, "shared", log, "s1")
        await until(lambda: s1.inside)
        e = Holder(guard, "exclusive", log, "e")
        await settle()
        s2 = Holder(guard, "shared", log, "s2")
        await settle()
        assert not s2.inside  # behind the waiting removal
        e.task.cancel()
        await asyncio.gather(e.task, return_exceptions=True)
        await until(lambda: s2.inside)
        assert s1.inside
        await s1.leave()
        await s2.leave()

    run(main)
