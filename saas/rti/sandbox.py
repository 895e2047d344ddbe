"""The sandbox adapter processes run in (DESIGN §12): bubblewrap, with an unprivileged uid and a cgroup each.

What a sandboxed process sees: the system read-only (`/usr`, `/etc` and the `/bin`, `/lib`… links), its own folders
(the adapter folder read-only for jobs and read-write for install.sh, the job's working folder read-write), a
private `/tmp`, its own `/proc` and nothing else: no datastore, no keystore, no other job, no process of the node.
It runs in fresh mount, PID, IPC and UTS namespaces (and a fresh network namespace when its network is denied),
with no capabilities, `--die-with-parent`, and as an unprivileged uid:
- node running as root: bubblewrap sets up the mounts as root, then `setpriv` switches to `uid` (default `nobody`)
  with no capabilities, an empty bounding set and no_new_privs before anything of the adapter runs;
- node running as an ordinary user: bubblewrap makes a user namespace, and the adapter runs as the node's own uid
  mapped into it (it sees none of the node's files: only what is mounted).

`Sandbox.detect` tries the sandbox once with `true` and raises `SandboxUnavailableError` (with the reason) when it
does not work; the RTI then starts only with `--unsafe-no-sandbox`, which gives `Sandbox.unsafe()`: processes run as
the node's own user, in their own process group, with a minimal environment (the pre-sandbox behaviour)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saas.core.errors import RTIError
from saas.rti.cgroups import CgroupTree, Limits

__all__ = ["NOBODY", "Sandbox", "SandboxUnavailableError"]

NOBODY = 65534
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_DIRS = ("/usr", "/etc", "/opt")
ROOT_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_DAC_OVERRIDE")  # setpriv's, dropped by it


class SandboxUnavailableError(RTIError):
    """The sandbox cannot be used on this machine; `reason` says why and what to install."""


@dataclass(frozen=True)
class Sandbox:
    kind: str  # "bubblewrap" or "none"
    bwrap: str = ""
    uid: int | None = None  # the unprivileged uid when the node runs as root (the sandbox switches to it)
    gid: int | None = None
    cgroups: CgroupTree | None = None
    job_network: bool = True  # may jobs use the network at all (install.sh always may)

    @property
    def enabled(self) -> bool:
        return self.kind == "bubblewrap"

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def unsafe(cls, datastore: Path | None = None, job_network: bool = True) -> Sandbox:
        """No sandbox (`--unsafe-no-sandbox`): still one cgroup per process where the machine allows."""
        cgroups = CgroupTree.detect(_tag(datastore)) if datastore is not None else None
        return cls("none", cgroups=cgroups, job_network=job_network)

    @classmethod
    def detect(
        cls,
        datastore: Path,
        job_network: bool = True,
        uid: int | None = None,
        *,
        as_caller: bool = False,
        cgroups: bool = True,
    ) -> Sandbox:
        """The bubblewrap sandbox, checked by running a command in it; raises `SandboxUnavailableError`. With
        `as_caller` (a developer's own adapter, `saas-cli adapter test`) it keeps the caller's uid in a user
        namespace even as root: the same view of the machine, without files changing owner."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxUnavailableError(
                "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)", {"isolation": "none"}
            )
        root = os.geteuid() == 0 and not as_caller
        if root and shutil.which("setpriv") is None:
            raise SandboxUnavailableError("setpriv (util-linux) is missing", {"isolation": "none"})
        uid = (NOBODY if uid is None else uid) if root else None
        sandbox = cls(
            "bubblewrap",
            bwrap,
            uid,
            uid,
            CgroupTree.detect(_tag(datastore)) if cgroups else None,
            job_network,
        )
        datastore.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=".sandbox-probe-", dir=datastore))
        sandbox.own(probe)
        try:
            argv = sandbox.wrap(["/bin/sh", "-c", "test -w ."], cwd=probe, rw=[probe], network=False)
            env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
            result = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SandboxUnavailableError(f"bubblewrap could not be started: {e}", {"isolation": "none"}) from None
        finally:
            shutil.rmtree(probe, ignore_errors=True)
        if result.returncode != 0:
            text = result.stderr.decode("utf-8", "replace").strip()[-300:] or f"exit code {result.returncode}"
            raise SandboxUnavailableError(
                f"bubblewrap does not work here (user namespaces disabled?): {text}",
                {"isolation": "none"},
            )
        return sandbox

    # -- use ----------------------------------------------------------------------------------------------------

    def wrap(
        self,
        argv: list[str],
        *,
        cwd: Path,
        rw: list[Path] | tuple[Path, ...] = (),
        ro: list[Path] | tuple[Path, ...] = (),
        network: bool = True,
        limits: Limits | None = None,
    ) -> list[str]:
        """The command line that runs `argv` in the sandbox: `rw` and `ro` folders visible at their own paths,
        `cwd` the working folder; memory and process limits no cgroup enforces are set as rlimits."""
        if not self.enabled:
            return argv
        args = [self.bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
        args += ["--unshare-cgroup-try", "--hostname", "sandbox"]
        if not network:
            args.append("--unshare-net")
        if self.uid is None:
            args.append("--unshare-user")
        for path in SYSTEM_DIRS:
            args += ["--ro-bind-try", path, path]
        for path in SYSTEM_LINKS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/run"]
        for tmp in ("/tmp", "/var/tmp"):
            args += ["--perms", "1777", "--tmpfs", tmp]
        made = {"/", "/tmp", "/var", "/var/tmp", "/run"}
        for folder in (*ro, *rw):  # the folders above a visible one: traversable (not the host's modes)
            for parent in reversed(folder.parents):
                if str(parent) not in made:
                    made.add(str(parent))
                    args += ["--perms", "0755", "--dir", str(parent)]
        for folder in ro:
            args += ["--ro-bind", str(folder), str(folder)]
        for folder in rw:
            args += ["--bind", str(folder), str(folder)]
        args += ["--chdir", str(cwd)]
        inner: list[str] = []
        if self.uid is not None:
            for cap in ROOT_CAPS:
                args += ["--cap-add", cap]
            inner += ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
            inner += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        inner += self._rlimits(limits)
        return [*args, "--", *inner, *argv]

    def _rlimits(self, limits: Limits | None) -> list[str]:
        """`prlimit` for the limits no cgroup enforces (memory as address space; processes per user namespace)."""
        if limits is None:
            return []
        options = []
        if limits.memory and not (self.cgroups and self.cgroups.enforces("memory")):
            options.append(f"--as={limits.memory}")
        if limits.pids and not (self.cgroups and self.cgroups.enforces("pids")) and self.uid is None:
            options.append(f"--nproc={limits.pids}")
        return ["prlimit", *options, "--"] if options else []

    def own(self, path: Path, recursive: bool = False) -> None:
        """Give a folder (and with `recursive` everything in it) to the sandbox's uid, so the adapter may write it.
        Nothing to do when the node is not root (the sandbox runs as the node's own uid). Blocks."""
        if self.uid is None or not self.enabled:
            return
        os.chown(path, self.uid, self.gid or self.uid, follow_symlinks=False)
        if recursive:
            for folder, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.chown(os.path.join(folder, name), self.uid, self.gid or self.uid, follow_symlinks=False)

    def close(self) -> None:
        """Remove the node's (empty) cgroup folders. Blocks."""
        if self.cgroups is not None:
            self.cgroups.close()

    def describe(self) -> str:
        """One line for `saas-cli service`: the isolation in effect."""
        if not self.enabled:
            return "NONE: adapters run as the node's own user and can read its files (--unsafe-no-sandbox)"
        who = f"uid {self.uid}" if self.uid is not None else "the node's uid in a user namespace"
        cgroups = f"cgroups ({', '.join(self.cgroups.kinds)})" if self.cgroups else "no writable cgroup (rlimits)"
        network = "jobs may use the network" if self.job_network else "no network for jobs"
        return f"bubblewrap sandbox as {who}; {cgroups}; {network}"

    def record(self) -> dict[str, Any]:
        """What the node record shows about its isolation."""
        return {"sandbox": self.kind, "job_network": self.job_network, "cgroups": bool(self.cgroups)}


def _tag(datastore: Path | None) -> str:
    return hashlib.sha256(str(datastore).encode()).hexdigest()[:12]
