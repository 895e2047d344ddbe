"""The few parts of Python 3.11's standard library the code uses, for Python 3.10 (supported: 3.10 to 3.13).

- `timeout`: `asyncio.timeout` (3.11), else the `async-timeout` package it was taken from.
- `StrEnum`: `enum.StrEnum` (3.11), else an Enum of strings whose `str()` is the value.
- `BaseExceptionGroup`: the builtin (3.11), else the `exceptiongroup` backport (a dependency of anyio and trio).
- On 3.10, `asyncio.TimeoutError` and `concurrent.futures.TimeoutError` become the builtin `TimeoutError`, as
  3.11 made them, so `except TimeoutError` catches what `asyncio.wait_for` and `timeout` raise on every version.
  Both are looked up when raised, so this holds from the moment `saas` is imported (`saas/__init__.py`).
"""

from __future__ import annotations

import sys

__all__ = ["BaseExceptionGroup", "StrEnum", "timeout"]

if sys.version_info >= (3, 11):
    import builtins
    from enum import StrEnum
    from typing import Any

    BaseExceptionGroup = builtins.BaseExceptionGroup

    def __getattr__(name: str) -> Any:
        """`timeout` on first use: importing `saas` (e.g. by the CLI, before it opens a keystore) loads no asyncio."""
        if name == "timeout":
            from asyncio import timeout

            return timeout
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
else:  # pragma: no cover - exercised by the Python 3.10 run of CI
    import asyncio
    import asyncio.exceptions
    import concurrent.futures
    import concurrent.futures._base
    import enum

    from async_timeout import timeout
    from exceptiongroup import BaseExceptionGroup

    class StrEnum(str, enum.Enum):
        """`enum.StrEnum` of Python 3.11: members are strings, `str(member)` is the value."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)

    asyncio.TimeoutError = asyncio.exceptions.TimeoutError = TimeoutError  # type: ignore[misc, assignment]
    concurrent.futures.TimeoutError = concurrent.futures._base.TimeoutError = TimeoutError  # type: ignore[misc, assignment]
