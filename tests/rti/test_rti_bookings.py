"""Calendar bookings (issue 18, item 5): booking a package for whole hours against the node's capacity (409 on
conflict), levels that may book, the availability grid of a week with bookings (free / taken / yours), the earliest
booking in offers, cancelling; bookings signed by the node with the user's signed request (an altered record is not
trusted), unused bookings expiring, booked capacity kept for its owner in every pool (local, ssh, agents) and freed
at once when the booking is cancelled."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from rti_support import RTIEnv, adapter_repo

from saas.core.errors import AuthorisationError, ConflictError, InvalidInputError, NotFoundError, RemoteError
from saas.core.keystore import Keystore
from saas.core.schemas import SSHCredentials
from saas.rti.bookings import HOUR_MS
from saas.rti.offer_schemas import Booking, verify_booking


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


def slow_task(proc_id: str, user: Keystore, seconds: float = 0.2) -> dict[str, Any]:
    return {
        "proc_id": proc_id,
        "user_iid": user.identity.id,
        "input": [
            {"name": "a", "type": "value", "value": {"v": seconds}},
            {"name": "b", "type": "value", "value": {"v": 1}},
        ],
        "output": [{"name": "c", "owner_iid": user.identity.id}],
    }


def this_hour() -> int:
    now = int(time.time() * 1000)
    return now - now % HOUR_MS


def audited(env: RTIEnv, event: str) -> list[Any]:
    return list(env.node.call(env.node.node.audit.query(None, event=event)))


def state_of(env: RTIEnv, job_id: str, user: Keystore) -> str:
    with env.rti(user) as rti:
        return str(rti.get_job_status(job_id, user).state)


def test_cancelling_a_running_booking_dispatches_at_once(rti_env_factory: Any) -> None:
    """With the periodic look of the bookings made rare, the booking is still enforced from the moment it is made,
    and cancelling it starts the job it held back at once."""
    env: RTIEnv = rti_env_factory(job_cores=2, job_memory=2048, max_jobs=2)
    proc_id = env.deploy("slow")
    store = env.node.node.rti.bookings
    store.interval = 120.0  # only the booking and the cancel themselves tell the scheduler now
    try:
        time.sleep(1.2)  # the look already waiting (one second) is over
        with env.rti(env.alice) as rti:
            booking = rti.book("large", this_hour(), 1, env.alice)
        with env.rti(env.bob) as rti:
            bobs = rti.submit_task(slow_task(proc_id, env.bob), env.bob).id
        time.sleep(1.5)
        assert state_of(env, bobs, env.bob) == "pending"  # booked at once: not waiting for the next look
        with env.rti(env.alice) as rti:
            rti.unbook(booking.id, env.alice)
        deadline = time.monotonic() + 5
        while state_of(env, bobs, env.bob) == "pending":
            assert time.monotonic() < deadline, "the cancel did not start the job held back"
            time.sleep(0.05)
        assert env.wait(bobs, env.bob, timeout=60).state == "successful"
    finally:
        store.interval = 1.0
        env.node.loop.call_soon_threadsafe(store.wake)


def test_bookings_are_signed_and_altered_records_are_not_trusted(rti_env_factory: Any) -> None:
    env: RTIEnv = rti_env_factory(job_cores=4, job_memory=4096)
    node, alice, bob = env.owner.identity, env.alice, env.bob
    tomorrow = this_hour() + 24 * HOUR_MS
    with env.rti(alice) as rti:
        made = rti.book("large", tomorrow, 2, alice)
        kept = rti.get_booking(made.id, alice)
    # the user can check the node's record: signed by the node, holding the request the user signed
    assert kept == made and kept.request is not None and kept.request.iid == alice.identity.id
    assert kept.verify(node, alice.identity) and verify_booking(kept, node) is None
    assert verify_booking(kept, node, bob.identity) == "the booking's request was not made by its user to its node"
    longer = kept.model_copy(update={"end": kept.end + HOUR_MS})
    assert verify_booking(longer, node, alice.identity) == "the booking is not signed by its node"
    forged = Booking.model_validate({**kept.model_dump(), "package": "tiny"})
    forged = forged.model_copy(update={"signature": env.owner.sign(forged.signed_content())})  # re-signed, not asked
    assert verify_booking(forged, node, alice.identity) == "the booking is not what its request asked for"
    # somebody changes the stored row behind the node's back: it is not trusted, and audited
    database = env.node.node.config.datastore / "rti" / "jobs.sqlite"
    with sqlite3.connect(database) as conn:
        conn.execute("UPDATE bookings SET cores = 1, memory = 16 WHERE id = ?", (made.id,))
    with env.rti(alice) as rti:
        with pytest.raises(NotFoundError):
            rti.get_booking(made.id, alice)
        assert rti.get_bookings(alice) == []
        grid = rti.get_availability(start=tomorrow, hours=2, packages=["large"])
        assert grid.grid == {"large": ["free", "free"]}  # an altered record takes no capacity
    assert [e.details.get("booking_id") for e in audited(env, "booking.altered")] == [made.id]


def test_an_unused_booking_expires(rti_env_factory: Any) -> None:
    """grace 3 s: bob's booking with no job expires (capacity freed, audited); alice's, used by a job, stays."""
    env: RTIEnv = rti_env_factory(job_cores=4, job_memory=4096, booking_grace=3.0)
    proc_id = env.deploy("slow")
    with env.rti(env.alice) as rti:
        alices = rti.book("medium", this_hour(), 1, env.alice)
        job = rti.submit_task(slow_task(proc_id, env.alice), env.alice).id
    with env.rti(env.bob) as rti:
        bobs = rti.book("medium", this_hour(), 1, env.bob)
        with pytest.raises(ConflictError):
            rti.book("tiny", this_hour(), 1, env.bob)  # the node is fully booked this hour
    assert env.wait(job, env.alice, timeout=60).state == "successful"
    deadline = time.monotonic() + 20
    while True:
        with env.rti(env.bob) as rti:
            if rti.get_booking(bobs.id, env.bob).state == "expired":
                break
        assert time.monotonic() < deadline, "the unused booking did not expire"
        time.sleep(0.2)
    with env.rti(env.bob) as rti:
        assert rti.get_booking(bobs.id, env.bob).verify(env.owner.identity, env.bob.identity)  # re-signed
        rti.book("tiny", this_hour(), 1, env.bob)  # its capacity is free again
    with env.rti(env.alice) as rti:
        assert rti.get_booking(alices.id, env.alice).state == "booked"
    (entry,) = audited(env, "booking.expired")
    assert entry.owner == env.bob.identity.id and entry.details["booking_id"] == bobs.id


def test_booked_slots_of_an_ssh_backend(rti_env_factory: Any, sshd: Any, tmp_path: Path) -> None:
    """The ssh/slurm pool keeps a booking's share too: alice books the whole node, bob's ssh job waits."""
    env: RTIEnv = rti_env_factory(job_cores=2, job_memory=2048, max_remote_jobs=2)
    home = tmp_path / "remote-home"
    home.mkdir()
    ssh = SSHCredentials(
        host=sshd.host, login=sshd.login, key=sshd.key.read_text(), key_path=str(sshd.key), home_path=str(home)
    )
    proc_id = env.deploy("slow", deploy_args={"ssh_credentials": ssh})
    with env.rti(env.alice) as rti:
        booking = rti.book("large", this_hour(), 1, env.alice)
    with env.rti(env.bob) as rti:
        bobs = rti.submit_task(slow_task(proc_id, env.bob), env.bob).id
    with env.rti(env.alice) as rti:
        alices = [rti.submit_task(slow_task(proc_id, env.alice), env.alice).id for _ in range(2)]
    for job in alices:
        assert env.wait(job, env.alice, timeout=90).state == "successful"
    assert state_of(env, bobs, env.bob) == "pending"
    with env.rti(env.alice) as rti:
        rti.unbook(booking.id, env.alice)
    assert env.wait(bobs, env.bob, timeout=90).state == "successful"


def test_booked_capacity_of_an_agent(rti_env_factory: Any, tmp_path: Path) -> None:
    """An agent's instances follow bookings too: while alice has the whole node booked, bob's agent job waits."""
    env: RTIEnv = rti_env_factory(job_cores=2, job_memory=2048)
    repo, commit = adapter_repo(tmp_path / "repos" / "agent", "abc-agent")
    proc_id = env.deploy("abc-agent", repo=repo, commit=commit)
    with env.rti(env.alice) as rti:
        booking = rti.book("large", this_hour(), 1, env.alice)
    with env.rti(env.bob) as rti:
        bobs = rti.submit_task(slow_task(proc_id, env.bob, 1), env.bob).id
    with env.rti(env.alice) as rti:
        alices = [rti.submit_task(slow_task(proc_id, env.alice, 1), env.alice).id for _ in range(3)]
    for job in alices:
        assert env.wait(job, env.alice, timeout=60).state == "successful"
    assert state_of(env, bobs, env.bob) == "pending"
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
