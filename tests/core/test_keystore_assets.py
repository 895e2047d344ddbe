"""Keystore assets (content keys, SSH and GitHub credentials): round trips, secrecy, persistence across
processes, concurrent writers and atomic writes."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from saas.core.errors import InvalidInputError
from saas.core.keystore import Keystore
from saas.core.schemas import GithubCredentials, SSHCredentials

CloneKeystore = Callable[..., Path]

SSH_KEY = "\n".join(
    [
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        "b3BlbnNzaC1rZXktdjEAAAAA-very-secret",
        "-----END OPENSSH PRIVATE KEY-----",
        "",
    ]
)
GITHUB_TOKEN = "ghp_VerySecretToken0123456789abcdefghij"


@pytest.fixture(scope="module")
def keystore(alice: Keystore, tmp_path_factory: pytest.TempPathFactory, password: str) -> Keystore:
    """A private copy of Alice's keystore for this module; tests use distinct asset names."""
    folder = tmp_path_factory.mktemp("assets")
    path = folder / alice.path.name
    path.write_bytes(alice.path.read_bytes())
    return Keystore.load(path, password)


def folder_listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# -- content keys ----------------------------------------------------------------------------------


def test_content_keys_update_get_list_remove(keystore: Keystore) -> None:
    assert keystore.content_keys.get("ck-b") is None
    keystore.content_keys.update("ck-b", "key-b")
    keystore.content_keys.update("ck-a", "key-a")
    assert keystore.content_keys.get("ck-b") == "key-b"
    assert keystore.content_keys.get("ck-a") == "key-a"
    names = keystore.content_keys.list()
    assert names == sorted(names)
    assert {"ck-a", "ck-b"} <= set(names)

    keystore.content_keys.update("ck-a", "key-a-2")  # replace
    assert keystore.content_keys.get("ck-a") == "key-a-2"

    assert keystore.content_keys.remove("ck-a") is True
    assert keystore.content_keys.get("ck-a") is None
    assert "ck-a" not in keystore.content_keys.list()
    assert keystore.content_keys.remove("ck-a") is False
    assert keystore.content_keys.remove("never-there") is False


def test_content_keys_accept_bytes_as_hex(keystore: Keystore) -> None:
    keystore.content_keys.update("ck-bytes", b"\x00\x01\xfe\xff")  # type: ignore[arg-type]  # bytes are accepted too (stored as hex)
    assert keystore.content_keys.get("ck-bytes") == "0001feff"


@pytest.mark.parametrize(("name", "value"), [("", "v"), ("ck-empty", ""), ("ck-none", None), ("ck-int", 5)])
def test_content_keys_reject_bad_values(keystore: Keystore, name: str, value: object) -> None:
    before = keystore.path.read_bytes()
    with pytest.raises(InvalidInputError):
        keystore.content_keys.update(name, value)  # type: ignore[arg-type]
    assert keystore.path.read_bytes() == before
    assert keystore.content_keys.get(name) is None


# -- credentials -----------------------------------------------------------------------------------


def test_ssh_credentials_round_trip(keystore: Keystore) -> None:
    credentials = SSHCredentials(
        host="cluster.example.org:2222", login="alice", key=SecretStr(SSH_KEY), key_path="~/.ssh/id_ed25519"
    )
    keystore.ssh_credentials.update("cluster", credentials)
    stored = keystore.ssh_credentials.get("cluster")
    assert isinstance(stored, SSHCredentials)
    assert stored.private_key() == SSH_KEY
    assert (stored.host, stored.login, stored.key_path, stored.home_path) == (
        "cluster.example.org:2222",
        "alice",
        "~/.ssh/id_ed25519",
        None,
    )
    assert stored.host_and_port() == ("cluster.example.org", 2222)
    assert "cluster" in keystore.ssh_credentials.list()
    assert keystore.ssh_credentials.remove("cluster") is True
    assert keystore.ssh_credentials.get("cluster") is None


def test_github_credentials_round_trip(keystore: Keystore) -> None:
    keystore.github_credentials.update(
        "github.com/org", GithubCredentials(login="alice", personal_access_token=SecretStr(GITHUB_TOKEN))
    )
    stored = keystore.github_credentials.get("github.com/org")
    assert isinstance(stored, GithubCredentials)
    assert stored.login == "alice"
    assert stored.token() == GITHUB_TOKEN
    assert keystore.github_credentials.list() == ["github.com/org"]


def test_credentials_never_show_their_secrets(keystore: Keystore) -> None:
    keystore.ssh_credentials.update("shown", SSHCredentials(host="h", login="u", key=SecretStr(SSH_KEY)))
    keystore.github_credentials.update("shown", GithubCredentials(login="u", personal_access_token=GITHUB_TOKEN))
    ssh, github = keystore.ssh_credentials.get("shown"), keystore.github_credentials.get("shown")
    assert ssh is not None
    assert github is not None
    for text in (repr(ssh), str(ssh), repr(github), str(github), repr(keystore), str(keystore)):
        assert "very-secret" not in text
        assert "VerySecretToken" not in text
    # and the file keeps them encrypted
    raw = keystore.path.read_text()
    assert "very-secret" not in raw
    assert "VerySecretToken" not in raw


def test_asset_kinds_are_separate(keystore: Keystore) -> None:
    keystore.content_keys.update("same-name", "a content key")
    assert keystore.ssh_credentials.get("same-name") is None
    assert keystore.github_credentials.get("same-name") is None
    assert keystore.ssh_credentials.remove("same-name") is False
    assert keystore.content_keys.get("same-name") == "a content key"


def test_credential_stores_reject_other_types(keystore: Keystore) -> None:
    github = GithubCredentials(login="u", personal_access_token=SecretStr("t"))
    with pytest.raises(InvalidInputError):
        keystore.ssh_credentials.update("wrong", github)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        keystore.github_credentials.update("wrong", {"login": "u", "personal_access_token": "t"})  # type: ignore[arg-type]
    assert keystore.ssh_credentials.get("wrong") is None
    assert keystore.github_credentials.get("wrong") is None


def test_assets_persist_across_load(keystore: Keystore, password: str) -> None:
    keystore.content_keys.update("persist", "content-key")
    keystore.ssh_credentials.update("persist", SSHCredentials(host="h", login="u", key=SecretStr(SSH_KEY)))
    keystore.github_credentials.update("persist", GithubCredentials(login="u", personal_access_token=GITHUB_TOKEN))
    reloaded = Keystore.load(keystore.path, password)
    assert reloaded.content_keys.get("persist") == "content-key"
    ssh = reloaded.ssh_credentials.get("persist")
    github = reloaded.github_credentials.get("persist")
    assert ssh is not None
    assert ssh.private_key() == SSH_KEY
    assert github is not None
    assert github.token() == GITHUB_TOKEN
    assert reloaded.content_keys.list() == keystore.content_keys.list()


def test_asset_updates_keep_the_identity_and_a_valid_signature(keystore: Keystore, alice: Keystore) -> None:
    keystore.content_keys.update("sig-check", "v")
    assert keystore.identity == alice.identity
    assert folder_listing(keystore.path.parent) == {keystore.path.name, f".{keystore.iid}.lock"}


# -- across processes ------------------------------------------------------------------------------

ADD_KEY = """
import sys
from saas.core.keystore import Keystore
path, password, name, value = sys.argv[1:5]
keystore = Keystore.load(path, password)
keystore.content_keys.update(name, value)
if len(sys.argv) > 5:
    keystore.update_profile(name=sys.argv[5])
"""


@pytest.mark.slow
def test_asset_added_by_another_process_is_persisted(
    alice: Keystore, clone_keystore: CloneKeystore, password: str, run_python
) -> None:
    path = clone_keystore(alice)
    run_python(ADD_KEY, str(path), password, "from-child", "child-value")
    assert Keystore.load(path, password).content_keys.get("from-child") == "child-value"


@pytest.mark.slow
def test_stale_instance_sees_other_process_changes_after_its_next_update(
    alice: Keystore, clone_keystore: CloneKeystore, password: str, run_python
) -> None:
    path = clone_keystore(alice)
    keystore = Keystore.load(path, password)  # loaded before the other process changes the file
    run_python(ADD_KEY, str(path), password, "from-child", "child-value", "Renamed By Child")

    keystore.content_keys.update("from-parent", "parent-value")  # read-modify-write: reloads first
    assert keystore.content_keys.get("from-child") == "child-value"
    assert keystore.content_keys.get("from-parent") == "parent-value"
    assert keystore.identity.name == "Renamed By Child"
    assert keystore.identity.nonce == 1

    reloaded = Keystore.load(path, password)
    assert reloaded.content_keys.list() == ["from-child", "from-parent"]
    assert reloaded.identity.name == "Renamed By Child"  # the parent did not write its stale record back


@pytest.mark.slow
def test_stale_instance_removes_an_asset_another_process_added(
    alice: Keystore, clone_keystore: CloneKeystore, password: str, run_python
) -> None:
    path = clone_keystore(alice)
    keystore = Keystore.load(path, password)
    run_python(ADD_KEY, str(path), password, "from-child", "child-value")
    assert keystore.content_keys.remove("from-child") is True
    assert Keystore.load(path, password).content_keys.get("from-child") is None


WRITER = """
import sys
from saas.core.keystore import Keystore
path, password, prefix, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
keystore = Keystore.load(path, password)
print("ready", flush=True)
sys.stdin.readline()  # start together
for i in range(count):
    keystore.content_keys.update(f"{prefix}-{i}", f"value-{prefix}-{i}")
print("done", flush=True)
"""


@pytest.mark.slow
def test_concurrent_processes_lose_no_update(alice: Keystore, clone_keystore: CloneKeystore, password: str) -> None:
    path = clone_keystore(alice)
    processes, count = 3, 25
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), password, f"p{n}", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    try:
        for writer in writers:
            assert writer.stdout is not None
            assert writer.stdout.readline().strip() == "ready", writer.stderr.read() if writer.stderr else ""
        for writer in writers:
            assert writer.stdin is not None
            writer.stdin.write("go\n")
            writer.stdin.flush()
        for writer in writers:
            _, stderr = writer.communicate(timeout=60)
            assert writer.returncode == 0, stderr
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()

    keystore = Keystore.load(path, password)
    expected = {f"p{n}-{i}": f"value-p{n}-{i}" for n in range(processes) for i in range(count)}
    assert keystore.content_keys.list() == sorted(expected)
    assert {name: keystore.content_keys.get(name) for name in expected} == expected
    assert folder_listing(path.parent) == {path.name, f".{keystore.iid}.lock"}  # no temp files left behind


def test_concurrent_instances_in_threads_lose_no_update(
    alice: Keystore, clone_keystore: CloneKeystore, password: str
) -> None:
    path = clone_keystore(alice)
    instances = [Keystore.load(path, password) for _ in range(2)]
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def add(keystore: Keystore, prefix: str) -> None:
        try:
            start.wait()
            for i in range(15):
                keystore.content_keys.update(f"{prefix}-{i}", prefix)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [
        threading.Thread(target=add, args=(instances[n % 2], f"t{n}")) for n in range(4)
    ]  # two threads per instance, two instances
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    expected = sorted(f"t{n}-{i}" for n in range(4) for i in range(15))
    assert Keystore.load(path, password).content_keys.list() == expected


def test_many_updates_leave_no_temp_files(alice: Keystore, clone_keystore: CloneKeystore, password: str) -> None:
    path = clone_keystore(alice)
    keystore = Keystore.load(path, password)
    for i in range(30):
        keystore.content_keys.update(f"k{i}", f"v{i}")
    for i in range(0, 30, 2):
        keystore.content_keys.remove(f"k{i}")
    keystore.update_profile(name="Many Updates")
    assert folder_listing(path.parent) == {path.name, f".{keystore.iid}.lock"}
    assert Keystore.load(path, password).content_keys.list() == sorted(f"k{i}" for i in range(1, 30, 2))
