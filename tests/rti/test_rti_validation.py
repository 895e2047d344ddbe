"""`check_task`, the one input rule the RTI, the SDK, `adapter test` and the CLI apply: every input exactly once,
by-value inputs valid against their data_schema."""

from __future__ import annotations

from typing import Any

import pytest

from saas.core.errors import InvalidInputError
from saas.dor.schemas import ProcessorDescriptor
from saas.rti.schemas import Task
from saas.rti.validation import BY_REFERENCE, check_names, check_task, schema_error, task_pairs

SCHEMA = {"type": "object", "properties": {"v": {"type": "number"}}, "required": ["v"]}
DESCRIPTOR = ProcessorDescriptor.model_validate(
    {
        "name": "proc",
        "input": [
            {"name": "a", "data_type": "T", "data_format": "json"},
            {"name": "b", "data_type": "T", "data_format": "json", "data_schema": SCHEMA},
        ],
        "output": [],
        "configurations": ["default"],
    }
)
REF = BY_REFERENCE

# (name, value) pairs given -> the reason raised (a substring), or None when the task is accepted
CASES: dict[str, tuple[list[tuple[str, Any]], str | None]] = {
    "both by value": ([("a", 1), ("b", {"v": 2})], None),
    "reference and value": ([("a", REF), ("b", {"v": 2})], None),
    "any order": ([("b", {"v": 2}), ("a", REF)], None),
    "b by reference skips its schema": ([("a", 1), ("b", REF)], None),
    "missing one": ([("b", {"v": 2})], "Missing input(s): a"),
    "missing all": ([], "Missing input(s): a, b"),
    "unknown": (
        [("a", 1), ("b", {"v": 2}), ("z", 1)],
        "Input 'z' is not an input of proc (Unknown input; inputs: a, b)",
    ),
    "unknown before missing": ([("z", 1)], "Input 'z' is not an input of proc"),
    "twice": ([("a", 1), ("a", 2), ("b", {"v": 2})], "Input 'a' is given more than once"),
    "twice before missing": ([("a", 1), ("a", 1)], "more than once"),
    "wrong type": ([("a", 1), ("b", {"v": "two"})], "Input 'b' does not match its data_schema: 'two' is not of type"),
    "required": ([("a", 1), ("b", {"w": 1})], "'v' is a required property"),
    "names before schema": ([("b", {"v": "two"})], "Missing input(s): a"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_task(case: str) -> None:
    pairs, reason = CASES[case]
    if reason is None:
        check_task(DESCRIPTOR, pairs)
        return
    with pytest.raises(InvalidInputError) as e:
        check_task(DESCRIPTOR, pairs)
    assert reason in e.value.reason


def test_hint_is_added_to_missing_only() -> None:
    with pytest.raises(InvalidInputError, match=r"Missing input\(s\): b \(use --input\)$"):
        check_names(DESCRIPTOR, ["a"], hint="use --input")
    with pytest.raises(InvalidInputError) as e:
        check_names(DESCRIPTOR, ["a", "b", "c"], hint="use --input")
    assert "use --input" not in e.value.reason


def test_task_pairs() -> None:
    inputs: list[Task.InputReference | Task.InputValue] = [
        Task.InputReference(name="a", obj_id="0" * 64),
        Task.InputValue(name="b", value={"v": 1}),
    ]
    assert task_pairs(inputs) == [("a", BY_REFERENCE), ("b", {"v": 1})]


@pytest.mark.parametrize(
    ("value", "problem"),
    [({"v": 1}, None), ({"v": "x"}, "'x' is not of type 'number'"), ([], "[] is not of type 'object'")],
)
def test_schema_error(value: Any, problem: str | None) -> None:
    assert schema_error(value, SCHEMA) == problem
