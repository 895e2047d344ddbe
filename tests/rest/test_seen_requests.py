"""`SeenRequests` (issue 14 item 5): accepted (iid, nonce) pairs survive a reopen of the datastore while their
window lasts, are forgotten after it, and two copies of one request racing each other are told apart."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from saas.core.errors import AuthenticationError
from saas.rest.replay import SeenRequests

NOW = 1_800_000_000_000
IID = "u" * 64


def rows(path: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT iid, nonce, forget_after FROM seen_requests ORDER BY nonce").fetchall()


def test_pairs_survive_a_reopen_within_their_window_only(tmp_path: Path) -> None:
    path = tmp_path / "requests.sqlite"

    async def first_run() -> None:
        seen = SeenRequests(path)
        await seen.start(NOW)
        await seen.remember(IID, "short", NOW + 1_000, NOW)
        await seen.remember(IID, "long", NOW + 100_000, NOW)
        await seen.stop()

    async def second_run(now: int) -> list[str]:
        seen = SeenRequests(path)
        await seen.start(now)
        refused = []
        for nonce in ("short", "long"):
            try:
                await seen.remember(IID, nonce, now + 120_000, now)
            except AuthenticationError as e:
                assert "Replayed request" in e.reason
                refused.append(nonce)
        await seen.stop()
        return refused

    asyncio.run(first_run())
    assert [r[1] for r in rows(path)] == ["long", "short"]
    assert asyncio.run(second_run(NOW + 500)) == ["short", "long"]  # both still within their window
    # "short" was accepted again at NOW + 2000 (its window had passed) and stored with its new window.
    assert asyncio.run(second_run(NOW + 2_000)) == ["long"]
    assert rows(path) == [(IID, "long", NOW + 100_000), (IID, "short", NOW + 122_000)]


def test_racing_copies_of_one_request_are_told_apart(tmp_path: Path) -> None:
    async def race() -> list[BaseException | None]:
        seen = SeenRequests(tmp_path / "requests.sqlite")
        await seen.start(NOW)
        try:
            return await asyncio.gather(
                *(seen.remember(IID, "same", NOW + 1_000, NOW) for _ in range(5)), return_exceptions=True
            )
        finally:
            await seen.stop()

    results = asyncio.run(race())
    assert results.count(None) == 1
    assert all(isinstance(r, AuthenticationError) for r in results if r is not None)


def test_expired_pairs_are_pruned_from_the_datastore(tmp_path: Path) -> None:
    path = tmp_path / "requests.sqlite"

    async def run() -> None:
        seen = SeenRequests(path)
        await seen.start(NOW)
        await seen.remember(IID, "old", NOW + 1_000, NOW)
        await seen.remember(IID, "new", NOW + 200_000, NOW + 60_000)  # a prune is due: "old" is out of its window
        await seen.stop()

    asyncio.run(run())
    assert [r[1] for r in rows(path)] == ["new"]
