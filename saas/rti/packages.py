"""Resource packages (issue 18): named sizes of what a job may use on this node (cores, memory, disk, walltime, gpus).

A node has its packages from `--packages FILE` (JSON: a list of packages, or an object name -> package) or, by
default, four scaled to the machine: `large` is the node's ceiling for one job (`job_cores` or every core,
`job_memory` or half the memory, `job_walltime`), `medium` half of it, `small` a quarter, `tiny` one core and an
eighth of the memory.

What callers may rely on:
- `evaluate(...)` decides which package a job gets and says every reason why it gets none. A job that names a package
  gets that one, if its level allows it and it covers what the job and its descriptor ask. A job that names none gets
  the smallest allowed package covering what it asks, or, asking nothing, the largest its level allows.
- `fill(resources, package)` completes a job's resources with the package's values (what the job asked itself stays,
  it is within the package): the job's limits (cgroup, rlimits, walltime; sbatch flags on SLURM) follow from them.
- `disk`: the job folder is measured when the adapter ends; a job whose folder holds more fails with the reason
  (`check_disk`). `gpus`: a job or package asking more GPUs than the node has (`job_gpus`, default none) is refused
  with the reason, at submission and in offers (not `sized`: a remote host's GPUs are its business); a package's
  GPUs go to SLURM as `--gpus`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from saas.core.errors import AuthorisationError, ConfigError, InvalidInputError
from saas.rti.schemas import Package, Resources

if TYPE_CHECKING:
    from saas.config import NodeConfig

__all__ = ["Package", "Refusal", "default_packages", "evaluate", "fill", "for_node", "grant", "load_packages"]


@dataclass(frozen=True)
class Refusal:
    """Why a job gets no package: `kind` is "invalid" (400: the node cannot) or "level" (403: not for this user)."""

    kind: str
    reason: str


def _memory_mib() -> int:
    try:
        return max(64, os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    except (ValueError, OSError):
        return 8192


def default_packages(config: NodeConfig) -> dict[str, Package]:
    """tiny, small, medium and large, scaled to this machine and within the node's per-job limits."""
    cores = int(config.job_cores) if config.job_cores else os.cpu_count() or 1
    cores = max(1, cores)
    memory = config.job_memory or _memory_mib() // 2
    walltime = int(config.job_walltime)
    sizes = {"tiny": (1, 8), "small": (max(1, cores // 4), 4), "medium": (max(1, cores // 2), 2), "large": (cores, 1)}
    return {
        name: Package(name=name, cores=c, memory=max(16, memory // share), walltime=walltime)
        for name, (c, share) in sizes.items()
    }


def load_packages(path: Path) -> dict[str, Package]:
    """The packages of a JSON file (a list of packages, or an object name -> package without its name)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"Cannot read the packages file {path}: {e}") from None
    items = [{**v, "name": k} if isinstance(v, dict) else v for k, v in doc.items()] if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise ConfigError(f"The packages file {path} must hold a non-empty list or object of packages")
    try:
        packages = [Package.model_validate(item) for item in items]
    except ValidationError as e:
        error = e.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise ConfigError(f"The packages file {path} is invalid: {where}: {error['msg']}") from None
    if len({p.name for p in packages}) != len(packages):
        raise ConfigError(f"The packages file {path} names a package twice")
    return {p.name: p for p in packages}


def for_node(config: NodeConfig) -> dict[str, Package]:
    """The node's packages (blocking: reads the file)."""
    return load_packages(config.packages_file) if config.packages_file else default_packages(config)


def _asked(resources: dict[str, Any]) -> dict[str, float]:
    """What `resources` ask, in the units of a package (cores, MiB, seconds); raises `InvalidInputError`."""
    try:
        parsed = Resources.model_validate(resources)
    except ValidationError as e:
        raise InvalidInputError(f"Invalid resources: {e.errors()[0]['msg']}", {"resources": resources}) from None
    asked: dict[str, float] = {}
    if parsed.cores is not None:
        asked["cores"] = parsed.cores
    if parsed.memory is not None:
        units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}
        number, unit = (parsed.memory[:-1], parsed.memory[-1]) if parsed.memory[-1] in units else (parsed.memory, "M")
        asked["memory"] = int(number) * units[unit]
    walltime = parsed.walltime_seconds()
    if walltime is not None:
        asked["walltime"] = walltime
    if parsed.gpus:
        asked["gpus"] = parsed.gpus
    return asked


_UNITS = {"cores": "cores", "memory": "MiB memory", "walltime": "s walltime", "gpus": "GPUs"}


def _short(package: Package, asked: dict[str, float]) -> list[str]:
    """What of `asked` the package does not give."""
    gives = {k: getattr(package, k) for k in _UNITS}
    return [f"{asked[k]:g} {unit} (it gives {gives[k]})" for k, unit in _UNITS.items() if asked.get(k, 0) > gives[k]]


def _size(package: Package) -> tuple[int, int, int, int]:
    return package.memory, package.cores, package.gpus, package.walltime


def evaluate(
    packages: dict[str, Package],
    allowed: set[str] | None,
    resources: dict[str, Any],
    name: str | None,
    sized: bool = True,
    gpus: int | None = None,
) -> tuple[Package | None, list[Refusal]]:
    """The package a job gets (None with every reason when none): `resources` is what the descriptor and the task
    ask (merged), `name` the package the task names, `allowed` the names the user's level allows (None: all),
    `gpus` the GPUs of the node (None: not checked; a package with more is never given).
    Not `sized` (an ssh or slurm backend while the packages are the defaults, which describe this machine): a job
    that names no package gets none (and what it asks is the remote host's business), unless its user may have
    no jobs at all."""
    asked = _asked(resources)
    if not sized and name is None:
        refused = allowed is not None and not allowed
        return None, [Refusal("level", "Your account level on this node allows no jobs")] if refused else []
    if gpus is not None and asked.get("gpus", 0) > gpus:
        has = f"{gpus} GPUs" if gpus else "no GPUs"
        return None, [Refusal("invalid", f"The job asks {asked['gpus']:g} GPUs: this node has {has}")]
    if gpus is not None:
        usable = {n: p for n, p in packages.items() if p.gpus <= gpus}
        if name is not None and name in packages and name not in usable:
            has = f"{gpus} GPUs" if gpus else "no GPUs"
            reason = f"Package '{name}' has {packages[name].gpus} GPUs: this node has {has}"
            return None, [Refusal("invalid", reason)]
        packages = usable or packages
    mine = sorted((p for p in packages.values() if allowed is None or p.name in allowed), key=_size)
    if name is not None:
        package = packages.get(name)
        if package is None:
            return None, [Refusal("invalid", f"This node has no package '{name}' (it has: {', '.join(packages)})")]
        refusals = []
        if allowed is not None and name not in allowed:
            permitted = ", ".join(p.name for p in mine) or "none"
            reason = f"Your account level does not allow package '{name}' (allowed: {permitted})"
            refusals.append(Refusal("level", reason))
        short = _short(package, asked)
        if short:
            refusals.append(Refusal("invalid", f"Package '{name}' is too small: the job asks {'; '.join(short)}"))
        return (None, refusals) if refusals else (package, [])
    if allowed is not None and not mine:
        return None, [Refusal("level", "Your account level on this node allows no jobs")]
    if not asked:
        return mine[-1], []
    fitting = [p for p in mine if not _short(p, asked)]
    if fitting:
        return fitting[0], []
    if not any(not _short(p, asked) for p in packages.values()):
        biggest = max(packages.values(), key=_size)
        needs = "; ".join(_short(biggest, asked))
        reason = f"The job asks more than any package of this node allows: {needs} (largest: '{biggest.name}')"
        return None, [Refusal("invalid", reason)]
    permitted = ", ".join(p.name for p in mine)
    return None, [Refusal("level", f"The job asks more than the packages your account level allows ({permitted})")]


def fill(resources: dict[str, Any], package: Package | None) -> dict[str, Any]:
    """`resources` completed with the package's cores, memory and walltime (what they ask stays)."""
    if package is None:
        return resources
    filled = dict(resources)
    filled.setdefault("cores", package.cores)
    filled.setdefault("memory", f"{package.memory}M")
    filled.setdefault("walltime", package.walltime)
    if package.gpus:
        filled.setdefault("gpus", package.gpus)
    return filled


def grant(
    packages: dict[str, Package],
    allowed: set[str] | None,
    resources: dict[str, Any],
    name: str | None,
    sized: bool = True,
    gpus: int | None = None,
) -> Package | None:
    """`evaluate`, raising the first refusal: `InvalidInputError` (400) or `AuthorisationError` (403)."""
    package, refusals = evaluate(packages, allowed, resources, name, sized, gpus)
    if not refusals:
        return package
    first = refusals[0]
    details = {"package": name, "reasons": [r.reason for r in refusals]}
    if first.kind == "level":
        raise AuthorisationError(first.reason, details)
    raise InvalidInputError(first.reason, details)


def folder_mib(folder: Path) -> float:
    """MiB the files under `folder` hold (symbolic links not followed). Blocks."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # gone meanwhile
                total += os.lstat(os.path.join(root, name)).st_size
    return total / 2**20


async def check_disk(folder: Path, package: Package | None) -> None:
    """After the adapter ended: raise `JobFailedError` when the job folder holds more than its package's disk."""
    if package is None or package.disk is None:
        return
    from saas.rti.jobs import JobFailedError

    used = await asyncio.to_thread(folder_mib, folder)
    if used > package.disk:
        raise JobFailedError(
            f"The job's folder holds {used:.1f} MiB, more than the disk of package '{package.name}' "
            f"({package.disk} MiB)"
        )
