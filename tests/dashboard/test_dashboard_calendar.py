"""The dashboard's availability calendar in a real headless browser (issues 18 and 20): an anonymous visitor sees the
grid free / taken; signed in, a user sees their level, books a package from a free slot of the grid, sees it as
"yours" (by day and by hour), is refused a booking that does not fit with the node's reason (409), and cancels;
a user whose level does not allow booking sees the packages it allows and no booking form.
Screenshots go to the test's temp folder."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_dashboard_browser import browsers, click, env, login_url, page, text_of, wait_for  # noqa: F401

from tests.rti.rti_support import RTIEnv
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
DAY_MS = 24 * 3600 * 1000


def slot(package: str, start: int) -> str:
    return f"#calendar-grid td.slot[data-package='{package}'][data-start='{start}']"


def state(driver: Any, package: str, start: int, expected: str, timeout: float = 20) -> None:
    """Wait until the grid shows `expected` for the package's slot starting at `start`."""
    from selenium.common.exceptions import StaleElementReferenceException

    css = slot(package, start)
    seen: list[str] = []

    def shown() -> bool:
        nonlocal seen
        try:
            seen = [e.get_attribute("class") or "" for e in driver.find_elements("css selector", css)]
        except StaleElementReferenceException:
            seen = []
        return bool(seen) and expected in seen[0].split()

    wait_until(shown, timeout, interval=0.1, what=f"{expected!r} shown", detail=lambda: f"{css}: {seen}")


def test_calendar_book_see_yours_conflict_and_cancel(
    env: RTIEnv,  # noqa: F811
    browsers: Callable[[str], Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    shots = tmp_path / "screenshots"
    shots.mkdir()
    now = int(time.time() * 1000)
    today = now - now % DAY_MS
    tomorrow, later = today + DAY_MS, today + 2 * DAY_MS
    with env.rti(env.bob) as rti:  # bob's booking: the node's whole capacity is his the day after tomorrow
        rti.book("large", later, 24, env.bob)

    # anonymous: free and taken, no level, no form
    anonymous = browsers("anonymous")
    anonymous.get(env.node.url + "/#calendar")
    wait_for(anonymous, "main[data-page='calendar']")
    wait_for(anonymous, "#calendar-level", "Sign in")
    state(anonymous, "large", tomorrow, "free")
    state(anonymous, "large", later, "taken")
    assert not anonymous.find_elements(By.CSS_SELECTOR, "#book-form, #my-bookings table, td.slot.yours")
    anonymous.save_screenshot(str(shots / "calendar-anonymous.png"))

    # alice signs in: her level, then books large for tomorrow by picking its free slot
    alice = browsers("alice")
    alice.get(login_url(env, env.alice, tmp_path))
    wait_for(alice, "#who-name", "alice")
    page(alice, "#calendar", "calendar")
    assert text_of(alice, "#level-name") == "extended"
    wait_for(alice, "#bookings-none")
    click(alice, slot("large", tomorrow))
    click(alice, "#book")
    wait_for(alice, "#book-status", "Booked large")
    state(alice, "large", tomorrow, "yours")
    state(alice, "tiny", tomorrow, "taken")  # large takes every core
    state(alice, "large", later, "taken")  # bob's
    wait_for(alice, "#bookings-table", "large")
    alice.save_screenshot(str(shots / "calendar-booked.png"))
    with env.rti(env.alice) as rti:
        [booking] = rti.get_bookings(env.alice)
        assert (booking.package, booking.start, booking.end) == ("large", tomorrow, tomorrow + DAY_MS)

    # medium for the same day does not fit: refused with the node's reason
    Select(alice.find_element(By.CSS_SELECTOR, "#book-form select[name=package]")).select_by_value("medium")
    click(alice, "#book")
    wait_for(alice, "#book-status .error", "Package 'medium' is not free at")
    assert text_of(alice, "#book-status").startswith("Not free:")
    alice.save_screenshot(str(shots / "calendar-conflict.png"))
    with env.rti(env.alice) as rti:
        assert len(rti.get_bookings(env.alice)) == 1

    # the hours of tomorrow: all 24 are hers
    click(alice, f"button.day-hours[data-day='{time.strftime('%Y-%m-%d', time.gmtime(tomorrow / 1000))}']")
    state(alice, "large", tomorrow + 23 * 3600 * 1000, "yours")
    assert len(alice.find_elements(By.CSS_SELECTOR, "#calendar-grid td.slot.yours")) == 24
    alice.save_screenshot(str(shots / "calendar-hours.png"))
    click(alice, "#calendar-days")

    # the anonymous visitor, reloaded, sees it taken (not whose)
    anonymous.refresh()
    state(anonymous, "large", tomorrow, "taken")

    # cancel: gone from the list and the grid
    click(alice, f"button.cancel-booking[data-booking='{booking.id}']")
    wait_for(alice, "#bookings-none")
    wait_for(alice, "#calendar-status", "Cancelled the booking of large")
    state(alice, "large", tomorrow, "free")
    alice.save_screenshot(str(shots / "calendar-cancelled.png"))
    with env.rti(env.alice) as rti:
        assert rti.get_bookings(env.alice) == []
    # bob, whose level the node owner sets to basic: his packages, and no booking form
    with env.rti(env.owner) as rti:
        rti.set_level(env.bob.iid, "basic", env.owner)
    bob = browsers("bob")
    bob.get(login_url(env, env.bob, tmp_path))
    wait_for(bob, "#who-name", "bob")
    page(bob, "#calendar", "calendar")
    level = text_of(bob, "#calendar-level")
    assert "basic" in level and "tiny, small —" in level and "does not allow booking" in level
    wait_for(bob, "#bookings-table", "large")  # his booking, made before
    assert not bob.find_elements(By.CSS_SELECTOR, "#book-form, td.slot.pickable")
    bob.save_screenshot(str(shots / "calendar-basic.png"))
    for name in ("anonymous", "booked", "conflict", "hours", "cancelled", "basic"):
        assert (shots / f"calendar-{name}.png").stat().st_size > 1000
