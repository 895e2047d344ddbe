"""Calendar bookings (issue 18, item 5, first part): booking a package for whole hours against the node's capacity
(409 on conflict), levels that may book, the availability grid of a week with bookings (free / taken / yours), the
earliest booking in offers, and cancelling."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rti_support import RTIEnv

from saas.core.errors import AuthorisationError, ConflictError, InvalidInputError, NotFoundError, RemoteError
from saas.rti.bookings import HOUR_MS


def test_bookings_and_availability(rti_env_factory: Any) -> None:
    # capacity: 4 cores, 4096 MiB; default packages: tiny 1c/512, small 1c/1024, medium 2c/2048, large 4c/4096
    env: RTIEnv = rti_env_factory(job_cores=4, job_memory=4096, default_level="basic")
    alice, bob, owner = env.alice, env.bob, env.owner
    now = int(time.time() * 1000)
    day = 24 * HOUR_MS
    monday = now - now % day + day  # tomorrow, 00:00 UTC
    with env.rti(alice) as rti, pytest.raises(AuthorisationError, match=r"\(basic\) does not allow booking"):
        rti.book("small", monday, 24, alice)
    with env.rti(owner) as rti:
        rti.set_level(alice.identity.id, "extended", owner)
        rti.set_level(bob.identity.id, "extended", owner)
    with env.rti(alice) as rti:
        medium = rti.book("medium", monday + 2 * day, 48, alice)  # Wed-Thu
        assert (medium.end - medium.start, medium.cores) == (48 * HOUR_MS, 2)
        with pytest.raises(InvalidInputError, match="on the hour"):
            rti.book("tiny", monday + 1, 1, alice)
        with pytest.raises(InvalidInputError, match="no package 'huge'"):
            rti.book("huge", monday, 1, alice)
    with env.rti(bob) as rti:
        rti.book("small", monday + 3 * day, 24, bob)  # Thu: 2 + 1 cores of 4 taken
        with pytest.raises(ConflictError) as caught:
            rti.book("medium", monday + 3 * day + 5 * HOUR_MS, 2, bob)  # 2 + 1 + 2 > 4 cores
        assert isinstance(caught.value, RemoteError) and caught.value.status == 409
        assert "is not free at" in caught.value.reason and "05:00 UTC" in caught.value.reason
        rti.book("tiny", monday + 3 * day, 24, bob)  # still fits: 4 cores, 3584 MiB
        with pytest.raises(NotFoundError):
            rti.unbook(medium.id, bob)  # not bob's
    # the week's grid, as alice sees it
    with env.rti(alice) as rti:
        week = rti.get_availability(start=monday, days=7, authority=alice)
        assert week.grid["tiny"] == ["free", "free", "free", "taken", "free", "free", "free"]
        assert week.grid["medium"] == ["free", "free", "yours", "yours", "free", "free", "free"]
        assert week.grid["large"] == ["free", "free", "taken", "taken", "free", "free", "free"]
        hourly = rti.get_availability(start=monday + 3 * day, hours=3, packages=["small"])
        assert hourly.slot_hours == 1 and hourly.grid == {"small": ["taken", "taken", "taken"]}
        offer = rti.get_offer({"proc_id": "e" * 64}, alice)
        assert offer.booking is not None and offer.booking.id == medium.id
        assert [b.id for b in rti.get_bookings(alice)] == [medium.id]
        assert rti.unbook(medium.id, alice).id == medium.id
        week = rti.get_availability(start=monday, days=7, authority=alice)
        assert week.grid["medium"][2:4] == ["free", "free"] and week.grid["large"][3] == "taken"


def test_booked_capacity_is_kept_for_its_owner(rti_env_factory: Any) -> None:
    """large is the whole node (2 cores, 2 slots): while alice's booking runs, bob's job waits even with both slots
    free; alice's jobs run ahead of it; once she cancels, bob's job runs."""
    env: RTIEnv = rti_env_factory(job_cores=2, job_memory=2048, max_jobs=2)
    proc_id = env.deploy("slow")
    now = int(time.time() * 1000)
    with env.rti(env.alice) as rti:
        booking = rti.book("large", now - now % HOUR_MS, 1, env.alice)
    time.sleep(1.5)  # the scheduler notices the booking within a second

    def submit(user: Any) -> str:
        task = {
            "proc_id": proc_id,
            "user_iid": user.identity.id,
            "input": [
                {"name": "a", "type": "value", "value": {"v": 0.2}},
                {"name": "b", "type": "value", "value": {"v": 1}},
            ],
            "output": [{"name": "c", "owner_iid": user.identity.id}],
        }
        with env.rti(user) as rti:
            return rti.submit_task(task, user).id

    bobs = submit(env.bob)
    alices = [submit(env.alice) for _ in range(2)]
    for job in alices:
        assert env.wait(job, env.alice, timeout=60).state == "successful"
    with env.rti(env.bob) as rti:
        assert rti.get_job_status(bobs, env.bob).state == "pending"  # nobody else takes booked capacity
    with env.rti(env.alice) as rti:
        rti.unbook(booking.id, env.alice)
    assert env.wait(bobs, env.bob, timeout=60).state == "successful"


def test_reserved_slots_in_the_pool() -> None:
    from saas.rti.scheduler import SlotPool

    pool = SlotPool(3, per_user=1)
    pool.reserved = {"alice": 2}
    for job in ("b1", "b2"):
        pool.add("bob", job)
    pool.add("carol", "c1")
    assert pool.next() == "b1"  # one slot is not booked
    assert pool.next() is None  # the other two are alice's
    for job in ("a1", "a2", "a3"):
        pool.add("alice", job)
    assert [pool.next(), pool.next(), pool.next()] == ["a1", "a2", None]  # ahead of carol, beyond per_user
    pool.release("a1")
    assert pool.next() == "a3"  # still her booked slot
    pool.reserved = {}
    pool.release("a2")
    assert pool.next() == "c1"
