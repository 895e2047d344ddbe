"""Reading the trigger lines adapters print on stdout (`trigger:progress:<0-100>`, `trigger:output:<name>`,
`trigger:message:<severity>:<text>`; `saas.sdk.adapter` writes them).

Standard library only, so the SDK (which follows a job's log) and the RTI (which acts on the triggers) share one
parser without the SDK importing the runner. Callers may rely on `parse_trigger` never raising: a malformed trigger
is an ordinary line.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["NAME", "TRIGGER", "parse_trigger"]

NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
"""An input or output name (the pattern of `IOName` in the task schema)."""
TRIGGER = re.compile(r"^trigger:(progress|output|message):(.*)$")


def parse_trigger(line: str) -> tuple[str, Any] | None:
    """('progress', int) | ('output', name) | ('message', (severity, text)) | None for an ordinary line."""
    match = TRIGGER.match(line.rstrip("\r\n"))
    if match is None:
        return None
    kind, value = match.groups()
    if kind == "progress":
        try:
            return "progress", max(0, min(100, int(float(value))))
        except (ValueError, OverflowError):  # not a number, NaN or infinite: an ordinary line
            return None
    if kind == "output":
        return ("output", value) if NAME.match(value) else None
    severity, _, text = value.partition(":")
    return "message", (severity or "info", text)
