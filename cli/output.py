"""Everything the CLI prints: tables, plain lines, JSON documents, and error lines.

Results go to stdout (as JSON with `--json`); messages meant for a person while `--json` is on go to stderr so
stdout stays machine-readable.

Terminal safety: much of what is printed came from the network (tag values, names, descriptions, job messages,
server errors, adapter logs). Every human text goes through `clean`, which removes terminal escape sequences and
control characters (C0 but newline and tab in multi-line text, DEL, C1), so another user's data cannot retitle,
clear or rewrite the terminal. `--json` documents are printed exactly (json.dumps escapes control characters).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

__all__ = ["Output", "Progress", "clean", "format_table"]

# ESC or 8-bit C1 introducers with what follows them: OSC/DCS/APC/PM/SOS strings up to their terminator, CSI
# sequences with their parameters, and any other two-character escape.
_ESCAPE = re.compile(
    r"(?:\x1b[\]P_^X]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|\x1b[ -~]?"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LINE_BREAK = re.compile(r"[\n\t]")


def clean(text: object, multiline: bool = True) -> str:
    """`text` safe for a terminal: no escape sequences, no control characters (newline and tab are kept in
    `multiline` text, else each becomes a space)."""
    value = _ESCAPE.sub("", str(text))
    if not multiline:
        value = _LINE_BREAK.sub(" ", value)
    return _CONTROL.sub("", value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain table: a header row, a row of dashes, then the rows; columns two spaces apart."""
    cells = [[clean(h, False) for h in headers], ["-" * len(clean(h, False)) for h in headers]]
    cells += [["" if v is None else clean(v, False) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


class Output:
    """Writes results in the form the user asked for."""

    def __init__(self, as_json: bool = False, verbose: bool = False):
        self.as_json = as_json
        self.verbose = verbose

    def line(self, text: str = "") -> None:
        """Human text: stdout normally, stderr under --json."""
        print(clean(text), file=sys.stderr if self.as_json else sys.stdout, flush=True)

    def stream(self, text: str) -> None:
        """A line of a stream (e.g. a followed log) on stdout: cleaned for a person, exact under --json."""
        print(text if self.as_json else clean(text), flush=True)

    def warning(self, text: str) -> None:
        """A warning for a person: always stderr, so results on stdout stay clean."""
        print(f"Warning: {clean(text)}", file=sys.stderr, flush=True)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        if not self.as_json:
            print(format_table(headers, rows), flush=True)

    def result(self, document: Any, text: str | None = None) -> None:
        """The command's result: `document` under --json, else `text` (if any)."""
        if self.as_json:
            print(json.dumps(document, indent=2, default=str), flush=True)
        elif text is not None:
            print(clean(text), flush=True)

    def created(self, label: str, ident: str, summary: Sequence[str], document: Any, record: str | None = None) -> None:
        """What a command that creates something prints: `<label>: <id>` on the first line, then a short summary,
        then (with -v) the full `record`; under --json only `document`."""
        if self.as_json:
            self.result(document)
            return
        lines = [f"{label}: {ident}", *summary]
        if self.verbose and record is not None:
            lines.append(record)
        print(clean("\n".join(lines)), flush=True)

    def error(self, reason: str, envelope: dict[str, Any] | None = None) -> None:
        """One line on stderr (cleaned: a reason can come from a server); under --json also the exact envelope."""
        print(f"Error: {clean(reason, False)}", file=sys.stderr, flush=True)
        if self.as_json and envelope is not None:
            print(json.dumps({"error": envelope}, indent=2, default=str), flush=True)


class Progress:
    """A one-line progress bar on `stream` (stderr) for transfers over a few MB, only on a terminal, never under
    --json. It is called as bytes move (after each buffer), so a call costs one clock reading: the bar is redrawn
    at most every `INTERVAL` seconds (and once more at the end), whatever the speed."""

    MIN_BYTES = 4 * 1024 * 1024
    INTERVAL = 0.1  # seconds between redraws: at most 10 a second

    def __init__(
        self, label: str, enabled: bool, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.label = label
        self._stream = sys.stderr if stream is None else stream
        self.enabled = enabled and self._stream.isatty()
        self._clock = clock
        self._next = float("-inf")  # the first call draws
        self._ended = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < self.MIN_BYTES or self._ended:
            return
        now = self._clock()
        if done < total and now < self._next:
            return
        self._next = now + self.INTERVAL
        self._ended = done >= total
        percent = min(int(done * 100 / total), 100)
        bar = "#" * (percent // 4) + "." * (25 - percent // 4)
        line = f"\r{self.label} [{bar}] {percent:3d}% {done / 2**20:,.1f}/{total / 2**20:,.1f} MiB"
        self._stream.write(line + ("\n" if self._ended else ""))
        self._stream.flush()
