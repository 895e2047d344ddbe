"""`TrioBridge`: one daemon thread running its own `trio.run`, and the only crossing between it and asyncio.

The node's main thread runs asyncio; libp2p is trio-only (DESIGN §3). The bridge owns the trio thread and its
root nursery. asyncio code awaits trio work with `call` (the result comes back through an asyncio future); trio
code hands work to asyncio with `to_asyncio` (`run_coroutine_threadsafe`, awaited without blocking trio). Callers
must pass plain data only (dicts, str, small bytes) — never library objects of the other side.

`start` returns once the trio side is up (the `main` function has called `task_status.started()`); `stop` cancels
everything on the trio side and joins the thread with a timeout, so a stuck peer can never hang shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import trio

from saas._compat import BaseExceptionGroup
from saas.core.errors import P2PError, SaaSError

__all__ = ["TrioBridge"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
TrioMain = Callable[..., Awaitable[None]]  # async def main(*, task_status) -> None


def _single(error: BaseException) -> BaseException:
    """The one error inside (nested) exception groups of one error each — trio nurseries wrap what they raise."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


class TrioBridge:
    def __init__(self, name: str = "p2p-trio"):
        self._name = name
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()

    @property
    def running(self) -> bool:
        return self._token is not None and not self._stopped.is_set()

    async def start(self, main: TrioMain, timeout: float = 30.0) -> None:
        """Run `main(task_status=...)` in the trio thread; return when it reports started (or raise its error)."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = self._loop.create_future()

        def settle(error: BaseException | None) -> None:
            if started.done():
                return
            if error is None:
                started.set_result(None)
            else:
                started.set_exception(error)

        async def root() -> None:
            self._token = trio.lowlevel.current_trio_token()
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    await nursery.start(lambda task_status: main(task_status=task_status))
                    self._notify(settle, None)
            except BaseException as e:  # report a failed start to the awaiting asyncio side
                e = _single(e)
                self._notify(settle, e if isinstance(e, Exception) else P2PError("P2P thread stopped"))
                if not isinstance(e, trio.Cancelled | KeyboardInterrupt | SaaSError):
                    logger.exception("P2P thread failed")

        def thread_main() -> None:
            try:
                trio.run(root)
            except BaseException as e:
                logger.debug("trio thread ended with %r", e)
            finally:
                self._stopped.set()
                self._notify(settle, P2PError("P2P thread stopped"))

        self._thread = threading.Thread(target=thread_main, name=self._name, daemon=True)
        self._thread.start()
        try:
            await asyncio.wait_for(started, timeout)
        except TimeoutError as e:
            await self.stop()
            raise P2PError("P2P service did not start in time", {"timeout": timeout}) from e

    def _notify(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    async def stop(self, timeout: float = 10.0) -> None:
        """Cancel the trio side and join its thread (idempotent)."""
        thread = self._thread
        if thread is None:
            return
        token, nursery = self._token, self._nursery
        if token is not None and nursery is not None and not self._stopped.is_set():
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(nursery.cancel_scope.cancel)
        await asyncio.to_thread(thread.join, timeout)
        if thread.is_alive():
            logger.warning("P2P thread did not stop within %.0f s; leaving it (daemon)", timeout)
        self._thread = None

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float | None = None) -> T:
        """From asyncio: run `await fn(*args)` on the trio side and return its result (or raise its error).

        With `timeout`, the trio call is cancelled after that many seconds and `TimeoutError` is raised."""
        if not self.running or self._token is None or self._nursery is None or self._loop is None:
            raise P2PError("P2P service is not running")
        loop = self._loop
        future: asyncio.Future[T] = loop.create_future()
        nursery = self._nursery

        def resolve(ok: bool, value: Any) -> None:
            if future.done():
                return
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        async def run() -> None:
            try:
                if timeout is None:
                    result = await fn(*args)
                else:
                    with trio.fail_after(timeout):
                        result = await fn(*args)
            except trio.TooSlowError:
                self._notify(resolve, False, TimeoutError(f"P2P call timed out after {timeout} s"))
            except trio.Cancelled:
                self._notify(resolve, False, P2PError("P2P service stopped"))
                raise
            except Exception as e:
                self._notify(resolve, False, e)
            else:
                self._notify(resolve, True, result)

        try:
            self._token.run_sync_soon(nursery.start_soon, run)
        except trio.RunFinishedError as e:
            raise P2PError("P2P service is not running") from e
        return await future

    async def to_asyncio(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """From trio: run `coroutine` on the asyncio loop and await its result without blocking trio."""
        loop, token = self._loop, self._token
        if loop is None or token is None or loop.is_closed():
            coroutine.close()
            raise P2PError("asyncio side is gone")
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        done = trio.Event()

        def wake(_: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        future.add_done_callback(wake)
        try:
            if timeout is None:
                await done.wait()
            else:
                with trio.fail_after(timeout):
                    await done.wait()
        except BaseException:
            future.cancel()
            raise
        return future.result()

    def to_asyncio_soon(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """From trio: schedule `coroutine` on the asyncio loop without waiting (fire and forget)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            coroutine.close()
            return
        asyncio.run_coroutine_threadsafe(coroutine, loop)
