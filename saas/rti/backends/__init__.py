"""Execution backends: where a processor is installed and its jobs run (DESIGN §8).

`local` (this node), `ssh` (a remote host reached with an SSH profile) and `slurm` (a SLURM cluster, submitted on
this machine or through an SSH login node). A processor's backend is chosen at deploy time and stored with it as a
`spec` (`{"name", "ssh_credentials", "partition"}`): SSH credentials only as the ciphertext the client sent
(encrypted for this node's key), decrypted into memory when the backend is built and gone with the processor."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from saas.core.errors import InvalidInputError
from saas.core.schemas import SSHCredentials, decrypt_credentials
from saas.dor.schemas import GitProcessorPointer
from saas.rti.backends.base import Backend, BackendError, JobContext
from saas.rti.backends.local import LocalBackend
from saas.rti.backends.slurm import SlurmBackend
from saas.rti.backends.ssh import SSHBackend
from saas.rti.cgroups import Limits
from saas.rti.sandbox import Sandbox

__all__ = ["Backend", "BackendError", "JobContext", "LocalBackend", "SSHBackend", "SlurmBackend", "make_backend"]


async def decrypt_ssh_credentials(encrypted: str, decrypt: Callable[[bytes], bytes]) -> SSHCredentials:
    return await decrypt_credentials(SSHCredentials, encrypted, decrypt, "SSH credentials")


async def make_backend(
    spec: dict[str, Any],
    *,
    decrypt: Callable[[bytes], bytes],
    proc_root: Path,
    rti_root: Path,
    node_tag: str,
    gpp: GitProcessorPointer,
    proc_id: str,
    sandbox: Sandbox,
    install_limits: Limits | None = None,
) -> Backend:
    """The backend a processor's stored `spec` describes (decrypting its SSH credentials)."""
    name = spec.get("name", "local")
    credentials = None
    if spec.get("ssh_credentials"):
        credentials = await decrypt_ssh_credentials(spec["ssh_credentials"], decrypt)
    known_hosts = proc_root / "known_hosts"  # pinned at deploy (install empties proc_root first)
    if name == "local":
        return LocalBackend(sandbox, install_limits)
    if name == "ssh":
        if credentials is None:
            raise InvalidInputError("The ssh backend needs SSH credentials")
        return SSHBackend(credentials, known_hosts, _remote_base(credentials, node_tag), proc_id, gpp.proc_path)
    if name == "slurm":
        base = str(rti_root / "slurm") if credentials is None else _remote_base(credentials, node_tag)
        return SlurmBackend(credentials, known_hosts, base, proc_id, gpp.proc_path, spec.get("partition"))
    raise InvalidInputError(f"Unknown execution backend '{name}'")


def _remote_base(credentials: SSHCredentials, node_tag: str) -> str:
    home = (credentials.home_path or "").rstrip("/")
    return f"{home}/.saas-rti/{node_tag}" if home else f".saas-rti/{node_tag}"
