"""`ContentGuard`: keeps a content file from being removed between being put in place and its record being inserted.

Adds hold the guard shared (any number at once: identical content put in place twice is harmless); the removal of
unused content holds it exclusively, after every add in progress finished. A waiting removal goes before adds that
arrive after it, so a steady stream of adds cannot hold removals off for ever. Releasing never waits, so a
cancelled task always gives the guard back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["ContentGuard"]


class ContentGuard:
    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._removals_waiting = 0
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        while self._exclusive or self._removals_waiting:
            await self._changed.wait()
        self._shared += 1
        try:
            yield
        finally:
            self._shared -= 1
            self._notify()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        self._removals_waiting += 1
        try:
            while self._exclusive or self._shared:
                await self._changed.wait()
        finally:
            self._removals_waiting -= 1
            self._notify()  # adds held back by this removal may go on if it gave up waiting
        self._exclusive = True
        try:
            yield
        finally:
            self._exclusive = False
            self._notify()
