"""The trigger messages a job keeps (`trigger:message:<severity>:<text>`), bounded so a chatty or hostile adapter
cannot grow its status (issue 14, item 7): a message longer than `max_length` characters is cut with a marker
saying how long it was; a job keeps its first and its last messages (`max_count` in all, `max_bytes` of them at
most) and counts the ones dropped in between, shown as one marker entry where they were. Pure code."""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["MessageLog"]

MAX_SEVERITY = 32  # characters of a severity
ENTRY_OVERHEAD = 64  # bytes an entry costs besides its text (keys, time) in the stored status


def _size(entry: dict[str, Any]) -> int:
    return len(entry["message"].encode("utf-8", "replace")) + len(entry["severity"]) + ENTRY_OVERHEAD


class MessageLog:
    def __init__(self, max_length: int = 1000, max_count: int = 100, max_bytes: int = 64 * 1024):
        self.max_length, self.max_count, self.max_bytes = max_length, max_count, max_bytes
        self._head: list[dict[str, Any]] = []  # the first messages (up to half the count and half the bytes)
        self._tail: deque[dict[str, Any]] = deque()  # the last ones, within what the head leaves
        self._head_bytes = self._tail_bytes = 0
        self.dropped = 0  # messages between the head and the tail that were not kept

    def __len__(self) -> int:
        return len(self._head) + len(self._tail)

    def add(self, severity: str, text: str, time: int) -> None:
        if len(text) > self.max_length:
            text = f"{text[: self.max_length]}... [truncated: {len(text)} characters]"
        self._keep({"severity": severity[:MAX_SEVERITY], "message": text, "time": time})

    def _keep(self, entry: dict[str, Any]) -> None:
        size = _size(entry)
        if not self._tail and len(self._head) < self.max_count // 2 and self._head_bytes + size <= self.max_bytes // 2:
            self._head.append(entry)
            self._head_bytes += size
            return
        self._tail.append(entry)
        self._tail_bytes += size
        while self._tail and (len(self) > self.max_count or self._head_bytes + self._tail_bytes > self.max_bytes):
            self._tail_bytes -= _size(self._tail.popleft())
            self.dropped += 1

    def entries(self) -> list[dict[str, Any]]:
        """The kept messages in order; where some were dropped, one entry `{severity: "info", message, time,
        dropped: <count>}` says how many."""
        if not self.dropped:
            return [*self._head, *self._tail]
        when = self._tail[0]["time"] if self._tail else (self._head[-1]["time"] if self._head else 0)
        marker = {
            "severity": "info",
            "message": f"[{self.dropped} messages not kept: a job keeps its first and last {self.max_count // 2}]",
            "time": when,
            "dropped": self.dropped,
        }
        return [*self._head, marker, *self._tail]

    @classmethod
    def restore(cls, entries: list[dict[str, Any]], **limits: int) -> MessageLog:
        """The log as `entries()` left it (a job found after a restart)."""
        log = cls(**limits)
        dropped = 0
        for entry in entries:
            if "dropped" in entry:
                dropped += int(entry["dropped"])
            else:
                log._keep({"severity": str(entry["severity"]), "message": str(entry["message"]), "time": entry["time"]})
        log.dropped += dropped
        return log
