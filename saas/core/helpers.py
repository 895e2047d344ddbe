"""Small helpers: atomic writes, JSON files, addresses, sizes in words, and a worker-thread call that ends before a
cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "human_size",
    "in_thread_to_the_end",
    "marked_processes",
    "parse_address",
    "read_json_from_file",
    "write_file_atomic",
    "write_json_to_file",
]

T = TypeVar("T")


def write_file_atomic(path: str | Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` so that readers see either the old file or the complete new one, never a part.

    The temp file is created with `mode` before any byte is written, fsynced, renamed over the target,
    and the directory is fsynced so the rename survives a crash."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json_to_file(content: Any, path: str | Path, indent: int = 2) -> None:
    """Write JSON atomically (mode 0644)."""
    write_file_atomic(path, json.dumps(content, indent=indent).encode("utf-8"), mode=0o644)


def read_json_from_file(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def parse_address(address: str | tuple[str, int] | list[Any]) -> tuple[str, int]:
    """`"host:port"`, `("host", port)` or `["host", port]` as `(host, port)`; IPv6 hosts as `[::1]:port`."""
    from saas.core.errors import InvalidInputError

    if isinstance(address, (tuple, list)) and len(address) == 2:
        host, port = str(address[0]), address[1]
    elif isinstance(address, str):
        host, sep, port = address.strip().rpartition(":")
        if not sep:
            raise InvalidInputError(f"Invalid address '{address}': expected host:port", {"address": address})
        host = host.strip("[]")
    else:
        raise InvalidInputError(f"Invalid address {address!r}: expected host:port", {"address": str(address)})
    try:
        port_number = int(port)
    except (TypeError, ValueError):
        raise InvalidInputError(f"Invalid port in address '{address}'", {"address": str(address)}) from None
    if not host or not 0 < port_number < 65536:
        raise InvalidInputError(f"Invalid address '{address}': expected host:port", {"address": str(address)})
    return host, port_number


def human_size(size: int) -> str:
    """`1536` -> `1.5 KiB`."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


async def in_thread_to_the_end(fn: Callable[..., T], *args: Any) -> T:
    """`asyncio.to_thread(fn, *args)`, except that a caller cancelled meanwhile waits for `fn` to end before the
    cancellation goes on: whatever `fn` did (e.g. content put in place) is done by then, so the caller's cleanup
    sees it and can undo it."""
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        raise


def marked_processes(marker: str) -> list[tuple[int, int]]:
    """(pid, process group) of every process of this machine whose environment holds the entry `marker`
    (`NAME=value`): how a restarted node finds what a crashed one started. Linux (/proc) only; elsewhere []. Blocks."""
    needle = marker.encode()
    found = []
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return []
    for entry in entries:
        try:
            if needle not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                continue
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            found.append((int(entry), int(stat[stat.rindex(b")") + 2 :].split()[2])))  # after "(comm)": state ppid pgrp
        except (OSError, ValueError, IndexError):
            continue
    return found
