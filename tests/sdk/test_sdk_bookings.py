"""Calendar bookings through the high-level SDK (`saas.sdk.bookings`) on two real nodes: book with a `datetime` or
UTC milliseconds (rounded as `saas-cli rti book` rounds), list, the availability grid shows the booking as yours
(and as taken to others), a conflict raises `ConflictError` (409), a booking on another node of the network by its
identity ID, and cancelling frees the capacity."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

import pytest

from saas.core.errors import ConflictError, InvalidInputError, NotFoundError, RemoteError
from saas.core.keystore import Keystore
from saas.rti.booking_time import DAY_MS, HOUR_MS
from saas.sdk.base import connect
from tests.conftest import RunningNode
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


def test_book_list_availability_conflict_unbook(
    node_factory: Callable[..., RunningNode], keystores: Callable[[str], Keystore]
) -> None:
    # capacity 4 cores, 4096 MiB: default packages tiny 1c/512, small 1c/1024, medium 2c/2048, large 4c/4096
    first = node_factory("node", job_cores=4, job_memory=4096)
    second = node_factory(
        "second", job_cores=2, job_memory=2048, boot_node="{}:{}".format(*first.node.config.p2p_address)
    )
    wait_until(lambda: len(first.node.nodedb.network()) >= 2, 15, what="the nodes to know each other")
    alice, bob = connect(first.address, keystores("alice")), connect(first.address, keystores("bob"))
    wait_until(lambda: second.node.nodedb.get_identity(bob.keystore.iid) is not None, 15, what="bob on the second")
    assert {p.name for p in alice.get_packages()} >= {"small", "medium", "large"}

    now = int(time.time() * 1000)
    tomorrow = now - now % DAY_MS + DAY_MS  # 00:00 UTC
    wednesday = datetime.datetime.fromtimestamp((tomorrow + 2 * DAY_MS) / 1000, datetime.timezone.utc)
    # a datetime during the day books from the start of that UTC day, as `rti book --from DATE --days 2`
    medium = alice.book("medium", wednesday.replace(hour=13, minute=37, tzinfo=None), days=2)
    assert (medium.start, medium.end, medium.cores) == (tomorrow + 2 * DAY_MS, tomorrow + 4 * DAY_MS, 2)
    assert medium.verify(alice.rti().identity, alice.keystore.identity)
    assert [b.id for b in alice.get_bookings()] == [medium.id]
    assert alice.get_booking(medium.id) == medium
    assert bob.get_bookings() == []

    week = alice.get_availability(start=tomorrow, days=7)
    assert week.grid["medium"] == ["free", "free", "yours", "yours", "free", "free", "free"]
    assert week.grid["large"] == ["free", "free", "taken", "taken", "free", "free", "free"]  # 2 + 4 > 4 cores
    theirs = bob.get_availability(packages=["medium", "large"], start=wednesday.date(), days=2)
    assert theirs.grid == {"medium": ["free", "free"], "large": ["taken", "taken"]}  # 2 + 2 cores fit; not bob's

    # milliseconds (and a time zone) with hours: from the start of that hour, as `rti book --from ... --hours`
    at_seven_cest = datetime.datetime.fromtimestamp(
        (tomorrow + 2 * DAY_MS + 7 * HOUR_MS + 30 * 60_000) / 1000, datetime.timezone(datetime.timedelta(hours=2))
    )
    with pytest.raises(ConflictError) as caught:  # 2 + 4 cores > 4
        bob.book("large", at_seven_cest, hours=2)
    assert isinstance(caught.value, RemoteError) and caught.value.status == 409
    assert "is not free at" in caught.value.reason
    small = bob.book("small", tomorrow + 2 * DAY_MS + 5 * HOUR_MS + 59 * 60_000, hours=2)
    assert (small.start, small.end - small.start) == (tomorrow + 2 * DAY_MS + 5 * HOUR_MS, 2 * HOUR_MS)
    hourly = alice.get_availability(packages=["small", "large"], start=tomorrow + 2 * DAY_MS + 4 * HOUR_MS, hours=3)
    assert hourly.slot_hours == 1 and hourly.grid == {"small": ["free", "free", "free"], "large": ["taken"] * 3}
    with pytest.raises(NotFoundError):
        bob.unbook(medium.id)  # not bob's

    # another node of the network, by identity ID: its own calendar
    largest = max(alice.get_packages(node=second.node.iid), key=lambda p: p.cores)
    elsewhere = alice.book(largest.name, tomorrow, days=1, node=second.node.iid)
    assert elsewhere.node_iid == second.node.iid
    assert [b.id for b in alice.get_bookings(node=alice.rti(second.node.iid))] == [elsewhere.id]
    assert [b.id for b in alice.get_bookings()] == [medium.id]
    with pytest.raises(ConflictError):
        bob.book(largest.name, tomorrow + 3 * HOUR_MS, hours=1, node=second.node.iid)

    assert alice.unbook(medium.id).id == medium.id
    week = alice.get_availability(start=tomorrow, days=7)
    assert week.grid["medium"][2:4] == ["free", "free"] and week.grid["large"][2] == "taken"  # bob's small
    assert alice.get_bookings() == []


def test_book_needs_days_or_hours(node: RunningNode, keystores: Callable[[str], Keystore]) -> None:
    context = connect(node.address, keystores("alice"))
    tomorrow = datetime.date.today() + datetime.timedelta(days=1)
    with pytest.raises(InvalidInputError, match="days or hours"):
        context.book("small", tomorrow)
    with pytest.raises(InvalidInputError, match="days or hours"):
        context.book("small", tomorrow, days=1, hours=2)
    with pytest.raises(NotFoundError, match="No node nope with a RTI"):
        context.get_bookings(node="nope")
