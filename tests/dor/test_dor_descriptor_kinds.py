"""Descriptor fields of the two adapter kinds (processor, agent): kept as extras so a processor's GPP hashes as
before, read through properties with defaults, and checked wherever a descriptor is parsed (add-gpp and every
later load, e.g. at deploy)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from saas.dor.gpp import GPPError, validate_descriptor
from saas.dor.schemas import ProcessorDescriptor

BASE: dict[str, Any] = {"name": "x", "input": [], "output": [], "configurations": ["default"]}


def test_defaults_and_agent_fields() -> None:
    processor = validate_descriptor(BASE)
    assert (processor.kind, processor.instances, processor.job_timeout, processor.startup_timeout) == (
        "processor",
        1,
        None,
        None,
    )
    assert processor.model_dump() == BASE  # nothing added: the GPP's canonical JSON (and obj_id) is unchanged
    agent = validate_descriptor({**BASE, "kind": "agent", "instances": 64, "job_timeout": 2.5, "startup_timeout": 9})
    assert (agent.kind, agent.instances, agent.job_timeout, agent.startup_timeout) == ("agent", 64, 2.5, 9.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "service"}, "kind must be 'processor' or 'agent'"),
        ({"kind": "agent", "instances": 0}, "instances must be an integer from 1 to 64"),
        ({"kind": "agent", "instances": 2.0}, "instances must be an integer from 1 to 64"),
        ({"kind": "agent", "job_timeout": 0}, "job_timeout must be a number of seconds above 0"),
        ({"kind": "agent", "startup_timeout": True}, "startup_timeout must be a number of seconds above 0"),
        ({"startup_timeout": 5}, 'startup_timeout: only for agents ("kind": "agent")'),
    ],
)
def test_invalid_agent_fields_fail_wherever_parsed(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ProcessorDescriptor.model_validate({**BASE, **change})  # e.g. a stored GPP loaded at deploy
    with pytest.raises(GPPError):
        validate_descriptor({**BASE, **change})  # add-gpp (400)
