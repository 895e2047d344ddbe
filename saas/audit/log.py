"""`AuditLog`: the node's signed, hash-chained log of who did what to which object or job (issue 19 item 3).

Callers on the event loop call `record(event, actor=..., owner=..., obj_id=..., ...)`: it only puts the entry on a
queue and never waits. One thread of the log's own takes what was queued, chains and signs each entry
(`saas.audit.chain`), and commits them in one SQLite transaction (`<datastore>/audit.sqlite`, WAL) together with the
log's signed head. Signing (~0.4 ms an entry) is why the log has a thread of its own instead of sharing the
databases' thread (`saas.sqlite`). `flush()` returns once everything recorded before it is committed; queries,
exports and verifications flush first, so a caller sees its own actions.

What callers may rely on:
- entries hold identities, object/job/processor IDs, types, sizes and reasons — never content, by-value inputs,
  credentials, signatures or passwords (callers pass only such fields; strings are cut to `MAX_TEXT`);
- the log is bounded: at most `max_entries` entries and none older than `max_age_days` (node config); retention
  removes the oldest and appends an `audit.pruned` entry naming the first seq it kept;
- a flood cannot grow memory: at most `MAX_QUEUED` entries wait; beyond that entries are counted and one
  `audit.dropped` entry with the count is written when there is room; refused requests are recorded at most once
  per client address every `REFUSAL_WINDOW_S` seconds (with the number suppressed meanwhile);
- at start the log checks that its last entry is its signed head; if not (entries removed from its end, or the
  head replaced), it logs an error, appends `audit.tamper_detected` and continues from the signed head, so the
  gap stays visible to every later verification."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas.audit.chain import (
    COLUMNS,
    EXPORT_VERSION,
    GENESIS,
    SELECT,
    AuditEntry,
    VerifyReport,
    entry_from_row,
    entry_hash,
    entry_message,
    head_message,
    read_database,
    verify_database,
)
from saas.core.errors import ConfigError

if TYPE_CHECKING:
    from saas.core.keystore import Keystore

__all__ = ["AuditLog"]

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, event TEXT NOT NULL, actor TEXT, owner TEXT, obj_id TEXT,
    job_id TEXT, proc_id TEXT, details TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL, signature TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS entries_owner ON entries (owner, seq);
CREATE INDEX IF NOT EXISTS entries_actor ON entries (actor, seq);
CREATE INDEX IF NOT EXISTS entries_obj ON entries (obj_id, seq);
CREATE INDEX IF NOT EXISTS entries_time ON entries (time);
CREATE TABLE IF NOT EXISTS head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL,
                                 signature TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
BATCH = 1000  # entries committed together at most
MAX_QUEUED = 100_000  # entries waiting for the writer at most
MAX_TEXT = 300  # characters of a string in an entry's details
REFUSAL_WINDOW_S = 10.0
MAX_REFUSALS = 100  # refused-request entries per window at most, from all clients together
AGE_CHECK_S = 60.0  # how often entries are checked against the age limit
EXPORT_CHUNK = 1000

_STOP = object()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, dict):
        return {str(k)[:MAX_TEXT]: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value[:100]]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return str(value)[:MAX_TEXT]


class AuditLog:
    def __init__(self, path: Path, keystore: Keystore, max_entries: int, max_age_days: float | None):
        self.path = path
        self._keystore = keystore
        self.max_entries = max_entries
        self.max_age_ms = None if max_age_days is None else int(max_age_days * 86_400_000)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._queued = 0  # entries on the queue (approximate: read without the lock for the bound)
        self._dropped = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._seq = 0
        self._hash = GENESIS
        self._first_seq = 1
        self._next_age_check = 0.0
        self.max_queued = MAX_QUEUED
        self._refusals: dict[str, tuple[float, int]] = {}  # client and claimed IID -> (window start, suppressed)
        self._refusal_window = (0.0, 0, 0)  # (start, entries recorded, refusals suppressed beyond MAX_REFUSALS)

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._thread is not None:
            return
        try:
            problem = await asyncio.to_thread(self._open)
        except sqlite3.DatabaseError as e:
            raise ConfigError(
                f"The audit log {self.path} cannot be read ({e}): move it aside (keep it for verification) to start "
                "a new one",
                {"path": str(self.path)},
            ) from None
        self._thread = threading.Thread(target=self._serve, name="audit", daemon=True)
        self._thread.start()
        if problem is not None:
            logger.error("audit log: %s", problem["reason"])
            self.record("audit.tamper_detected", **problem)

    async def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        await asyncio.to_thread(thread.join)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _open(self) -> dict[str, Any] | None:
        """Open the database, note the node's identity, and find where the chain continues; returns the problem
        found at its end, if any (blocking)."""
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            self.path.chmod(0o600)
            identity = self._keystore.identity
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('node', ?)", (identity.model_dump_json(),))
            last = conn.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
            first = conn.execute("SELECT MIN(seq) FROM entries").fetchone()[0]
            head = conn.execute("SELECT seq, hash, signature FROM head WHERE id = 1").fetchone()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._first_seq = first or 1
        if last is not None:
            self._seq, self._hash = last
        if head is None and last is None:
            return None
        head_ok = head is not None and identity.verify_signature(head_message(head[0], head[1]), head[2])
        if head_ok and last is not None and (head[0], head[1]) == tuple(last):
            return None
        if head_ok and head[0] > self._seq:  # entries were cut from the end: continue after the signed head
            self._seq, self._hash = head[0], head[1]
        return {
            "reason": "the log does not end at its signed head: entries were removed or the head was replaced",
            "head_seq": head[0] if head is not None else None,
            "head_valid": head_ok,
            "last_seq": last[0] if last is not None else None,
        }

    # -- recording (event loop: never blocks) -------------------------------------------------------------------

    def record(
        self,
        event: str,
        *,
        actor: str | None = None,
        owner: str | None = None,
        obj_id: str | None = None,
        job_id: str | None = None,
        proc_id: str | None = None,
        **details: Any,
    ) -> None:
        """Queue an entry. `actor`: the authenticated identity that acted (None: the node); `owner`: whose object
        or job it concerns. `details`: small facts, never secrets."""
        if self._thread is None:
            logger.debug("audit log not running: %s not recorded", event)
            return
        if self._queued >= self.max_queued:
            with self._lock:
                self._dropped += 1
            return
        entry = {
            "time": _now_ms(),
            "event": event,
            "actor": actor,
            "owner": owner,
            "obj_id": obj_id,
            "job_id": job_id,
            "proc_id": proc_id,
            "details": _clean(details),
        }
        with self._lock:
            self._queued += 1
        self._queue.put(entry)

    def refused(self, client: str, claimed_iid: str | None, **details: Any) -> None:
        """A refused request (401/403), as a `refusal` per client address and claimed identity."""
        self.refusal(f"{client} {claimed_iid}", "request.refused", client=client, claimed_iid=claimed_iid, **details)

    def refusal(self, key: str, event: str, **fields: Any) -> None:
        """Record a refusal at most once per `key` every `REFUSAL_WINDOW_S`, and at most `MAX_REFUSALS` times per
        window in all: the rest are counted, and the counts written with the next entry (`suppressed_before`: of
        this key; `suppressed_others`: of all others), so a flood of refusals — which costs the sender nothing —
        cannot push real entries out of the log. `fields` as for `record`."""
        now = time.monotonic()
        started, suppressed = self._refusals.get(key, (0.0, 0))
        if now - started < REFUSAL_WINDOW_S:
            self._refusals[key] = (started, suppressed + 1)
            return
        window, recorded, others = self._refusal_window
        if now - window >= REFUSAL_WINDOW_S:  # a new window: forget the old keys (their counts go to `others`)
            window, recorded = now, 0
            others += sum(n for k, (t, n) in self._refusals.items() if now - t >= REFUSAL_WINDOW_S and k != key)
            self._refusals = {k: v for k, v in self._refusals.items() if now - v[0] < REFUSAL_WINDOW_S}
        if recorded >= MAX_REFUSALS:
            self._refusal_window = (window, recorded, others + 1)
            return
        self._refusal_window = (window, recorded + 1, 0)
        self._refusals[key] = (now, 0)
        self.record(event, suppressed_before=suppressed, suppressed_others=others, **fields)

    async def flush(self) -> None:
        """Return once everything recorded before is committed."""
        if self._thread is None:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((loop, future))
        await future

    # -- the writer thread --------------------------------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            entries = [i for i in items if isinstance(i, dict)]
            waiters = [i for i in items if isinstance(i, tuple)]
            with self._lock:
                self._queued -= len(entries)
                dropped, self._dropped = self._dropped, 0
            if dropped:
                entries.append(self._entry("audit.dropped", dropped=dropped, reason="too many entries at once"))
            try:
                if entries:
                    self._append(entries)
                self._prune()
            except Exception:
                logger.exception("audit log: %d entries could not be stored", len(entries))
            for loop, future in waiters:
                with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, future)
            if _STOP in items:
                return

    @staticmethod
    def _entry(event: str, **details: Any) -> dict[str, Any]:
        return {"time": _now_ms(), "event": event, "details": details}

    def _append(self, entries: list[dict[str, Any]], before: str | None = None, args: tuple[Any, ...] = ()) -> None:
        """Chain, sign and commit `entries` in one transaction (after the statement `before`, if any)."""
        assert self._conn is not None
        seq, prev = self._seq, self._hash
        rows = []
        for entry in entries:
            seq += 1
            fields = {**{k: None for k in COLUMNS}, **entry, "seq": seq, "prev": prev}
            fields["details"] = fields["details"] or {}
            fields["hash"] = entry_hash(fields)
            fields["signature"] = self._keystore.sign(entry_message(fields["hash"]))
            prev = fields["hash"]
            rows.append(tuple(json.dumps(fields[c]) if c == "details" else fields[c] for c in COLUMNS))
        head_signature = self._keystore.sign(head_message(seq, prev))
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if before is not None:
                conn.execute(before, args)
            conn.executemany(
                f"INSERT INTO entries ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows
            )
            conn.execute("INSERT OR REPLACE INTO head VALUES (1, ?, ?, ?)", (seq, prev, head_signature))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._seq, self._hash = seq, prev

    def _prune(self) -> None:
        """Retention: keep at most `max_entries` (pruned to 90% once over) and none older than the age limit."""
        first_kept, reason = self._first_seq, None
        if self._seq - self._first_seq + 1 > self.max_entries:
            first_kept, reason = self._seq - self.max_entries + max(1, self.max_entries // 10) + 1, "max entries"
        if self.max_age_ms is not None and time.monotonic() >= self._next_age_check:
            self._next_age_check = time.monotonic() + min(AGE_CHECK_S, self.max_age_ms / 10_000)
            assert self._conn is not None
            cutoff = _now_ms() - self.max_age_ms
            row = self._conn.execute("SELECT MIN(seq) FROM entries WHERE time >= ?", (cutoff,)).fetchone()
            young = row[0] if row[0] is not None else self._seq + 1
            if young > first_kept:
                first_kept, reason = young, "max age"
        if reason is None or first_kept <= self._first_seq:
            return
        first_kept = min(first_kept, self._seq + 1)  # at most everything: the pruned entry starts the log then
        removed = first_kept - self._first_seq
        entry = self._entry("audit.pruned", first_kept=first_kept, removed=removed, reason=reason)
        self._append([entry], "DELETE FROM entries WHERE seq < ?", (first_kept,))
        self._first_seq = first_kept
        logger.info("audit log: removed %d entries (%s)", removed, reason)

    # -- reading ------------------------------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN")  # one snapshot
        return conn

    async def query(
        self,
        visible_to: str | None,
        *,
        obj_id: str | None = None,
        job_id: str | None = None,
        event: str | None = None,
        since: int | None = None,
        until: int | None = None,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Entries in seq order; `visible_to`: only those about that identity's objects and jobs or done by it
        (None: all, for the node owner)."""
        await self.flush()
        where: list[str] = ["seq > ?"]
        args: list[str | int] = [after_seq]
        if visible_to is not None:
            where.append("(owner = ? OR actor = ?)")
            args += [visible_to, visible_to]
        for column, value in (("obj_id", obj_id), ("job_id", job_id), ("event", event)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if until is not None:
            where.append("time < ?")
            args.append(until)
        sql = f"{SELECT} WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"

        def run() -> list[AuditEntry]:
            conn = self._reader()
            try:
                return [entry_from_row(r) for r in conn.execute(sql, (*args, limit))]
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    async def verify(self, anchor: tuple[int, str] | None = None) -> VerifyReport:
        """Verify the whole log as stored (blocking work in a worker thread)."""
        await self.flush()
        return await asyncio.to_thread(verify_database, self.path, self._keystore.iid, anchor)

    async def export(self) -> AsyncIterator[bytes]:
        """The log as JSON lines: the header (node identity and signed head), then every entry in seq order."""
        await self.flush()
        conn = await asyncio.to_thread(self._reader)
        try:
            node, head, entries = await asyncio.to_thread(read_database, conn)
            header = {
                "audit_log": EXPORT_VERSION,
                "node": node.model_dump() if node else None,
                "head": head.model_dump() if head else None,
            }
            yield json.dumps(header).encode() + b"\n"
            while chunk := await asyncio.to_thread(lambda: list(itertools.islice(entries, EXPORT_CHUNK))):
                yield b"".join(e.model_dump_json().encode() + b"\n" for e in chunk)
        finally:
            await asyncio.to_thread(conn.close)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
