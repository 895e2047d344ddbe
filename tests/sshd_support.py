"""A real OpenSSH server for the tests (credential checks, the SSH and SLURM-over-SSH backends): started on a free
127.0.0.1 port with a throw-away host key and one authorised key, everything in a temporary folder. If sshd cannot
start, the caller's fixture fails with the reason (it never skips)."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.waiting import WaitTimeout, wait_until

SSHD = Path("/usr/sbin/sshd")

__all__ = ["SSHD", "SSHServer", "free_port", "ssh_keygen", "start_sshd"]


def ssh_keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "saas-cli-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SSHServer:
    port: int
    login: str
    key: Path  # an authorised private key
    log: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float = 15) -> None:
    def listening() -> bool:
        if process.poll() is not None:
            pytest.fail(f"sshd exited with code {process.returncode}:\n{log.read_text(errors='replace')}")
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    try:
        wait_until(
            listening,
            timeout,
            what=f"sshd to listen on 127.0.0.1:{port}",
            ignore=(OSError,),
            detail=lambda: log.read_text(errors="replace"),
        )
    except WaitTimeout:
        process.terminate()
        raise


@contextmanager
def start_sshd(directory: Path, authorised_key: Path, extra: list[str] | None = None) -> Iterator[SSHServer]:
    """A real OpenSSH server on a free 127.0.0.1 port that lets the current user in with `authorised_key`
    (`extra`: more sshd_config lines, e.g. `SetEnv NAME=value` for every session)."""
    if not SSHD.exists():
        pytest.fail(f"openssh-server not installed ({SSHD} is missing): scripts/test installs it")
    if shutil.which("ssh") is None:
        pytest.fail("openssh-client not installed (no 'ssh' on PATH): scripts/test installs it")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    host_key = ssh_keygen(directory / "host_key")
    authorized_keys = directory / "authorized_keys"
    authorized_keys.write_text(authorised_key.with_suffix(".pub").read_text())
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized_keys}",
                f"PidFile {directory / 'sshd.pid'}",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "MaxStartups 100:30:200",
                "LogLevel VERBOSE",
                *(extra or []),
                "",
            ]
        )
    )
    log = directory / "sshd.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_port(port, process, log)
        yield SSHServer(port, getpass.getuser(), authorised_key, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
