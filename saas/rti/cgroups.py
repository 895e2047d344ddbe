"""Control groups for adapter processes: every process of a job, an agent instance or an install lives in one cgroup
of its own, which carries its limits (memory, processes, CPU) and is killed as a whole.

`CgroupTree.detect(tag)` finds the hierarchies this process may write: cgroup v2 (unified) and the v1 controllers
`memory`, `pids` and `cpu` (a machine may have both, as a hybrid). Each adapter cgroup is `<own cgroup>/saas-<tag>/
<name>` in every writable hierarchy, where `<own cgroup>` is the node's own (from /proc/self/cgroup) and `<tag>`
names the node's datastore, so a restarted node finds and kills what a crashed one left (`sweep`). A process joins
before it executes anything (`Cgroup.join_command`), so nothing it forks is ever outside. Linux only; elsewhere,
or without write access, `detect` returns None and the PID namespace of the sandbox is what ends every process."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Cgroup", "CgroupTree", "Limits"]

MOUNTS = Path("/proc/self/mounts")
OWN = Path("/proc/self/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD = 100_000  # microseconds


@dataclass(frozen=True)
class Limits:
    """What one job (or agent instance, or install) may use; None: no limit of that kind."""

    memory: int | None = None  # bytes
    pids: int | None = None  # processes and threads at once
    cores: float | None = None  # CPU time per wall second
    walltime: float | None = None  # seconds (enforced by the caller's timer, not by the cgroup)

    def describe(self) -> str:
        parts = []
        if self.memory:
            parts.append(f"memory {self.memory // 2**20} MiB")
        if self.pids:
            parts.append(f"{self.pids} processes")
        if self.cores:
            parts.append(f"{self.cores:g} cores")
        if self.walltime:
            parts.append(f"walltime {self.walltime:g} s")
        return ", ".join(parts) or "none"


@dataclass
class _Hierarchy:
    kind: str  # "v2" or a v1 controller name
    base: Path  # <mount>/<own cgroup>/saas-<tag>


@dataclass
class Cgroup:
    """One adapter's cgroup (a folder in each writable hierarchy)."""

    name: str
    folders: dict[str, Path] = field(default_factory=dict)  # kind -> folder
    limits: Limits = field(default_factory=Limits)

    def join_command(self) -> list[str]:
        """A `sh -c` prefix that moves itself into this cgroup, then executes the rest of the command."""
        writes = "".join(f"echo $$ > {shlex.quote(str(f / 'cgroup.procs'))} && " for f in self.folders.values())
        return ["/bin/sh", "-c", writes + 'exec "$@"', "saas-cgroup"]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder in self.folders.values():
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
        return found

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (cgroup.kill where the kernel has it, else one by one until none is
        left: the pids limit keeps a fork bomb from outrunning it). Blocks briefly."""
        v2 = self.folders.get("v2")
        if v2 is not None and (v2 / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (v2 / "cgroup.kill").write_text("1")
        for _ in range(200):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def exceeded(self) -> str | None:
        """Which limit the processes ran into (the memory limit killed one, or the process limit refused a fork)."""
        limits = self.limits
        memory = self.folders.get("memory") or self.folders.get("v2")
        if memory is not None and limits.memory:
            events = _events(memory / "memory.events") or _events(memory / "memory.oom_control")
            if events.get("oom_kill", 0) > 0:
                return f"it exceeded its memory limit of {limits.memory // 2**20} MiB"
        pids = self.folders.get("pids") or self.folders.get("v2")
        if pids is not None and limits.pids and _events(pids / "pids.events").get("max", 0) > 0:
            return f"it exceeded its limit of {limits.pids} processes"
        return None

    def remove(self) -> None:
        """Kill what is left, then remove the folders. Blocks briefly."""
        self.kill()
        for folder in self.folders.values():
            for _ in range(100):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy: a process is still being reaped
                    time.sleep(0.005)


class CgroupTree:
    """The node's writable cgroup hierarchies; makes, limits and sweeps the cgroups of adapter processes."""

    def __init__(self, hierarchies: list[_Hierarchy]):
        self._hierarchies = hierarchies

    @property
    def kinds(self) -> list[str]:
        return [h.kind for h in self._hierarchies]

    def enforces(self, what: str) -> bool:
        """Whether a limit of this kind ("memory", "pids", "cpu") is enforced by a cgroup."""
        for h in self._hierarchies:
            if h.kind == what:
                return True
            if h.kind == "v2" and what in _read(h.base / "cgroup.subtree_control").split():
                return True
        return False

    @classmethod
    def detect(cls, tag: str) -> CgroupTree | None:
        """The hierarchies where `saas-<tag>` can be made (and is made now), or None when there is none."""
        try:
            mounts = MOUNTS.read_text().splitlines()
            own = OWN.read_text().splitlines()
        except OSError:
            return None
        paths: dict[str, str] = {}  # "v2" or controller -> own cgroup path
        for line in own:
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            if parts[0] == "0" and parts[1] == "":
                paths["v2"] = parts[2]
            for controller in parts[1].split(","):
                if controller in V1_CONTROLLERS:
                    paths[controller] = parts[2]
        hierarchies: list[_Hierarchy] = []
        for line in mounts:
            fields = line.split()
            if len(fields) < 4:
                continue
            mount, fstype, options = fields[1], fields[2], fields[3].split(",")
            if fstype == "cgroup2" and "v2" in paths:
                kind = "v2"
            elif fstype == "cgroup" and (found := [c for c in V1_CONTROLLERS if c in options]):
                kind = found[0]
            else:
                continue
            if any(h.kind == kind for h in hierarchies) or kind not in paths:
                continue
            base = Path(mount) / paths[kind].lstrip("/") / f"saas-{tag}"
            try:
                base.mkdir(exist_ok=True)
                if kind == "v2":
                    _enable_v2_controllers(base)
            except OSError:
                continue
            hierarchies.append(_Hierarchy(kind, base))
        return cls(hierarchies) if hierarchies else None

    def create(self, name: str, limits: Limits) -> Cgroup:
        """A fresh cgroup `name` with the limits (a leftover of the same name is killed and replaced). Blocks."""
        group = Cgroup(name, limits=limits)
        for h in self._hierarchies:
            folder = h.base / name
            if folder.exists():
                Cgroup(name, {h.kind: folder}).remove()
            folder.mkdir()
            group.folders[h.kind] = folder
            _apply(h.kind, folder, limits)
        return group

    def sweep(self) -> int:
        """Kill and remove every adapter cgroup left by an earlier run of this node; returns how many. Blocks."""
        names: set[str] = set()
        for h in self._hierarchies:
            with contextlib.suppress(OSError):
                names.update(p.name for p in h.base.iterdir() if p.is_dir())
        for name in names:
            Cgroup(name, {h.kind: h.base / name for h in self._hierarchies if (h.base / name).is_dir()}).remove()
        return len(names)

    def close(self) -> None:
        """Remove the node's own folders (once every adapter cgroup in them is gone). Blocks."""
        self.sweep()
        for h in self._hierarchies:
            with contextlib.suppress(OSError):
                h.base.rmdir()


def _enable_v2_controllers(base: Path) -> None:
    available = _read(base / "cgroup.controllers").split()
    for controller in ("memory", "pids", "cpu"):
        if controller in available:
            with contextlib.suppress(OSError):
                (base / "cgroup.subtree_control").write_text(f"+{controller}")


def _apply(kind: str, folder: Path, limits: Limits) -> None:
    """Write the limits a hierarchy can carry (a file that does not exist is a controller it lacks)."""
    writes: list[tuple[str, str]] = []
    if kind == "v2":
        if limits.memory:
            writes += [("memory.max", str(limits.memory)), ("memory.swap.max", "0")]
        if limits.pids:
            writes.append(("pids.max", str(limits.pids)))
        if limits.cores:
            writes.append(("cpu.max", f"{int(limits.cores * CPU_PERIOD)} {CPU_PERIOD}"))
    elif kind == "memory" and limits.memory:
        writes += [("memory.limit_in_bytes", str(limits.memory)), ("memory.memsw.limit_in_bytes", str(limits.memory))]
    elif kind == "pids" and limits.pids:
        writes.append(("pids.max", str(limits.pids)))
    elif kind == "cpu" and limits.cores:
        writes += [("cpu.cfs_period_us", str(CPU_PERIOD)), ("cpu.cfs_quota_us", str(int(limits.cores * CPU_PERIOD)))]
    for name, value in writes:
        with contextlib.suppress(OSError):
            (folder / name).write_text(value)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _events(path: Path) -> dict[str, int]:
    events: dict[str, int] = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            events[key] = int(value)
    return events
