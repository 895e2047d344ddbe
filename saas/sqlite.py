"""A SQLite connection for a service: WAL mode, one thread for all databases of the process, group commit.

Services call `await db.run(fn, *args)`; `fn(conn, *args)` runs in the databases' thread, inside a transaction,
and its result (or exception) comes back to the caller. Requests that arrive while the thread is busy are run
together in one transaction, each in its own savepoint: a request that raises is rolled back alone, and every
caller is answered only after the transaction holding its request committed. So a caller may rely on its write
being stored when `run` returns, while a busy node commits once per batch instead of once per request, and the
event loop is woken once per batch instead of once per request. Requests run in the order they were made.

`call(fn, *args)` is the blocking form, for start-up code that already runs in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["Database"]

T = TypeVar("T")

logger = logging.getLogger(__name__)

BATCH_LIMIT = 256  # requests committed together at most

_Request = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class Database:
    def __init__(self, path: Path, schema: str):
        self.path = path
        self._schema = schema
        self._lock = threading.Lock()  # the connection
        self._intake = threading.Lock()  # accepting requests vs closing: a request is queued before the stop or refused
        self._conn: sqlite3.Connection | None = None
        self._open = False

    def open(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(self._schema)
        with self._lock:
            self._conn = conn
        with self._intake:
            self._open = True

    def close(self) -> None:
        """Answer the requests already made, then close (blocking; call it from a worker thread)."""
        closed = threading.Event()
        with self._intake:
            was_open, self._open = self._open, False
            if was_open:
                _WORKER.put((self, closed))
        if was_open:
            closed.wait()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` in one transaction of its own (blocking; use `run` from async code)."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` in the databases' thread; returns once the transaction holding it committed."""
        return await self.submit(fn, *args)

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Queue `fn(conn, *args)` now (call from the event loop) and return the future of its result. A write
        queued without waiting for it still lands before any request queued after it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._intake:
            if not self._open:
                raise RuntimeError("database is closed")
            _WORKER.put((self, (fn, args, future, loop)))
        return future

    def write_behind(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue a write nobody waits for (a later awaited request commits after it); a failure is logged."""
        self.submit(fn, *args).add_done_callback(_log_failure)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is closed")
        return self._conn

    def _run_batch(self, batch: list[_Request]) -> list[tuple[_Request, Any, BaseException | None]]:
        answers: list[tuple[_Request, Any, BaseException | None]] = []
        if not batch:
            return answers
        with self._lock:
            try:
                conn = self._connection()
                conn.execute("BEGIN IMMEDIATE")
                savepoints = len(batch) > 1  # a lone request is the transaction itself
                for request in batch:
                    fn, args = request[0], request[1]
                    if savepoints:
                        conn.execute("SAVEPOINT request")
                    try:
                        result = fn(conn, *args)
                    except BaseException as e:  # even a BaseException fails only its request, not the thread
                        if not conn.in_transaction:  # SQLite rolled back the whole batch itself (SQLITE_FULL)
                            raise
                        conn.execute("ROLLBACK TO request" if savepoints else "ROLLBACK")
                        answers.append((request, None, _disk_full_as_such(e)))
                    else:
                        answers.append((request, result, None))
                    if savepoints:
                        conn.execute("RELEASE request")
                if conn.in_transaction:
                    conn.execute("COMMIT")
            except BaseException as e:  # the transaction itself failed: nothing of the batch is stored
                if self._conn is not None and self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                return [(request, None, _disk_full_as_such(e)) for request in batch]
        return answers


class _Worker:
    """The one thread that serves every open `Database` of the process. It takes whatever was queued meanwhile and
    runs each database's share as one transaction; fewer threads mean fewer hand-overs of the GIL on a busy node."""

    def __init__(self) -> None:
        self._items: queue.SimpleQueue[tuple[Database, _Request | threading.Event]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def put(self, item: tuple[Database, _Request | threading.Event]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="sqlite", daemon=True)
                self._thread.start()
        self._items.put(item)

    def _serve(self) -> None:
        while True:
            items = [self._items.get()]
            while len(items) < BATCH_LIMIT:
                try:
                    items.append(self._items.get_nowait())
                except queue.Empty:
                    break
            answers: list[tuple[_Request, Any, BaseException | None]] = []
            pending: dict[Database, list[_Request]] = {}
            for db, item in items:
                if isinstance(item, threading.Event):  # the database closes: answer what it has, then let it go
                    answers += db._run_batch(pending.pop(db, []))
                    _answer(answers)
                    answers = []
                    item.set()
                else:
                    pending.setdefault(db, []).append(item)
            for db, batch in pending.items():
                answers += db._run_batch(batch)
            _answer(answers)


_WORKER = _Worker()


def _disk_full_as_such(error: BaseException) -> BaseException:
    """SQLITE_FULL (the disk of the database is full) as the `StorageFullError` it is; other errors unchanged."""
    from saas.core.errors import StorageFullError

    return StorageFullError.from_error(error, "the node's database") or error


def _answer(answers: list[tuple[_Request, Any, BaseException | None]]) -> None:
    """Hand the answers back, one wake-up per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any, BaseException | None]]] = {}
    for (_fn, _args, future, loop), result, error in answers:
        by_loop.setdefault(loop, []).append((future, result, error))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, items)


def _settle(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in items:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("a queued database write failed: %r", future.exception())
