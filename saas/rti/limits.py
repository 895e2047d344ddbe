"""What an adapter process may use: a job's, agent instance's or install's resources, merged from the descriptor, the
deployment and the task, and bounded by the node's limits.

Pure apart from `half_the_memory` (which reads the machine's memory once per call): no I/O, no asyncio. Callers may
rely on `parse_resources` raising `InvalidInputError` (400) with the first problem for bad values, and on
`limits_for` never granting more than the node allows (what is not asked gets the node's default)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from saas.core.errors import InvalidInputError
from saas.rti.cgroups import Limits
from saas.rti.schemas import Resources

if TYPE_CHECKING:
    from saas.config import NodeConfig

__all__ = ["half_the_memory", "limits_for", "parse_resources", "resources"]

_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def resources(extra: dict[str, Any] | None, task: Any, spec: dict[str, Any]) -> dict[str, Any]:
    """A job's resources: the descriptor's, then the deployment's partition, then the task's (the task wins)."""
    declared = (extra or {}).get("resources")
    merged: dict[str, Any] = dict(declared) if isinstance(declared, dict) else {}
    if spec.get("partition"):
        merged["partition"] = spec["partition"]
    if task is not None:
        merged.update(task.model_dump(exclude_none=True))
    return merged


def parse_resources(asked: dict[str, Any]) -> Limits:
    """A descriptor's or task's `resources` as limits (raises `InvalidInputError` for bad values)."""
    from pydantic import ValidationError

    try:
        parsed = Resources.model_validate(asked)
    except ValidationError as e:
        raise InvalidInputError(f"Invalid resources: {e.errors()[0]['msg']}", {"resources": asked}) from None
    memory = None
    if parsed.memory is not None:
        number, unit = (parsed.memory[:-1], parsed.memory[-1]) if parsed.memory[-1] in _UNITS else (parsed.memory, "M")
        memory = int(number) * _UNITS[unit]
    walltime = parsed.walltime_seconds()
    return Limits(memory=memory, cores=parsed.cores, walltime=float(walltime) if walltime else None)


def half_the_memory() -> int:
    """Half of this machine's memory, in MiB (the default limit of a job)."""
    try:
        return max(64, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**21)
    except (ValueError, OSError):
        return 4096


def limits_for(config: NodeConfig, asked: dict[str, Any] | None = None, walltime: bool = True) -> Limits:
    """What a job (or agent instance, or install) may use: what its descriptor or task asks (`asked`, see
    `resources`), within the node's limits (each the default when nothing is asked). Without `walltime`: no
    walltime (agent instances and installs have their own timeouts)."""
    node_memory = (config.job_memory or half_the_memory()) * 2**20
    parsed = parse_resources(asked or {})
    memory = min(parsed.memory or node_memory, node_memory)
    cores = min(parsed.cores, config.job_cores or parsed.cores) if parsed.cores else config.job_cores
    wall = min(parsed.walltime or config.job_walltime, config.job_walltime) if walltime else None
    return Limits(memory=memory, pids=config.job_pids, cores=cores, walltime=wall)
