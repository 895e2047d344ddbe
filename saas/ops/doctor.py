"""`saas-cli doctor`: a node's self-test (issue 19, item 4), run where the node runs (or anywhere, for the parts
that go over the network). Each check says what it found and, when it fails, how to fix it.

Checks, in order (a check that needs an earlier one that failed is reported as not run, which counts as failed):
keystore (loads with the password, private file), node (answers at the address with a valid record), datastore
(a folder owned by this user, private, writable by its owner, a file can be written, enough free space; its disk
as the node sees it), DOR (write, read back and delete a small object), P2P (the boot node and every known node
online as the node sees them; the boot node reachable from here), sandbox (an RTI runs adapters in the
bubblewrap sandbox), backends (each SSH credential of the keystore logs in; each processor on an ssh or slurm
backend is ready; a local SLURM answers `sinfo`).

No server dependency is imported: the checks use the SDK's proxies."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas.core.errors import SaaSError

if TYPE_CHECKING:
    from saas.core.keystore import Keystore
    from saas.core.schemas import SSHCredentials
    from saas.nodedb.schemas import NodeInfo

__all__ = ["Check", "Doctor"]

DISK_FREE_BYTES = 2**30  # less free space than this (or than DISK_FREE_SHARE of the disk) fails the check
DISK_FREE_SHARE = 0.05
CONNECT_TIMEOUT = 3.0
SINFO_TIMEOUT = 15.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def document(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "fix": self.fix}


class Doctor:
    def __init__(
        self,
        address: tuple[str, int],
        load_keystore: Callable[[], Keystore],
        datastore: Path | None,
        boot_node: str | None = None,
        temp_dir: Path | None = None,
        check_ssh: Callable[[SSHCredentials], None] | None = None,
    ):
        self.address = address
        self._load_keystore = load_keystore
        self.datastore = datastore
        self.boot_node = boot_node
        self.temp_dir = temp_dir or Path(tempfile.gettempdir())
        self._check_ssh = check_ssh  # logs in with SSH credentials, raises a SaaSError with ssh's reason if it fails
        self.checks: list[Check] = []
        self._keystore: Keystore | None = None
        self._record: NodeInfo | None = None
        self._network: list[NodeInfo] = []

    def run(self) -> list[Check]:
        self.checks = []
        for step in (
            self._keystore_check,
            self._node_check,
            self._datastore_check,
            self._node_disk_check,
            self._dor_check,
            self._p2p_check,
            self._sandbox_check,
            self._backend_checks,
        ):
            step()
        return self.checks

    def _add(self, name: str, ok: bool, detail: str, fix: str | None = None) -> None:
        self.checks.append(Check(name, ok, detail, None if ok else fix))

    @property
    def _where(self) -> str:
        return "{}:{}".format(*self.address)

    # -- the checks ---------------------------------------------------------------------------------------------

    def _keystore_check(self) -> None:
        try:
            keystore = self._load_keystore()
        except SaaSError as e:
            self._add(
                "keystore",
                False,
                e.reason,
                "check the identity (--keystore-id) and its password; restore the "
                "keystore file from a backup if it was modified",
            )
            return
        self._keystore = keystore
        mode = stat.S_IMODE(os.stat(keystore.path).st_mode)
        if mode & 0o077:
            self._add(
                "keystore",
                False,
                f"{keystore.path} is readable by others (mode {mode:04o})",
                f"chmod 600 {keystore.path}",
            )
            return
        self._add(
            "keystore", True, f"{keystore.identity.name} <{keystore.identity.email}> ({keystore.iid[:16]}…) loads"
        )

    def _node_check(self) -> None:
        from saas.nodedb.proxy import NodeDBProxy

        try:
            with NodeDBProxy(self.address, timeout=10) as proxy:
                record = proxy.get_node()
                record.verify()
                self._network = proxy.get_network()
        except SaaSError as e:
            self._add(
                "node",
                False,
                f"no node at {self._where}: {e.reason}",
                f"start the node (saas-cli service) or give its REST address (--address); is {self._where} "
                "reachable from here?",
            )
            return
        self._record = record
        services = [s for s, on in (("DOR", record.dor_service), ("RTI", record.rti_service)) if on]
        self._add(
            "node",
            True,
            f"node {record.identity.id[:16]}… ({record.identity.name}) answers at {self._where} "
            f"with a valid record ({' + '.join(services)})",
        )

    def _datastore_check(self) -> None:
        path = self.datastore
        if path is None:
            self._add("datastore", True, "not checked here (give --datastore to check the node's datastore folder)")
            return
        problem = _datastore_problem(path)
        if problem is not None:
            self._add("datastore", False, problem[0], problem[1])
            return
        usage = shutil.disk_usage(path)
        if usage.free < DISK_FREE_BYTES or usage.free < DISK_FREE_SHARE * usage.total:
            self._add(
                "datastore",
                False,
                f"{path}: only {usage.free / 2**30:.2f} GiB free of {usage.total / 2**30:.2f} GiB",
                "free space on its disk or move the datastore (--datastore)",
            )
            return
        self._add("datastore", True, f"{path}: private, writable, {usage.free / 2**30:.1f} GiB free")

    def _node_disk_check(self) -> None:
        if self._record is None:
            return
        from saas.ops.proxy import HealthProxy

        try:
            with HealthProxy(self.address, timeout=10) as proxy:
                disk = proxy.get_node_health().disk
        except SaaSError as e:
            self._add("node disk", False, f"the node did not tell its health: {e.reason}", "check the node's log")
            return
        if not disk:
            self._add("node disk", False, "the node cannot read its datastore's disk", "check the datastore folder")
        elif disk["free"] < DISK_FREE_BYTES or disk["free"] < DISK_FREE_SHARE * disk["total"]:
            self._add(
                "node disk",
                False,
                f"the node's datastore disk has {disk['free'] / 2**30:.2f} GiB free of {disk['total'] / 2**30:.2f} GiB",
                "free space on the node's datastore disk",
            )
        else:
            self._add("node disk", True, f"{disk['free'] / 2**30:.1f} GiB free on the node's datastore disk")

    def _dor_check(self) -> None:
        if self._record is not None and not self._record.dor_service:
            return
        if self._keystore is None or self._record is None:
            self._add(
                "DOR write/read/delete", False, "not run: needs the keystore and the node", "fix the checks above"
            )
            return
        try:
            detail = self._dor_round_trip(self._keystore)
        except SaaSError as e:
            self._add(
                "DOR write/read/delete",
                False,
                e.reason,
                "check the node's datastore (permissions, free space) and its log (saas-cli network diagnose)",
            )
            return
        self._add("DOR write/read/delete", True, detail)

    def _dor_round_trip(self, keystore: Keystore) -> str:
        from saas.dor.proxy import DORProxy
        from saas.nodedb.proxy import NodeDBProxy

        content = os.urandom(4096)
        folder = Path(tempfile.mkdtemp(prefix="saas-doctor-", dir=self.temp_dir))
        try:
            (folder / "probe.bin").write_bytes(content)
            with NodeDBProxy(self.address, timeout=10) as db:
                db.update_identity(keystore.identity)
            with DORProxy(self.address, keystore, timeout=30) as dor:
                obj = dor.add_data_object(folder / "probe.bin", keystore.identity, False, False, "saas-doctor", "bin")
                try:
                    dor.get_content(obj.obj_id, keystore, folder / "back.bin")
                    if (folder / "back.bin").read_bytes() != content:
                        raise SaaSError("The content read back differs from what was written", {"obj_id": obj.obj_id})
                finally:
                    dor.delete_data_object(obj.obj_id, keystore)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return f"a {len(content)}-byte object was written, read back intact and deleted"

    def _p2p_check(self) -> None:
        if self._record is None:
            return
        others = self._network[1:]
        offline = [n for n in others if not n.online]
        if self.boot_node:
            self._boot_check(self.boot_node)
        if not others:
            self._add("P2P peers", True, "this node knows no other node (the first node of its network)")
            return
        if offline:
            names = ", ".join(
                f"{n.identity.id[:16]}… ({n.identity.name}) at {_address(n.p2p_address)}" for n in offline
            )
            self._add(
                "P2P peers",
                False,
                f"{len(offline)} of {len(others)} known nodes offline: {names}",
                "check that those nodes run and that their P2P ports are reachable from this node (firewall, "
                "--p2p-address, same --network-name and network key)",
            )
            return
        self._add("P2P peers", True, f"all {len(others)} known nodes online")

    def _boot_check(self, boot: str) -> None:
        from saas.core.helpers import parse_address

        try:
            host, port = parse_address(boot)
        except (SaaSError, ValueError):
            self._add("P2P boot node", False, f"'{boot}' is not host:port", "give the boot node as host:port")
            return
        try:
            with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
                pass
        except OSError as e:
            self._add(
                "P2P boot node",
                False,
                f"{host}:{port} is not reachable from here: {e.strerror or e}",
                "start the boot node, or check its address and the firewall",
            )
            return
        known = [n for n in self._network if tuple(n.p2p_address) == (host, port)]
        if known and not known[0].online:
            self._add(
                "P2P boot node",
                False,
                f"{host}:{port} is reachable from here but offline for the node",
                "check that the node can reach the boot node (same --network-name and network key)",
            )
            return
        self._add("P2P boot node", True, f"{host}:{port} is reachable" + (" and online" if known else ""))

    def _sandbox_check(self) -> None:
        record = self._record
        if record is None or not record.rti_service:
            return
        if record.isolation == "sandbox":
            self._add("sandbox", True, "adapters run in the bubblewrap sandbox")
        else:
            self._add(
                "sandbox",
                False,
                f"adapters run without a sandbox (isolation: {record.isolation})",
                "install bubblewrap (apt-get install bubblewrap) and start the node without --unsafe-no-sandbox",
            )

    def _backend_checks(self) -> None:
        keystore = self._keystore
        if keystore is not None and self._check_ssh is not None:
            for name in keystore.ssh_credentials.list():
                credentials = keystore.ssh_credentials.get(name)
                if credentials is None:
                    continue
                target = f"{credentials.login}@{credentials.host}"
                try:
                    self._check_ssh(credentials)
                except SaaSError as e:
                    self._add(
                        f"backend ssh '{name}'",
                        False,
                        e.reason,
                        f"check the host, the login and that the key is authorised on {credentials.host} "
                        f"(saas-cli identity credentials test-ssh --name {name})",
                    )
                    continue
                self._add(f"backend ssh '{name}'", True, f"logs in as {target}")
        if self._record is None or not self._record.rti_service:
            return
        from saas.rti.proxy import RTIProxy

        try:
            with RTIProxy(self.address, timeout=10) as rti:
                processors = rti.get_deployed()
        except SaaSError as e:
            self._add("backends", False, f"the node did not list its processors: {e.reason}", "check the node's log")
            return
        local_slurm = False
        for p in processors:
            backend = str(p.backend.get("name", "local"))
            if backend == "local":
                continue
            local_slurm |= backend == "slurm" and not p.backend.get("remote")
            name = f"processor {p.proc_id[:16]} ({backend})"
            if p.state == "ready":
                self._add(name, True, "ready")
            else:
                self._add(
                    name,
                    False,
                    f"{p.state}: {p.error or 'no reason given'}",
                    "see the processor's status as the node owner (saas-cli rti proc status) and redeploy it",
                )
        if local_slurm:
            self._sinfo_check()

    def _sinfo_check(self) -> None:
        try:
            result = subprocess.run(
                ["sinfo", "-h"], capture_output=True, text=True, timeout=SINFO_TIMEOUT, stdin=subprocess.DEVNULL
            )
        except FileNotFoundError:
            self._add("backend slurm", False, "sinfo is not installed here", "install the SLURM client tools")
            return
        except subprocess.TimeoutExpired:
            self._add(
                "backend slurm",
                False,
                f"sinfo did not answer within {SINFO_TIMEOUT:.0f} s",
                "check that slurmctld runs and SLURM_CONF points at its configuration",
            )
            return
        if result.returncode != 0:
            error = " | ".join(result.stderr.strip().splitlines()[-2:]) or f"exit code {result.returncode}"
            self._add(
                "backend slurm",
                False,
                f"sinfo failed: {error}",
                "check that slurmctld runs and SLURM_CONF points at its configuration",
            )
            return
        partitions = len([line for line in result.stdout.splitlines() if line.strip()])
        self._add("backend slurm", True, f"sinfo answers ({partitions} partition line(s))")


def _address(address: Any) -> str:
    return "{}:{}".format(*address)


def _datastore_problem(path: Path) -> tuple[str, str] | None:
    """What is wrong with a datastore folder and how to fix it, or None (blocking: stats and writes a file)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return f"{path} does not exist", f"create it (mkdir -m 700 {path}) or give the right --datastore"
    except OSError as e:
        return f"{path} cannot be read: {e.strerror}", f"check the permissions of {path} and its parents"
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a folder", "give the node's datastore folder (--datastore)"
    if info.st_uid != os.geteuid():
        return (
            f"{path} is owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})",
            f"run the node as the datastore's owner, or chown -R {os.geteuid()} {path}",
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o700 != 0o700:
        return (
            f"{path} is not writable by its owner (mode {mode:04o}): the node cannot store anything",
            f"chmod 700 {path}",
        )
    if mode & 0o077:
        return f"{path} is open to other users (mode {mode:04o})", f"chmod 700 {path}"
    try:
        fd, probe = tempfile.mkstemp(prefix=".doctor-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return (
            f"{path}: a file cannot be written there ({e.strerror})",
            "check that its file system is mounted read-write and not full",
        )
    return None
