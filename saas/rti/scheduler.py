"""Queues and slots of the RTI (DESIGN §12): pure code, no I/O. The service asks it which job starts next.

- `FairQueue`: items queued per user, taken round robin between users and in arrival order within a user, so one
  user's 2,000 jobs never wait ahead of another user's one (the agents' admission uses it too).
- `SlotPool`: a fixed number of slots (`max_jobs` locally, `max_remote_jobs` on ssh/slurm backends) and the jobs
  waiting for them. A free slot goes to the waiting user with the fewest running jobs and, between equals, to the
  one served least recently (round robin), never to a user already at `per_user` running jobs (the node owner is
  exempt). A user with nothing waiting or running is forgotten.
- `Scheduler`: both pools and the pending bound: a user may have at most `max_pending` jobs waiting to start
  (`admit` raises `TooManyJobsError`, a 429, with the count and the bound; the node owner is exempt). `reserve`
  turns the users' booked shares of the node (`saas.rti.bookings`) into reserved slots of both pools.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from saas.core.errors import LimitReachedError, RTIError

__all__ = ["FairQueue", "Scheduler", "SlotPool", "TooManyJobsError"]

T = TypeVar("T")


class TooManyJobsError(RTIError, LimitReachedError):
    pass


class FairQueue(Generic[T]):
    """Items per user; `pop` serves the users in turn (a user who was served goes to the back of the line)."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[T]] = {}  # insertion order is the turn order
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def count(self, user: str) -> int:
        queue = self._queues.get(user)
        return len(queue) if queue is not None else 0

    def users(self) -> list[str]:
        """The users with queued items, whose turn comes first first."""
        return list(self._queues)

    def push(self, user: str, item: T) -> None:
        self._queues.setdefault(user, deque()).append(item)
        self._size += 1

    def remove(self, user: str, item: T) -> bool:
        queue = self._queues.get(user)
        if queue is None or item not in queue:
            return False
        queue.remove(item)
        self._size -= 1
        if not queue:
            del self._queues[user]
        return True

    def pop(self, user: str | None = None) -> T | None:
        """The first item of `user` (default: of the user whose turn it is); that user's turn moves to the back."""
        if user is None:
            user = next(iter(self._queues), None)
            if user is None:
                return None
        queue = self._queues.pop(user, None)
        if queue is None:
            return None
        item = queue.popleft()
        self._size -= 1
        if queue:
            self._queues[user] = queue  # re-inserted: now last in turn
        return item


class SlotPool:
    """`limit` slots; the jobs waiting for one (fair between users) and the jobs holding one."""

    def __init__(self, limit: int, per_user: int | None = None, exempt: Callable[[str], bool] = lambda _: False):
        self.limit = limit
        self.per_user = per_user
        self.exempt = exempt
        self.queue: FairQueue[str] = FairQueue()
        self._waiting: dict[str, str] = {}  # job_id -> user
        self._running: dict[str, str] = {}  # job_id -> user
        self._running_of: dict[str, int] = {}
        self._served: dict[str, int] = {}  # user -> when (a tick) a job of theirs last took a slot
        self._tick = 0
        # Slots booked by users now (saas.rti.bookings): their jobs take them ahead of the queue, nobody else's do
        self.reserved: dict[str, int] = {}

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._running

    def running_of(self, user: str) -> int:
        return self._running_of.get(user, 0)

    @property
    def running(self) -> int:
        """Jobs holding a slot."""
        return len(self._running)

    def add(self, user: str, job_id: str) -> None:
        """The job waits for a slot (behind the user's earlier jobs)."""
        self.queue.push(user, job_id)
        self._waiting[job_id] = user

    def remove(self, job_id: str) -> bool:
        """The job no longer waits (e.g. cancelled)."""
        user = self._waiting.pop(job_id, None)
        if user is None or not self.queue.remove(user, job_id):
            return False
        self._forget(user)
        return True

    def next(self) -> str | None:
        """The job that takes a free slot now (it then holds it until `release`), or None: no free slot, nothing
        waiting, or only users at their bound waiting."""
        if len(self._running) >= self.limit:
            return None
        unused = {user: n - self.running_of(user) for user, n in self.reserved.items() if n > self.running_of(user)}
        candidates = [user for user in self.queue.users() if user in unused]  # booked: ahead of the queue
        if not candidates:
            if len(self._running) + sum(unused.values()) >= self.limit:
                return None  # the free slots are booked by others
            candidates = [
                user
                for user in self.queue.users()
                if self.per_user is None or self.running_of(user) < self.per_user or self.exempt(user)
            ]
        if not candidates:
            return None
        chosen = min(candidates, key=lambda user: (self.running_of(user), self._served.get(user, 0)))
        job_id = self.queue.pop(chosen)
        assert job_id is not None
        del self._waiting[job_id]
        self.hold(chosen, job_id)
        return job_id

    def hold(self, user: str, job_id: str) -> None:
        """The job holds a slot without having waited for it (a job resumed or re-attached after a restart)."""
        if job_id not in self._running:
            self._running[job_id] = user
            self._running_of[user] = self.running_of(user) + 1
            self._tick += 1
            self._served[user] = self._tick

    def release(self, job_id: str) -> bool:
        """The job gives its slot back; returns whether it held one."""
        user = self._running.pop(job_id, None)
        if user is None:
            return False
        self._running_of[user] -= 1
        if not self._running_of[user]:
            del self._running_of[user]
        self._forget(user)
        return True

    def _forget(self, user: str) -> None:
        if not self.running_of(user) and not self.queue.count(user):
            self._served.pop(user, None)


class Scheduler:
    """The local and the remote pool, and the jobs of each user that have not started yet (pending)."""

    def __init__(
        self,
        max_jobs: int,
        max_remote_jobs: int,
        max_pending: int | None = None,
        max_running: int | None = None,
        exempt: Callable[[str], bool] = lambda _: False,
    ):
        self.max_pending = max_pending
        self.exempt = exempt
        self.local = SlotPool(max_jobs, max_running, exempt)
        self.remote = SlotPool(max_remote_jobs, max_running, exempt)
        self._pending: dict[str, str] = {}  # job_id -> user
        self._pending_of: dict[str, int] = {}

    def pending_of(self, user: str) -> int:
        return self._pending_of.get(user, 0)

    def admit(self, user: str) -> None:
        """Raises `TooManyJobsError` if `user` may not submit another job now."""
        if self.max_pending is None or self.exempt(user):
            return
        pending = self.pending_of(user)
        if pending >= self.max_pending:
            raise TooManyJobsError(
                f"You have {pending} pending jobs on this node, the most it accepts per user "
                f"({self.max_pending}): submit more once some have started",
                {"pending": pending, "max_pending_per_user": self.max_pending},
            )

    def pending(self, user: str, job_id: str) -> None:
        """The job waits to start (submitted, or queued again after a restart)."""
        if job_id not in self._pending:
            self._pending[job_id] = user
            self._pending_of[user] = self.pending_of(user) + 1

    def not_pending(self, job_id: str) -> None:
        """The job started or ended (idempotent)."""
        user = self._pending.pop(job_id, None)
        if user is not None:
            self._pending_of[user] -= 1
            if not self._pending_of[user]:
                del self._pending_of[user]

    def reserve(self, shares: dict[str, float]) -> None:
        """The users' booked shares of the node (0 to 1) reserved in each pool: the same share of its slots, at
        least one slot per user with a booking running (`SlotPool.reserved`)."""
        for pool in (self.local, self.remote):
            pool.reserved = {
                user: min(pool.limit, max(1, math.ceil(share * pool.limit)))
                for user, share in shares.items()
                if share > 0
            }

    def release(self, job_id: str) -> bool:
        """The job's slot (in either pool) is free again; returns whether it held one."""
        return self.local.release(job_id) or self.remote.release(job_id)

    def remove(self, job_id: str) -> None:
        """The job no longer waits for a slot."""
        self.local.remove(job_id) or self.remote.remove(job_id)
