"""One call running in a daemon thread while the caller goes on (e.g. the CLI deriving a keystore key or hashing an
upload while it imports the SDK). Daemon: Ctrl-C ends the command at once. The call should import nothing (the
caller imports meanwhile): the modules it uses are loaded before it starts."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Background"]

T = TypeVar("T")


class Background(Generic[T]):
    """`call()` running in a daemon thread from construction on."""

    def __init__(self, call: Callable[[], T], name: str):
        self._value: T | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        threading.Thread(target=self._run, args=(call,), name=name, daemon=True).start()

    def _run(self, call: Callable[[], T]) -> None:
        try:
            self._value = call()
        except BaseException as e:  # raised in the caller's thread by `result()`
            self._error = e
        finally:
            self._done.set()

    def done(self) -> bool:
        """Whether the call has ended (a value or an error is ready)."""
        return self._done.is_set()

    def result(self) -> T:
        """The call's value (waits for it); raises its error, each time."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set when no error was raised
