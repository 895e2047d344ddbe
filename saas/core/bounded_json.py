"""Bounds on the JSON values users store (tag values, processor descriptors, by-value job inputs, recipes): nesting
depth and encoded size, checked when a value comes in, so no stored value can later break a listing (pydantic
refuses to serialise a value nested deeper than it recurses: one 300-deep tag made every search answer 500).

`Annotated[Any, json_bounds(max_size)]` is pydantic's `Any` with the check (a request body that breaks it is a 422
with the reason); `check_json` is the check itself. The depth walk is iterative, so a value nested 100,000 deep
costs no recursion."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from pydantic import AfterValidator

__all__ = ["MAX_JSON_DEPTH", "check_json", "json_bounds", "json_depth"]

MAX_JSON_DEPTH = 32  # levels of nested arrays / objects in one stored value


def json_depth(value: Any, limit: int) -> int:
    """How deep arrays and objects nest in `value` (a scalar is 0, `[1]` is 1), counted up to `limit + 1`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if depth > limit:  # also ends a walk around a cycle (possible in Python values, not in JSON)
            break
        stack.extend((child, depth) for child in children)
    return deepest


def check_json(value: Any, max_size: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`value` if it nests at most `max_depth` deep and its compact UTF-8 JSON has at most `max_size` bytes; else
    `ValueError` with the reason."""
    if json_depth(value, max_depth) > max_depth:
        raise ValueError(f"is nested more than {max_depth} levels deep")
    try:
        size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    except (TypeError, ValueError):
        raise ValueError("is not a JSON value") from None
    if size > max_size:
        raise ValueError(f"is larger than {max_size} bytes as JSON ({size} bytes)")
    return value


def json_bounds(max_size: int, max_depth: int = MAX_JSON_DEPTH) -> AfterValidator:
    """The pydantic validator of a field annotated `Annotated[kind, json_bounds(...)]`: its value is at most
    `max_size` bytes as JSON and nests at most `max_depth` levels (a static type checker sees plain `kind`)."""
    return AfterValidator(partial(check_json, max_size=max_size, max_depth=max_depth))
