"""The one rule for a task's inputs: every descriptor input exactly once, each by-value input valid against its
`data_schema`.

The RTI applies it at submission, the SDK before it submits, `saas-cli adapter test` (`rti/local.py`) to its
`--input` items and the CLI's job builder to each value typed in, so all of them accept the same tasks and say the
same thing. Callers may rely on the reasons: each names the input and the problem. Pure (no I/O, no asyncio) and
importable by the SDK: it imports only schemas; `jsonschema` is imported when a value is checked.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from saas.core.errors import InvalidInputError
from saas.dor.schemas import ProcessorDescriptor
from saas.rti.schemas import Task

__all__ = ["BY_REFERENCE", "check_names", "check_task", "check_value", "schema_error", "task_pairs"]

BY_REFERENCE: Any = object()
"""The value of an input given by reference: its content is checked where it is fetched, not here."""


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    import jsonschema

    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_error(value: Any, schema: dict[str, Any]) -> str | None:
    """What is wrong with `value` under a JSON schema (the message `jsonschema.validate` would raise), or None.
    The checked validator is cached per schema: checking a schema costs far more than validating a small value."""
    from jsonschema.exceptions import best_match

    error = best_match(_validator(json.dumps(schema, sort_keys=True)).iter_errors(value))
    return None if error is None else str(error.message)


def check_names(descriptor: ProcessorDescriptor, names: Sequence[str], hint: str = "") -> None:
    """Every input of `descriptor` named exactly once in `names` (in the order given: the first unknown or repeated
    name is reported, then the missing ones). `hint` is added to the missing-inputs reason (how to give them)."""
    specs = [s.name for s in descriptor.input]
    for name in names:
        if name not in specs:
            raise InvalidInputError(
                f"Input '{name}' is not an input of {descriptor.name} "
                f"(Unknown input; inputs: {', '.join(specs) or 'none'})"
            )
        if names.count(name) > 1:
            raise InvalidInputError(f"Input '{name}' is given more than once")
    missing = [n for n in specs if n not in names]
    if missing:
        raise InvalidInputError(f"Missing input(s): {', '.join(missing)}" + (f" ({hint})" if hint else ""))


def check_value(descriptor: ProcessorDescriptor, name: str, value: Any) -> None:
    """A by-value input `name` matches its `data_schema` (if it has one); `BY_REFERENCE` always passes."""
    schema = next((s.data_schema for s in descriptor.input if s.name == name), None)
    if schema is None or value is BY_REFERENCE:
        return
    problem = schema_error(value, schema)
    if problem is not None:
        raise InvalidInputError(f"Input '{name}' does not match its data_schema: {problem}")


def check_task(descriptor: ProcessorDescriptor, inputs: Iterable[tuple[str, Any]], hint: str = "") -> None:
    """`inputs` as (name, value) pairs, `BY_REFERENCE` for an input given by reference: every input exactly once
    (`check_names`), then each value against its schema (`check_value`). Raises `InvalidInputError`."""
    pairs = list(inputs)
    check_names(descriptor, [name for name, _ in pairs], hint)
    for name, value in pairs:
        check_value(descriptor, name, value)


def task_pairs(inputs: Iterable[Task.InputReference | Task.InputValue]) -> list[tuple[str, Any]]:
    """A task's inputs as the (name, value) pairs `check_task` takes."""
    return [(i.name, i.value if isinstance(i, Task.InputValue) else BY_REFERENCE) for i in inputs]
