"""The RTI's queues and slots (`saas.rti.scheduler`, pure code): round robin between users, the fewest running
first, per-user bounds with the node owner exempt, and the pending bound (429)."""

from __future__ import annotations

import pytest

from saas.core.errors import LimitReachedError
from saas.rti.scheduler import FairQueue, Scheduler, SlotPool, TooManyJobsError


def test_fair_queue_serves_users_in_turn_and_each_in_order() -> None:
    queue: FairQueue[str] = FairQueue()
    for n in range(2000):
        queue.push("a", f"a{n}")
    queue.push("b", "b0")
    queue.push("b", "b1")
    queue.push("c", "c0")
    taken = [queue.pop() for _ in range(7)]
    assert taken == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]
    assert len(queue) == 2000 - 4
    assert queue.count("a") == 2000 - 4 and queue.count("b") == 0


def test_fair_queue_remove_and_empty() -> None:
    queue: FairQueue[str] = FairQueue()
    assert queue.pop() is None
    queue.push("a", "x")
    queue.push("a", "y")
    assert queue.remove("a", "x") and not queue.remove("a", "x") and not queue.remove("b", "y")
    assert queue.pop() == "y"
    assert len(queue) == 0 and queue.users() == [] and queue.pop() is None


def test_free_slot_goes_to_the_user_with_fewest_running() -> None:
    pool = SlotPool(limit=4)
    for n in range(10):
        pool.add("a", f"a{n}")
    started = [pool.next() for _ in range(4)]
    assert started == ["a0", "a1", "a2", "a3"]  # alone: a user takes every slot (nothing is left idle)
    assert pool.next() is None  # full
    pool.add("b", "b0")
    pool.add("b", "b1")
    assert pool.release("a0") and not pool.release("a0")
    assert pool.next() == "b0"  # b's first job waits for one slot only, not for a's queue
    assert pool.release("a1")
    assert pool.next() == "b1"  # b has 1 running, a has 2: b again
    assert pool.release("a2")
    assert pool.next() == "a4"  # b has nothing left waiting: the slot is not left idle
    assert pool.running_of("a") == 2 and pool.running_of("b") == 2


def test_between_equals_the_least_recently_served_goes_first() -> None:
    pool = SlotPool(limit=1)
    pool.add("a", "a0")
    assert pool.next() == "a0"
    for n in range(1, 5):
        pool.add("a", f"a{n}")
    pool.add("b", "b0")
    pool.add("c", "c0")
    order: list[str] = []
    for _ in range(6):
        pool.release(order[-1] if order else "a0")
        served = pool.next()
        assert served is not None
        order.append(served)
    assert order == ["b0", "c0", "a1", "a2", "a3", "a4"]  # b and c were never served: before a's second job


def test_per_user_bound_and_the_exempt_owner() -> None:
    pool = SlotPool(limit=4, per_user=1, exempt=lambda user: user == "owner")
    for n in range(3):
        pool.add("a", f"a{n}")
        pool.add("owner", f"o{n}")
    started = {pool.next() for _ in range(4)}
    assert started == {"a0", "o0", "o1", "o2"}  # a at its bound; the owner is not bound
    assert pool.next() is None
    pool.release("o0")
    assert pool.next() is None  # free slot, but a is at its bound and the owner has nothing waiting
    pool.release("a0")
    assert pool.next() == "a1"


def test_remove_a_waiting_job_and_hold_without_waiting() -> None:
    pool = SlotPool(limit=1)
    pool.add("a", "a0")
    assert pool.remove("a0") and not pool.remove("a0")
    assert pool.next() is None
    pool.hold("a", "resumed")  # a job resumed after a restart holds a slot without waiting
    pool.add("a", "a1")
    assert pool.next() is None
    assert "resumed" in pool and pool.release("resumed")
    assert pool.next() == "a1"


def test_pending_bound_is_per_user_with_the_owner_exempt() -> None:
    scheduler = Scheduler(1, 1, max_pending=2, exempt=lambda user: user == "owner")
    for n in range(2):
        scheduler.admit("a")
        scheduler.pending("a", f"a{n}")
    with pytest.raises(TooManyJobsError) as caught:
        scheduler.admit("a")
    assert isinstance(caught.value, LimitReachedError)
    assert caught.value.details == {"pending": 2, "max_pending_per_user": 2}
    assert "2 pending jobs" in caught.value.reason
    scheduler.admit("b")  # other users are not affected
    for n in range(5):
        scheduler.admit("owner")
        scheduler.pending("owner", f"o{n}")
    scheduler.not_pending("a0")
    scheduler.not_pending("a0")  # idempotent
    scheduler.admit("a")
    assert scheduler.pending_of("a") == 1


def test_local_and_remote_pools_are_separate() -> None:
    scheduler = Scheduler(max_jobs=1, max_remote_jobs=2)
    scheduler.local.add("a", "l0")
    scheduler.remote.add("a", "r0")
    scheduler.remote.add("a", "r1")
    assert scheduler.local.next() == "l0"
    assert [scheduler.remote.next(), scheduler.remote.next()] == ["r0", "r1"]
    assert "r1" in scheduler.remote and "r1" not in scheduler.local
    assert scheduler.release("r1") and "r1" not in scheduler.remote


def test_booked_shares_reserve_slots_in_both_pools() -> None:
    """A booking's share of the node becomes the same share of the local and of the ssh/slurm slots (at least one)."""
    scheduler = Scheduler(max_jobs=4, max_remote_jobs=10)
    scheduler.reserve({"alice": 0.5, "bob": 0.01, "carol": 0.0})
    assert scheduler.local.reserved == {"alice": 2, "bob": 1}
    assert scheduler.remote.reserved == {"alice": 5, "bob": 1}
    for n in range(8):
        scheduler.remote.add("dave", f"d{n}")
    started = [scheduler.remote.next() for _ in range(5)]
    assert started == ["d0", "d1", "d2", "d3", None]  # 6 of 10 remote slots are booked by others
    scheduler.reserve({})
    assert scheduler.remote.next() == "d4" and scheduler.local.reserved == {}
