"""Making room in a full NodeDB: which identity records may go.

An identity record is public and self-signed, so one that goes can be published again (the CLI and the SDK publish
an identity before they act with it). When NodeDB is full and someone publishes a new identity to this node, the new
record takes the place of the one stored longest ago that nothing here needs:
- not this node's own identity, nor a known node's;
- not active here recently (a signed request verified within `ACTIVE_KEEP_S`, remembered in memory);
- not referred to by a service of this node (`Anchors`: objects it owns or may read, jobs, an account level, a
  booking).

Without this, whoever fills NodeDB first (many identities published from many addresses, or pushed by a rogue peer)
would lock every new user out of the node for good. Records that arrive from peers never evict (they are skipped
when NodeDB is full, as before), so two nodes cannot push each other's records out in turn."""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable, Container, Iterable, Mapping

__all__ = ["ACTIVE_KEEP_S", "SCAN", "Anchors", "candidates"]

ACTIVE_KEEP_S = 24 * 3600.0  # an identity that made a verified request within this many seconds stays
SCAN = 256  # identities asked about at most to make room once (the oldest first)

# Which of these identity IDs something on this node refers to (a service's own records, read off the event loop).
Anchors = Callable[[list[str]], Awaitable[set[str]]]


def candidates(
    stored: Iterable[str],
    pinned: Container[str],
    active_at: Mapping[str, float],
    now: float,
    limit: int = SCAN,
) -> list[str]:
    """Up to `limit` identity IDs that may go, in the order of `stored` (stored longest ago first): not `pinned` and
    not active (a monotonic time in `active_at`) within `ACTIVE_KEEP_S` of `now`."""
    keep_after = now - ACTIVE_KEEP_S
    eligible = (iid for iid in stored if iid not in pinned and active_at.get(iid, -math.inf) < keep_after)
    return list(itertools.islice(eligible, limit))
