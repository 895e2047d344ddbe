"""A SQLite connection for a service: WAL mode, one writer at a time, used from worker threads only.

Services call `await db.run(fn, *args)`; `fn(conn, *args)` runs in a worker thread under the connection lock
and inside a transaction (committed when `fn` returns, rolled back if it raises)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["Database"]

T = TypeVar("T")


class Database:
    def __init__(self, path: Path, schema: str):
        self.path = path
        self._schema = schema
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(self._schema)
        self._conn = conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(conn, *args)` in one transaction (blocking; use `run` from async code)."""
        with self._lock:
            if self._conn is None:
                raise RuntimeError("database is closed")
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(self.call, fn, *args)
