"""`saas-cli dor add` / `dor download` as fast as the SDK (issue 21): the keystore is opened while the command goes
on (`Unlocking`), and the progress bar costs nothing per buffer (`Progress`: at most 10 redraws a second)."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import pexpect
import pytest

from saas.core.errors import WrongPasswordError
from saas.core.keystore import Keystore
from saas.nodedb.proxy import NodeDBProxy
from saas_cli.output import Progress
from saas_cli.unlock import Deriving, Unlocking
from tests.cli.cli_support import assert_clean_error

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MiB = 1024 * 1024


# -- Progress ----------------------------------------------------------------------------------------------------


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def drawn(master: int) -> str:
    """What was written to the terminal whose master side is `master` (all of it is there already)."""
    os.set_blocking(master, False)
    chunks = []
    while True:
        try:
            chunks.append(os.read(master, 65536))
        except (BlockingIOError, OSError):
            return b"".join(chunks).decode().replace("\r\n", "\n")


@pytest.fixture
def terminal():
    """(master fd, writable text stream on the slave side) of a pseudo-terminal."""
    master, slave = os.openpty()
    stream = os.fdopen(slave, "w")
    yield master, stream
    stream.close()
    os.close(master)


def test_progress_redraws_at_most_ten_times_a_second(terminal) -> None:
    master, stream = terminal
    clock = Clock()
    progress = Progress("Uploading", True, stream=stream, clock=clock)
    total = 1024 * MiB
    for done in range(2 * MiB, total + 1, 2 * MiB):  # 512 buffers, 1 ms apart: 0.511 s
        progress(done, total)
        clock.now += 0.001
    draws = drawn(master).split("\r")[1:]
    assert 5 <= len(draws) <= 7  # at 0.0, 0.1, ... 0.5 s, and the end
    assert draws[-1] == "Uploading [#########################] 100% 1,024.0/1,024.0 MiB\n"
    assert all(not d.endswith("\n") for d in draws[:-1])

    progress(total, total)  # the end is drawn once
    assert drawn(master) == ""


def test_progress_draws_the_end_of_a_fast_transfer_at_once(terminal) -> None:
    master, stream = terminal
    progress = Progress("Downloading", True, stream=stream, clock=Clock())  # the clock stands still
    progress(2 * MiB, 8 * MiB)
    progress(4 * MiB, 8 * MiB)
    progress(8 * MiB, 8 * MiB)
    assert drawn(master).split("\r")[1:] == [
        "Downloading [######...................]  25% 2.0/8.0 MiB",
        "Downloading [#########################] 100% 8.0/8.0 MiB\n",
    ]


def test_progress_draws_nothing_off_a_terminal_under_json_or_for_small_transfers(terminal, tmp_path: Path) -> None:
    with open(tmp_path / "stderr", "w") as file:
        Progress("Uploading", True, stream=file)(8 * MiB, 8 * MiB)
    assert (tmp_path / "stderr").read_text() == ""
    master, stream = terminal
    Progress("Uploading", False, stream=stream)(8 * MiB, 8 * MiB)  # --json
    Progress("Uploading", True, stream=stream)(MiB, MiB)  # below MIN_BYTES
    assert drawn(master) == ""


# -- Unlocking ---------------------------------------------------------------------------------------------------


def test_unlocking_gives_the_identity_at_once_and_the_keys_when_opened(shared_keystore) -> None:
    keystore = Keystore.load(shared_keystore.path, shared_keystore.password)
    began = time.perf_counter()
    unlocking = Unlocking(shared_keystore.path, keystore.identity, lambda: Keystore.load(keystore.path, "wrong"))
    assert unlocking.iid == shared_keystore.iid  # before scrypt is done
    assert time.perf_counter() - began < 0.1
    for _ in range(2):  # every use of the keys raises the error
        with pytest.raises(WrongPasswordError):
            unlocking.sign(b"message")
    with pytest.raises(WrongPasswordError):
        _ = unlocking.content_keys

    unlocking = Unlocking(
        keystore.path, keystore.identity, lambda: Keystore.load(keystore.path, shared_keystore.password)
    )
    assert keystore.identity.verify_signature(b"message", unlocking.sign(b"message"))
    assert unlocking.keystore().content_keys.list() == keystore.content_keys.list()
    assert Unlocking.opened(keystore).keystore() is keystore


def test_unlocking_with_a_derived_key_opens_the_keystore_load_opens(shared_keystore) -> None:
    keystore = Keystore.load(shared_keystore.path, shared_keystore.password)
    deriving = Deriving(keystore.path, shared_keystore.password)
    unlocking = Unlocking(keystore.path, keystore.identity, lambda: Keystore.open(keystore.path, deriving.result()))
    assert keystore.identity.verify_signature(b"message", unlocking.sign(b"message"))
    assert unlocking.keystore() is unlocking.keystore()  # opened once
    assert unlocking.keystore().content_keys.list() == keystore.content_keys.list()

    deriving = Deriving(keystore.path, "wrong")
    unlocking = Unlocking(keystore.path, keystore.identity, lambda: Keystore.open(keystore.path, deriving.result()))
    assert unlocking.iid == keystore.iid
    for _ in range(2):  # the first signing step fails, and every later one
        with pytest.raises(WrongPasswordError):
            unlocking.sign(b"message")


# -- the commands ------------------------------------------------------------------------------------------------


def test_add_with_a_wrong_password_changes_nothing_on_the_node(cli, shared_keystore, node_factory, tmp_path) -> None:
    fresh = node_factory()
    address = "{}:{}".format(*fresh.address)
    content = tmp_path / "a.bin"
    content.write_bytes(b"x" * 1000)
    flags = [*shared_keystore.args(password=False), "--password-file", str(tmp_path / "wrong")]
    (tmp_path / "wrong").write_text("not the password\n")
    os.chmod(tmp_path / "wrong", 0o600)
    add = ["add", "--data-type", "T", "--data-format", "bin", "--assume-creator", str(content)]
    result = cli(*flags, "dor", "--address", address, *add)
    assert_clean_error(result, 3, "Wrong password")
    assert "published" not in result.stdout
    with NodeDBProxy(address) as nodedb:
        assert nodedb.get_identity(shared_keystore.iid) is None  # not published

    destination = tmp_path / "downloads"
    result = cli(*flags, "dor", "--address", address, "download", "0" * 64, "--destination", str(destination))
    assert_clean_error(result, 3, "Wrong password")
    assert not destination.exists()


def test_add_and_download_draw_their_progress_on_a_terminal(
    spawn_cli, shared_keystore, module_node, publish, tmp_path: Path
) -> None:
    publish(module_node.address, shared_keystore)
    content = tmp_path / "content.bin"
    content.write_bytes(os.urandom(6 * MiB))
    flags = [*shared_keystore.args(), "dor", "--address", module_node.address]
    child = spawn_cli(*flags, "add", "--data-type", "ProgressTest", "--data-format", "bin", "--assume-creator", content)
    child.expect(pexpect.EOF)
    child.close()
    text = ANSI.sub("", child.logfile_read.getvalue())
    assert child.exitstatus == 0, text
    assert "Uploading [#########################] 100% 6.0/6.0 MiB" in text
    found = re.search(r"Object ID: ([0-9a-f]{64})", text)
    assert found, text

    destination = tmp_path / "downloads"
    child = spawn_cli(*flags, "download", found.group(1), "--destination", destination)
    child.expect(pexpect.EOF)
    child.close()
    text = ANSI.sub("", child.logfile_read.getvalue())
    assert child.exitstatus == 0, text
    assert f"Downloading {found.group(1)[:12]} [#########################] 100% 6.0/6.0 MiB" in text
    downloaded = (destination / f"{found.group(1)}.bin").read_bytes()
    assert hashlib.sha256(downloaded).digest() == hashlib.sha256(content.read_bytes()).digest()
