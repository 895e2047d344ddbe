"""`LogRing`: the node's last log lines in memory (a ring buffer) and the last error it logged.

Attached to the `saas` logger while the node runs, it keeps what the node logs at its configured level: the last
`capacity` lines for the node owner's diagnostics (`saas.ops.diagnostics`), and the last ERROR record for the
network's health (`saas.ops.health`). Nodes running in one process (tests, embedding applications) share the
`saas` logger, so each ring then sees the lines of all of them."""

from __future__ import annotations

import collections
import logging
import threading

__all__ = ["DEFAULT_CAPACITY", "LastError", "LogRing"]

DEFAULT_CAPACITY = 500  # lines kept
MESSAGE_LIMIT = 300  # characters of the last error's message shown in the health document


class LastError(dict[str, object]):
    """{time (ms), logger, message}: the last ERROR line (its message cut to `MESSAGE_LIMIT` characters)."""


class LogRing(logging.Handler):
    def __init__(self, capacity: int = DEFAULT_CAPACITY, logger_name: str = "saas"):
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._lines: collections.deque[str] = collections.deque(maxlen=capacity)
        self._last_error: LastError | None = None
        self._guard = threading.Lock()  # records come from the loop, worker threads and the P2P thread
        self._logger_name = logger_name
        self._attached = False

    def attach(self) -> None:
        if not self._attached:
            logging.getLogger(self._logger_name).addHandler(self)
            self._attached = True

    def detach(self) -> None:
        if self._attached:
            logging.getLogger(self._logger_name).removeHandler(self)
            self._attached = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line, message = self.format(record), record.getMessage()
        except Exception:  # a record whose arguments do not format: keep what can be kept
            line, message = f"{record.levelname} {record.name}: {record.msg!r}", str(record.msg)
        with self._guard:
            self._lines.append(line)
            if record.levelno >= logging.ERROR:
                self._last_error = LastError(
                    time=int(record.created * 1000), logger=record.name, message=message[:MESSAGE_LIMIT]
                )

    def lines(self, limit: int | None = None) -> list[str]:
        """The kept lines, oldest first (the last `limit` of them)."""
        with self._guard:
            kept = list(self._lines)
        return kept if limit is None else kept[-limit:]

    @property
    def last_error(self) -> LastError | None:
        with self._guard:
            return None if self._last_error is None else LastError(self._last_error)
