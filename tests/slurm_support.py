"""A real one-machine SLURM cluster for the tests: `munged`, `slurmctld` and `slurmd` started in the foreground
(as background processes) with a generated minimal `slurm.conf`, munge key, spool and logs in a temporary folder and
free ports. No cgroups or systemd needed (proctrack/linuxproc, task/none, no accounting). If a daemon cannot start,
the fixture fails with the reason and the daemon's log (it never skips). Debian packages: slurm-wlm, munge
(scripts/test installs them when missing)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.waiting import wait_until

__all__ = ["SlurmCluster", "start_slurm"]

NODE = "saas-test-node"
PARTITION = "debug"


@dataclass
class SlurmCluster:
    conf: Path
    folder: Path
    partition: str = PARTITION

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str) -> str:
        result = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=30)
        return result.stdout

    def logs(self) -> str:
        texts = []
        for log in sorted(self.folder.glob("*.log")):
            texts.append(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(texts)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None and not Path(f"/usr/sbin/{p}").exists()]
    if missing:
        pytest.fail(f"SLURM test cluster: {', '.join(missing)} not installed (apt-get install slurm-wlm munge)")


def _which(program: str) -> str:
    return shutil.which(program) or f"/usr/sbin/{program}"


@contextmanager
def _daemon(argv: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen]:
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _config(folder: Path, munge_socket: Path, cpus: int) -> str:
    host = socket.gethostname()
    spool = folder / "spool"
    return "\n".join(
        [
            "ClusterName=saastest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            f"AuthInfo=socket={munge_socket}",
            "CredType=cred/munge",
            f"SlurmUser={os.environ.get('USER') or 'root'}" if os.geteuid() != 0 else "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={spool / 'ctld'}",
            f"SlurmdSpoolDir={spool / 'd'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/builtin",
            "SchedulerParameters=sched_interval=1",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "MpiDefault=none",
            "ReturnToService=2",
            "SlurmdTimeout=10",
            "SlurmctldTimeout=10",
            "InactiveLimit=0",
            "MinJobAge=300",
            "KillWait=2",
            "Waittime=0",
            "MessageTimeout=10",
            f"NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


@contextmanager
def start_slurm(folder: Path, timeout: float = 45) -> Iterator[SlurmCluster]:
    """munged + slurmctld + slurmd on this machine; yields once `sinfo` shows the node idle."""
    _require("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
    if os.geteuid() != 0:
        pytest.fail("SLURM test cluster: slurmd must run as root (the tests run as root in CI)")
    munge = folder / "munge"
    munge.mkdir(mode=0o711)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = munge / "munge.socket"
    for sub in ("spool/ctld", "spool/d"):
        (folder / sub).mkdir(parents=True)
    conf = folder / "slurm.conf"
    conf.write_text(_config(folder, munge_socket, os.cpu_count() or 1))
    cluster = SlurmCluster(conf, folder)
    env = cluster.env
    with ExitStack() as stack:
        munged = stack.enter_context(
            _daemon(
                [
                    _which("munged"),
                    "--foreground",
                    "--force",
                    f"--key-file={key}",
                    f"--socket={munge_socket}",
                    f"--pid-file={munge / 'munged.pid'}",
                    f"--seed-file={munge / 'munged.seed'}",
                    f"--log-file={folder / 'munged.log'}",
                ],
                folder / "munged.out.log",
                env,
            )
        )

        def munge_up() -> bool:
            if munged.poll() is not None:
                pytest.fail(f"munged did not start:\n{cluster.logs()}")
            return munge_socket.exists()

        wait_until(munge_up, 10, what="munged's socket", detail=cluster.logs)
        ctld = stack.enter_context(_daemon([_which("slurmctld"), "-D", "-i"], folder / "slurmctld.out.log", env))
        slurmd = stack.enter_context(_daemon([_which("slurmd"), "-D", "-N", NODE], folder / "slurmd.out.log", env))

        def idle() -> bool:
            for name, process in (("slurmctld", ctld), ("slurmd", slurmd)):
                if process.poll() is not None:
                    pytest.fail(f"{name} exited with code {process.returncode}:\n{cluster.logs()}")
            return cluster.run("sinfo", "-h", "-N", "-o", "%t").strip() == "idle"

        wait_until(idle, timeout, interval=0.2, what="the SLURM node idle (sinfo)", detail=cluster.logs)
        try:
            yield cluster
        finally:
            subprocess.run(["scancel", "--user", str(os.geteuid())], env=env, capture_output=True, timeout=30)
