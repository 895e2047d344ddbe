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
