"""Everything the CLI prints: tables, plain lines, JSON documents, and error lines.

Results go to stdout (as JSON with `--json`); messages meant for a person while `--json` is on go to stderr so
stdout stays machine-readable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["Output", "Progress", "format_table"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain table: a header row, a row of dashes, then the rows; columns two spaces apart."""
    cells = [[str(h) for h in headers], ["-" * len(str(h)) for h in headers]]
    cells += [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


class Output:
    """Writes results in the form the user asked for."""

    def __init__(self, as_json: bool = False):
        self.as_json = as_json

    def line(self, text: str = "") -> None:
        """Human text: stdout normally, stderr under --json."""
        print(text, file=sys.stderr if self.as_json else sys.stdout, flush=True)

    def warning(self, text: str) -> None:
        """A warning for a person: always stderr, so results on stdout stay clean."""
        print(f"Warning: {text}", file=sys.stderr, flush=True)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not self.as_json:
            print(format_table(headers, rows), flush=True)

    def result(self, document: Any, text: str | None = None) -> None:
        """The command's result: `document` under --json, else `text` (if any)."""
        if self.as_json:
            print(json.dumps(document, indent=2, default=str), flush=True)
        elif text is not None:
            print(text, flush=True)

    def error(self, reason: str, envelope: dict[str, Any] | None = None) -> None:
        print(f"Error: {reason}", file=sys.stderr, flush=True)
        if self.as_json and envelope is not None:
            print(json.dumps({"error": envelope}, indent=2, default=str), flush=True)


class Progress:
    """A one-line progress bar on stderr for transfers over a few MB (only on a terminal, never under --json)."""

    MIN_BYTES = 4 * 1024 * 1024

    def __init__(self, label: str, enabled: bool):
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < self.MIN_BYTES:
            return
        percent = int(done * 100 / total) if total else 100
        if percent == self._last:
            return
        self._last = percent
        bar = "#" * (percent // 4) + "." * (25 - percent // 4)
        sys.stderr.write(f"\r{self.label} [{bar}] {percent:3d}% {done / 2**20:,.1f}/{total / 2**20:,.1f} MiB")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
