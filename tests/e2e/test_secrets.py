"""The node's secrets stay in the node (DESIGN §12): a real `saas-cli service` process keeps its keystore password
in neither /proc/<pid>/cmdline nor /proc/<pid>/environ, whichever way it was given, and its datastore is private
(folders 0700, files 0600), an old one included."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from e2e_support import PASSWORD, NodeProcess, write_random_file

from saas.core.keystore import Keystore

pytestmark = pytest.mark.slow

SANDBOX_SUBTREES = ("rti/procs", "rti/jobs")  # below these the adapter sandbox decides (saas/datastore.py)


def proc_file(pid: int, name: str) -> bytes:
    return Path(f"/proc/{pid}/{name}").read_bytes()


def modes(root: Path) -> dict[str, int]:
    """Relative path -> permission bits of the root and everything below it (symbolic links left out), except
    below the sandbox subtrees."""
    found = {".": stat.S_IMODE(root.lstat().st_mode)}
    for folder, folders, files in os.walk(root):
        relative = Path(folder).relative_to(root)
        if relative.as_posix() in SANDBOX_SUBTREES:
            folders.clear()
            files = []
        for name in folders + files:
            path = Path(folder) / name
            if not path.is_symlink():
                found[(relative / name).as_posix()] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(root: Path) -> None:
    """Every folder 0700 and every file 0600 (see `modes`)."""
    wrong = {
        path: oct(mode) for path, mode in modes(root).items() if mode != (0o700 if (root / path).is_dir() else 0o600)
    }
    assert not wrong, wrong


@pytest.mark.parametrize("via", ["environment", "file", "argument"])
def test_the_password_is_in_neither_the_command_line_nor_the_environment(
    node_process_factory: Callable[..., NodeProcess], via: str
) -> None:
    node = node_process_factory(start=False)
    node.password_via = via
    node.start()
    cmdline, environ = proc_file(node.pid, "cmdline"), proc_file(node.pid, "environ")
    assert PASSWORD.encode() not in cmdline, cmdline
    assert PASSWORD.encode() not in environ
    assert b"SAAS_PASSWORD" not in environ
    assert b"\0service\0" in cmdline  # the node itself, not a launcher
    warning = "Warning: --password puts the password on the command line"
    assert (warning in node.stderr()) == (via == "argument"), node.stderr()
    assert (b"--password-fd" in cmdline) == (via != "file")  # started itself again, only when it had to
    status = Path(f"/proc/{node.pid}/status").read_text()
    assert "Umask:\t0077" in status


def test_the_datastore_is_private_and_an_old_one_is_tightened(
    node_process_factory: Callable[..., NodeProcess], user: Keystore, tmp_path: Path
) -> None:
    node = node_process_factory()
    node.publish(user)
    source = write_random_file(tmp_path / "content.bin", 1000)
    added = node.dor(user).add_data_object(source, user.identity, False, False, "E2ESecret", "bin")
    [content] = node.content_files()
    names = modes(node.datastore)
    assert {"nodedb.sqlite", "requests.sqlite", "dor/catalog.sqlite", "rti/jobs.sqlite", "p2p/peer.key"} <= set(
        names
    ), names
    assert_private(node.datastore)  # what the node wrote: new files 0600, folders 0700
    assert names[content.relative_to(node.datastore).as_posix()] == 0o600
    assert node.stop() == 0

    # As an older version left it: 0755/0644 everywhere, a link to a file outside, a job folder of the sandbox.
    outside = tmp_path / "outside.txt"
    outside.write_text("not the node's")
    outside.chmod(0o644)
    (node.datastore / "dor" / "link").symlink_to(outside)
    sandboxed = node.datastore / "rti" / "jobs" / "job1"
    sandboxed.mkdir()
    (sandboxed / "input.json").write_text("{}")
    for folder, _, files in os.walk(node.datastore):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(Path(folder) / name, 0o644)

    node.restart()
    assert_private(node.datastore)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644  # the link was not followed
    assert stat.S_IMODE(sandboxed.stat().st_mode) == 0o755  # left to the sandbox ...
    assert stat.S_IMODE((sandboxed / "input.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((node.datastore / "rti" / "jobs").stat().st_mode) == 0o700  # ... behind a private folder
    assert node.dor(user).get_meta(added.obj_id) is not None  # still the same node after tightening
