"""`saas.sqlite.Database`: one thread per database, requests made meanwhile committed together (group commit).

Real SQLite files in `tmp_path`, real event loops and threads. A batch is forced by holding the database thread in
one request (it waits on a `threading.Event`) while more requests are queued behind it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from saas.sqlite import Database
from tests.waiting import until

SCHEMA = "CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL);"
WAIT = 10  # seconds: how long a test waits for anything before failing instead of hanging


class Gate:
    """Holds the database thread in one request until `release()`."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self._release = threading.Event()

    def hold(self, conn: sqlite3.Connection) -> str:
        self.started.set()
        if not self._release.wait(WAIT):
            raise AssertionError("the gate was never released")
        return "held"

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.wait, WAIT), "the database thread never ran the gate"

    def release(self) -> None:
        self._release.set()


def put(conn: sqlite3.Connection, k: str, v: int) -> int:
    conn.execute("INSERT INTO kv (k, v) VALUES (?, ?)", (k, v))
    return v


def get(conn: sqlite3.Connection, k: str) -> int | None:
    row = conn.execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
    return None if row is None else int(row[0])


def put_then_fail(conn: sqlite3.Connection, k: str) -> None:
    conn.execute("INSERT INTO kv (k, v) VALUES (?, 0)", (k,))
    raise ValueError(f"failed after writing {k}")


def outside(path: Path, k: str) -> int | None:
    """The value of `k` as a fresh connection sees it (only committed data)."""
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
        return None if row is None else int(row[0])
    finally:
        conn.close()


def all_outside(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {k: v for k, v in conn.execute("SELECT k, v FROM kv")}
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "test.sqlite", SCHEMA)
    database.open()
    yield database
    database.close()


def test_run_returns_results_and_call_is_the_blocking_form(db: Database) -> None:
    async def main() -> tuple[Any, ...]:
        return (
            await db.run(put, "a", 1),
            await db.run(get, "a"),
            await db.run(get, "missing"),
            await db.run(lambda conn, x, y: x + y, 2, 3),
        )

    assert asyncio.run(main()) == (1, 1, None, 5)
    assert db.call(get, "a") == 1
    assert db.call(put, "b", 2) == 2
    assert outside(db.path, "b") == 2


def test_call_that_raises_is_rolled_back(db: Database) -> None:
    with pytest.raises(ValueError, match="failed after writing x"):
        db.call(put_then_fail, "x")
    assert db.call(get, "x") is None
    assert outside(db.path, "x") is None


def test_write_is_durable_when_run_returns(db: Database) -> None:
    async def main() -> None:
        for i in range(5):
            await db.run(put, f"k{i}", i)
            # Seen at once by a connection of its own: the transaction holding the write committed.
            assert outside(db.path, f"k{i}") == i

    asyncio.run(main())


def test_failing_request_in_a_batch_is_rolled_back_alone(db: Database) -> None:
    gate = Gate()

    async def main() -> Sequence[Any]:
        held = db.submit(gate.hold)
        await gate.wait_started()
        queued = [
            db.submit(put, "before", 1),
            db.submit(put_then_fail, "failed"),
            db.submit(put, "after", 2),
            db.submit(get, "failed"),  # the failed request's write is gone for the rest of the batch too
        ]
        gate.release()
        return await asyncio.wait_for(asyncio.gather(held, *queued, return_exceptions=True), WAIT)

    held, before, failed, after, seen = asyncio.run(main())
    assert (held, before, after, seen) == ("held", 1, 2, None)
    assert isinstance(failed, ValueError)
    assert str(failed) == "failed after writing failed"
    assert all_outside(db.path) == {"before": 1, "after": 2}


def test_requests_queued_meanwhile_share_one_transaction(db: Database) -> None:
    """While a batch runs, an earlier request's write is not visible outside yet (one transaction, not yet
    committed); every caller is answered only after the commit."""
    gate = Gate()

    async def main() -> Sequence[Any]:
        held = db.submit(gate.hold)
        await gate.wait_started()
        queued = [
            db.submit(put, "first", 1),
            db.submit(lambda conn: (get(conn, "first"), outside(db.path, "first"))),
        ]
        gate.release()
        results = await asyncio.wait_for(asyncio.gather(held, *queued), WAIT)
        assert outside(db.path, "first") == 1  # committed by the time the callers are answered
        return results

    assert asyncio.run(main()) == ["held", 1, (1, None)]


def test_requests_run_in_the_order_they_were_made(db: Database) -> None:
    gate = Gate()
    order: list[int] = []

    def record(conn: sqlite3.Connection, i: int) -> int:
        order.append(i)
        return i

    async def main() -> None:
        # Some queued while the thread is busy (one batch), some one by one.
        held = db.submit(gate.hold)
        await gate.wait_started()
        futures = [db.submit(record, i) for i in range(20)]
        gate.release()
        assert await asyncio.wait_for(asyncio.gather(held, *futures), WAIT) == ["held", *range(20)]
        for i in range(20, 30):
            assert await db.run(record, i) == i

    asyncio.run(main())
    assert order == list(range(30))


def test_write_behind_lands_before_a_later_awaited_read(db: Database) -> None:
    async def main() -> list[int | None]:
        seen = []
        for i in range(20):
            db.write_behind(put, f"w{i}", i)
            seen.append(await db.run(get, f"w{i}"))
        return seen

    assert asyncio.run(main()) == list(range(20))
    assert all_outside(db.path) == {f"w{i}": i for i in range(20)}


def test_many_concurrent_writers_each_land_exactly_once(db: Database) -> None:
    count = 300

    def bump(conn: sqlite3.Connection, i: int) -> int:
        put(conn, f"c{i}", i)
        conn.execute("INSERT INTO kv (k, v) VALUES ('counter', 1) ON CONFLICT(k) DO UPDATE SET v = v + 1")
        return i

    async def main() -> list[int]:
        return await asyncio.wait_for(asyncio.gather(*(db.run(bump, i) for i in range(count))), WAIT)

    assert asyncio.run(main()) == list(range(count))
    stored = all_outside(db.path)
    assert stored.pop("counter") == count
    assert stored == {f"c{i}": i for i in range(count)}


def test_run_after_close_raises(db: Database) -> None:
    async def main() -> None:
        assert await db.run(put, "a", 1) == 1
        await asyncio.to_thread(db.close)
        with pytest.raises(RuntimeError, match="database is closed"):
            await db.run(get, "a")
        with pytest.raises(RuntimeError, match="database is closed"):
            db.submit(get, "a")
        with pytest.raises(RuntimeError, match="database is closed"):
            db.write_behind(put, "b", 2)

    asyncio.run(main())
    with pytest.raises(RuntimeError, match="database is closed"):
        db.call(get, "a")
    assert all_outside(db.path) == {"a": 1}


def test_close_answers_requests_already_queued(db: Database) -> None:
    """Closing while requests wait behind a busy thread: they are all run and answered, and so is every request made
    while the close is under way (run, or refused with "database is closed"): nobody hangs."""
    gate = Gate()

    async def main() -> tuple[list[Any], list[Any]]:
        held = db.submit(gate.hold)
        await gate.wait_started()
        queued = [db.submit(put, f"q{i}", i) for i in range(10)]
        closing = asyncio.ensure_future(asyncio.to_thread(db.close))
        await asyncio.sleep(0.1)  # a quiet period, not a wait: the close must not finish while the thread is busy
        assert not closing.done()  # it waits for the busy thread
        late: list[asyncio.Future[Any]] = []
        gate.release()

        def refused() -> bool:  # one more request: refused yet?
            try:
                late.append(db.submit(put, f"late{len(late)}", -1))
            except RuntimeError as e:
                assert str(e) == "database is closed"
                return True
            assert len(late) < 10_000, "requests were still accepted long after the close"
            return False

        await until(refused, WAIT, interval=0.001, what="requests refused once the database closed")
        results = await asyncio.wait_for(asyncio.gather(held, *queued, return_exceptions=True), WAIT)
        late_results = await asyncio.wait_for(asyncio.gather(*late, return_exceptions=True), WAIT)
        await asyncio.wait_for(closing, WAIT)
        return results, late_results

    results, late_results = asyncio.run(main())
    assert results == ["held", *range(10)]
    for r in late_results:
        assert r == -1 or (isinstance(r, RuntimeError) and str(r) == "database is closed"), r
    stored = all_outside(db.path)
    assert {k: v for k, v in stored.items() if k.startswith("q")} == {f"q{i}": i for i in range(10)}
    assert sum(1 for k in stored if k.startswith("late")) == sum(1 for r in late_results if r == -1)


def test_failing_write_behind_is_logged_and_later_requests_work(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="saas.sqlite")

    async def main() -> tuple[int | None, int]:
        await db.run(put, "dup", 1)
        db.write_behind(put, "dup", 2)  # primary key taken: fails, nobody waits for it
        seen = await db.run(get, "dup")
        await until(logged, WAIT, interval=0, what="the failed write-behind logged")
        return seen, await db.run(put, "next", 3)

    def logged() -> bool:
        return any(r.name == "saas.sqlite" and r.levelno == logging.ERROR for r in caplog.records)

    assert asyncio.run(main()) == (1, 3)
    failures = [r for r in caplog.records if r.name == "saas.sqlite" and r.levelno == logging.ERROR]
    assert len(failures) == 1
    assert "a queued database write failed" in failures[0].getMessage()
    assert "IntegrityError" in failures[0].getMessage()
    assert all_outside(db.path) == {"dup": 1, "next": 3}


def test_one_database_serves_two_event_loops(db: Database) -> None:
    """Requests from two loops in two threads, some in one batch: each caller is answered on its own loop."""
    gate = Gate()
    b_queued = threading.Event()
    outcome: dict[str, Any] = {}

    def record_thread(conn: sqlite3.Connection, name: str, i: int) -> tuple[str, int]:
        put(conn, f"{name}{i}", i)
        return name, i

    async def side(name: str) -> None:
        loop = asyncio.get_running_loop()
        answered_on: list[tuple[asyncio.AbstractEventLoop | None, int]] = []

        def on_done(future: asyncio.Future[Any]) -> None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            answered_on.append((running, threading.get_ident()))

        futures: list[asyncio.Future[Any]] = []
        if name == "a":
            futures.append(db.submit(gate.hold))
            await gate.wait_started()
        futures += [db.submit(record_thread, name, i) for i in range(10)]
        for future in futures:
            future.add_done_callback(on_done)
        if name == "b":
            b_queued.set()
        else:
            assert await asyncio.to_thread(b_queued.wait, WAIT), "loop b never queued its requests"
            gate.release()
        results = await asyncio.wait_for(asyncio.gather(*futures), WAIT)
        for i in range(10, 20):  # and one at a time
            results.append(await asyncio.wait_for(db.run(record_thread, name, i), WAIT))
        outcome[name] = (results, answered_on, loop, threading.get_ident())

    def thread_main(name: str) -> None:
        try:
            asyncio.run(side(name))
        except BaseException as e:
            outcome[f"{name}-error"] = e

    # Loop b queues only once loop a holds the database thread, so both loops' requests meet in one batch.
    a = threading.Thread(target=thread_main, args=("a",))
    a.start()
    assert gate.started.wait(WAIT)
    b = threading.Thread(target=thread_main, args=("b",))
    b.start()
    a.join(WAIT * 3)
    b.join(WAIT * 3)
    assert not a.is_alive() and not b.is_alive()
    assert "a-error" not in outcome, outcome.get("a-error")
    assert "b-error" not in outcome, outcome.get("b-error")
    for name in ("a", "b"):
        results, answered_on, loop, ident = outcome[name]
        expected = [(name, i) for i in range(20)]
        assert [r for r in results if r != "held"] == expected
        assert answered_on and all(entry == (loop, ident) for entry in answered_on)
    stored = all_outside(db.path)
    assert stored == {f"{name}{i}": i for name in ("a", "b") for i in range(20)}


class Abort(BaseException):
    """Not an `Exception`: e.g. what a cancelled or interrupted piece of code raises."""


def put_then_abort(conn: sqlite3.Connection, k: str) -> None:
    conn.execute("INSERT INTO kv (k, v) VALUES (?, 0)", (k,))
    raise Abort(k)


def test_request_raising_a_base_exception_fails_alone_and_the_thread_serves_on(db: Database) -> None:
    async def main() -> None:
        with pytest.raises(Abort):
            await asyncio.wait_for(db.run(put_then_abort, "aborted"), WAIT)
        assert await asyncio.wait_for(db.run(put, "after", 1), WAIT) == 1

    asyncio.run(main())
    assert all_outside(db.path) == {"after": 1}
