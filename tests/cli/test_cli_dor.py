"""`saas-cli dor ...` against a running node: add (plain, archived, encrypted), add-gpp, search, meta, tag, access,
download and remove; errors and exit codes; and the prompts that fill in missing values under a pseudo-terminal.

Most tests share one node (`module_node`) and use their own data types, so they do not see each other's objects;
tests that need a node that does not know the user yet start their own with `node_factory`."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pexpect
import pytest

from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.dor.schemas import DataObject
from tests.cli.cli_support import assert_clean_error

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
DOWN = "\x1b[B"


# -- helpers ---------------------------------------------------------------------------------------------------


def transcript(child: pexpect.spawn) -> str:
    """Everything the child wrote so far, without terminal escape sequences."""
    log = child.logfile_read
    assert isinstance(log, io.StringIO)  # tests/cli/conftest.py
    return ANSI.sub("", log.getvalue())


def finish(child: pexpect.spawn) -> tuple[int | None, str]:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, transcript(child)


def answer(child: pexpect.spawn, prompt: str, text: str) -> None:
    child.expect_exact(prompt)
    child.send(text + "\r")


def printed_object(text: str, marker: str = "Data object added: ") -> dict:
    """The JSON document printed after `marker`."""
    _, found, rest = text.partition(marker)
    assert found, text
    document, _ = json.JSONDecoder().raw_decode(rest)
    return document


def added(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, (result.stdout, result.stderr)
    return printed_object(result.stdout)


def write(path: Path, content: bytes | str) -> Path:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def table_rows(stdout: str) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of a table printed after a 'Found ...' line; columns are two or more spaces apart."""
    lines = stdout.splitlines()
    headers = re.split(r"\s{2,}", lines[1].strip())
    assert set(lines[2].replace(" ", "")) == {"-"}, lines[2]
    return headers, [re.split(r"\s{2,}", line.strip()) for line in lines[3:]]


class Dor:
    """`saas-cli <keystore flags> --json|-v dor --address A <args>` for one user and one node."""

    def __init__(self, cli, keystore, address: str):
        self.cli, self.keystore, self.address = cli, keystore, address

    def __call__(self, *args, json_output: bool = False, **kwargs) -> subprocess.CompletedProcess:
        flags = self.keystore.args() if self.keystore is not None else []
        output = ["--json"] if json_output else ["-v"]  # -v: `add` prints the full record too
        return self.cli(*flags, *output, "dor", "--address", self.address, *args, **kwargs)

    def json(self, *args: str) -> Any:
        result = self(*args, json_output=True)
        assert result.returncode == 0, (result.stdout, result.stderr)
        return json.loads(result.stdout)


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(module_node, shared_keystore, shared_two_keystores, publish):
    """The module's node, which knows the user 'Foo Bar' and 'alice' (bob stays unknown to it)."""
    publish(module_node.address, shared_keystore)
    publish(module_node.address, shared_two_keystores)
    return module_node


@pytest.fixture(scope="module")
def sdk(shared_keystore, shared_two_keystores) -> dict[str, Keystore]:
    """The users' keystores loaded with the SDK, to set up objects quickly (never changed)."""
    return {
        "foo": Keystore.load(shared_keystore.path, shared_keystore.password),
        "alice": Keystore.load(shared_two_keystores.path, shared_two_keystores.password),
    }


def sdk_add(address: str, owner: Keystore, path: Path, data_type: str, restricted: bool = False) -> str:
    with DORProxy(address, keystore=owner) as proxy:
        return proxy.add_data_object(path, owner.identity, restricted, False, data_type, "json").obj_id


@pytest.fixture
def foo(cli, shared_keystore, node) -> Dor:
    return Dor(cli, shared_keystore, node.address)


@pytest.fixture
def alice(cli, shared_two_keystores, node) -> Dor:
    return Dor(cli, shared_two_keystores, node.address)


@pytest.fixture
def anonymous(cli, node) -> Dor:
    return Dor(cli, None, node.address)


# -- add and download ------------------------------------------------------------------------------------------


def test_add_publishes_an_unknown_identity(cli, shared_keystore, node_factory, tmp_path: Path) -> None:
    fresh = node_factory()
    address = "{}:{}".format(*fresh.address)
    dor = Dor(cli, shared_keystore, address)
    iid = shared_keystore.iid
    content = write(tmp_path / "a.json", '{"v": 1}')

    result = dor("add", "--data-type", "JSONObject", "--data-format", "json", content)
    obj = added(result)
    published = f"Identity {iid} published to node at {address}."
    assert result.stdout.splitlines()[0] == published  # before the object is added
    assert result.stderr == ""
    assert (obj["data_type"], obj["data_format"]) == ("JSONObject", "json")
    assert (obj["owner_iid"], obj["created"]["creators_iid"], obj["access"]) == (iid, [iid], [iid])
    assert (obj["access_restricted"], obj["content_encrypted"]) == (False, False)
    assert obj["tags"] == {"name": "a.json"}  # as the original CLI tagged it
    assert obj["c_hash"] == hashlib.sha256(content.read_bytes()).hexdigest()
    assert obj["custodian"]["identity"]["id"] == fresh.keystore.iid

    # The node knows the identity now: no second publication; --assume-creator keeps the user the only creator.
    result = dor("add", "--assume-creator", "--data-type", "JSONObject", "--data-format", "json", content)
    again = added(result)
    assert "published" not in result.stdout
    assert again["created"]["creators_iid"] == [iid]


def test_add_two_files_as_archive_and_download(foo, tmp_path: Path) -> None:
    first = write(tmp_path / "a.json", '{"a": 1}')
    second = write(tmp_path / "b.txt", "second file\n")
    temp = tmp_path / "temp"
    result = foo.cli(
        *foo.keystore.args(), "-v", "--temp-dir", temp, "dor", "--address", foo.address,
        "add", "--data-type", "Bundle", first, second,
    )  # fmt: skip
    obj = added(result)
    assert obj["data_format"] == "archive(tar.gz)"
    assert list(temp.iterdir()) == []  # the archive made for the upload is gone

    destination = tmp_path / "downloads"
    result = foo("download", "--destination", destination, obj["obj_id"])
    assert result.returncode == 0, result.stderr
    target = destination / f"{obj['obj_id']}.tar.gz"
    assert result.stdout.strip() == f"Data object {obj['obj_id']} downloaded to '{target}'."
    with tarfile.open(target, "r:gz") as tar:
        assert sorted(tar.getnames()) == ["a.json", "b.txt"]
        a_member, b_member = tar.extractfile("a.json"), tar.extractfile("b.txt")
        assert a_member is not None and b_member is not None
        assert a_member.read() == first.read_bytes()
        assert b_member.read() == second.read_bytes()


def test_encrypted_content(cli, keystore, shared_keystore, shared_two_keystores, alice, node, tmp_path: Path) -> None:
    plaintext = b'{"secret": "the plaintext 0123456789"}'
    source = write(tmp_path / "secret.json", plaintext)
    owner = Dor(cli, keystore, node.address)  # a private copy: the content key goes into it
    result = owner(
        "add", "--restrict-access", "--encrypt-content", "--data-type", "Secret", "--data-format", "json", source
    )
    obj = added(result)
    obj_id = obj["obj_id"]
    assert f"Content key for object {obj_id} added to keystore." in result.stdout
    assert (obj["access_restricted"], obj["content_encrypted"]) == (True, True)
    loaded = Keystore.load(keystore.path, keystore.password)
    assert loaded.content_keys.list() == [obj_id]

    # What the node stores is not the plaintext.
    with DORProxy(node.address, keystore=loaded) as proxy:
        raw = proxy.get_content(obj_id, loaded, tmp_path / "raw.bin").read_bytes()
    assert raw != plaintext and b"the plaintext" not in raw
    assert obj["c_hash"] == hashlib.sha256(raw).hexdigest()

    # The owner downloads the plaintext: with the key from the keystore, and (same identity, keystore without the
    # key) with the owner's key envelope stored on the node.
    for user, folder in [(owner, "with-key"), (Dor(cli, shared_keystore, node.address), "with-envelope")]:
        result = user("download", "--destination", tmp_path / folder, obj_id)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / folder / f"{obj_id}.json").read_bytes() == plaintext
    assert not Keystore.load(shared_keystore.path, shared_keystore.password).content_keys.list()

    # Others do not see it (not even its metadata) until access is granted; granting shares the key.
    assert_clean_error(Dor(cli, None, node.address)("meta", obj_id), 4)
    assert owner("access", "grant", obj_id, "--iid", shared_two_keystores.iid).returncode == 0
    result = alice("download", "--destination", tmp_path / "alice", obj_id)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "alice" / f"{obj_id}.json").read_bytes() == plaintext

    # Removing the object drops its content key from the keystore.
    result = owner("remove", obj_id)
    assert result.returncode == 0, result.stderr
    assert Keystore.load(keystore.path, keystore.password).content_keys.list() == []


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--data-format", "json", "{file}"], ["Missing value for data type", "--data-type"]),
        (["--data-type", "T", "{file}"], ["Missing value for data format", "--data-format"]),
        (["--data-type", "T", "--data-format", "json", "{missing}"], ["is not a file", "missing.json"]),
        (["--data-type", "T", "--data-format", "json"], ["Give one or more files"]),
    ],
    ids=["no-data-type", "no-data-format", "no-such-file", "no-file"],
)
def test_add_usage_errors(foo, tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    values = {"{file}": str(write(tmp_path / "a.json", "{}")), "{missing}": str(tmp_path / "missing.json")}
    result = foo("add", *[values.get(arg, arg) for arg in args])
    assert_clean_error(result, 2, *fragments)
    assert result.stdout == ""


# -- search, meta, tags ----------------------------------------------------------------------------------------


def test_search(foo, alice, anonymous, sdk, node, tmp_path: Path) -> None:
    content = write(tmp_path / "x.json", '{"x": 1}')
    mine = [sdk_add(node.address, sdk["foo"], content, "SearchA") for _ in range(2)]
    hidden = sdk_add(node.address, sdk["foo"], content, "SearchA", restricted=True)
    theirs = sdk_add(node.address, sdk["alice"], content, "SearchB")
    with DORProxy(node.address, keystore=sdk["foo"]) as proxy:
        proxy.update_tags(mine[0], sdk["foo"], [DataObject.Tag(key="colour", value="red")])

    result = anonymous("search", "--data-type", "SearchA")  # the whole network (here: one node)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Found 2 data objects in the network of {node.address}:"
    headers, rows = table_rows(result.stdout)
    assert headers == ["OBJECT ID", "NODE", "TYPE", "FORMAT", "OWNER", "ACCESS", "TAGS"]
    by_id = {row[0]: row for row in rows}
    assert set(by_id) == set(mine)  # not the restricted one: no keystore, no access
    owner = foo.keystore.iid[:16] + "…"
    custodian = node.node.iid[:16] + "…"
    assert by_id[mine[0]][1:] == [custodian, "SearchA", "json", owner, "open", "colour=red"]
    assert by_id[mine[1]][1:] == [custodian, "SearchA", "json", owner, "open"]  # no tags: an empty last column

    assert "may be more" not in result.stderr
    result = anonymous("search", "--this-node-only", "--data-type", "SearchA")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Found 2 data objects at {node.address}:"
    assert {row[0] for row in table_rows(result.stdout)[1]} == set(mine)
    for where in ([], ["--this-node-only"]):  # a node with as many matches as the limit: said, not silently cut
        result = anonymous("search", *where, "--data-type", "SearchA", "--limit", "2")
        assert result.returncode == 0 and len(table_rows(result.stdout)[1]) == 2
        assert "At most 2 results per node are shown" in result.stderr and "--limit N" in result.stderr

    def found(dor: Dor, *args: str) -> set[str]:
        return {document["obj_id"] for document in dor.json("search", *args)}

    assert found(foo, "--data-type", "SearchA") == {*mine, hidden}  # the owner sees the restricted one
    assert found(foo, "--own", "Search") == {*mine, hidden}  # a pattern matching both types, own objects only
    assert found(alice, "--own", "Search") == {theirs}
    assert found(anonymous, "--tag", "colour=red") == {mine[0]}
    documents = anonymous.json("search", "SearchB")  # a pattern
    assert [(d["obj_id"], d["owner_iid"], d["data_type"]) for d in documents] == [
        (theirs, alice.keystore.iid, "SearchB")
    ]


def test_meta_tag_and_untag(foo, anonymous, sdk, node, tmp_path: Path) -> None:
    obj_id = sdk_add(node.address, sdk["foo"], write(tmp_path / "t.json", "{}"), "Tagged")
    result = foo("tag", "--obj-id", obj_id, "n=5", "x=[1,2]", "s=hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Tags of {obj_id}: ")

    tags = foo.json("meta", obj_id)["tags"]
    assert tags == {"n": 5, "x": [1, 2], "s": "hello"}
    assert (type(tags["n"]), type(tags["x"]), type(tags["s"])) == (int, list, str)
    result = anonymous("meta", obj_id)  # human output is the same document, indented
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["tags"] == tags

    assert obj_id in {d["obj_id"] for d in anonymous.json("search", "--tag", "n=5")}
    assert obj_id not in {d["obj_id"] for d in anonymous.json("search", "--tag", 'n="5"')}  # a string, not 5

    result = foo("untag", "--obj-id", obj_id, "n", "x")
    assert result.returncode == 0, result.stderr
    assert foo.json("meta", obj_id)["tags"] == {"s": "hello"}

    # A value beyond the bounds on stored JSON is a clean error before anything is sent.
    result = foo("tag", "--obj-id", obj_id, "deep=" + "[" * 40 + "]" * 40)
    assert_clean_error(result, 2, "Invalid tag 'deep'", "nested more than 32 levels deep")
    assert foo.json("meta", obj_id)["tags"] == {"s": "hello"}


# -- access and remove -----------------------------------------------------------------------------------------


def test_access_show_grant_revoke(foo, alice, spawn_cli, sdk, node, shared_two_keystores, tmp_path: Path) -> None:
    alice_iid = shared_two_keystores.iid
    bob_iid = shared_two_keystores.others[0].iid
    obj_id = sdk_add(node.address, sdk["foo"], write(tmp_path / "r.json", '{"r": 1}'), "Restricted", restricted=True)

    result = foo("access", "show", "--obj-id", obj_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Access to {obj_id} (restricted):"
    headers, rows = table_rows(result.stdout)
    assert headers == ["IDENTITY ID", "NAME", "EMAIL", "OWNER"]
    assert rows == [[foo.keystore.iid, foo.keystore.name, foo.keystore.email, "yes"]]

    result = foo("access", "grant", obj_id, "--iid", alice_iid)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Granting access to data object {obj_id} for identity {alice_iid}...Done"
    shown = foo.json("access", "show", "--obj-id", obj_id)
    assert shown["access_restricted"] is True
    assert sorted((r["iid"], r["name"], r["owner"]) for r in shown["access"]) == sorted(
        [(foo.keystore.iid, foo.keystore.name, True), (alice_iid, "alice", False)]
    )
    assert alice.json("meta", obj_id)["obj_id"] == obj_id  # alice sees it now

    # bob's identity was never published to the node: he cannot be granted access.
    assert_clean_error(foo("access", "grant", obj_id, "--iid", bob_iid), 4, bob_iid, "not known to the node")

    # With the identity and the object given, revoking never prompts, even on a terminal.
    child = spawn_cli(
        *foo.keystore.args(), "dor", "--address", node.address, "access", "revoke", alice_iid, "--obj-id", obj_id
    )
    status, text = finish(child)
    assert status == 0, text
    assert f"Revoking access to data object {obj_id} for identity {alice_iid}...Done" in text
    assert "?" not in text and "Select" not in text
    assert [r["iid"] for r in foo.json("access", "show", "--obj-id", obj_id)["access"]] == [foo.keystore.iid]


def test_remove(foo, alice, anonymous, sdk, node, tmp_path: Path) -> None:
    obj_id = sdk_add(node.address, sdk["foo"], write(tmp_path / "d.json", "{}"), "Removable")
    result = alice("remove", obj_id)  # alice may see it (unrestricted) but does not own it
    assert_clean_error(result, 5, "owner")

    result = foo("remove", obj_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Data object {obj_id} removed."
    assert_clean_error(anonymous("meta", obj_id), 4, obj_id)
    assert_clean_error(foo("remove", obj_id), 4)
    unknown = "0" * 64
    assert_clean_error(anonymous("meta", unknown), 4, f"Data object {unknown} not found")


# -- add-gpp ---------------------------------------------------------------------------------------------------


@pytest.fixture
def adapter_repository(tmp_path: Path, cli_env: dict[str, str]) -> tuple[Path, str, str]:
    """A local git repository with an adapter descriptor in `proc/`: (path, short commit id, full commit id)."""
    repository = tmp_path / "adapter-repo"
    (repository / "proc").mkdir(parents=True)
    descriptor = {
        "name": "test-proc",
        "input": [{"name": "a", "data_type": "JSONObject", "data_format": "json"}],
        "output": [{"name": "c", "data_type": "JSONObject", "data_format": "json"}],
        "configurations": ["default"],
    }
    (repository / "proc" / "descriptor.json").write_text(json.dumps(descriptor, indent=2))

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
            cwd=repository,
            env={**cli_env, "GIT_CONFIG_NOSYSTEM": "1"},
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    git("init", "--quiet")
    git("add", ".")
    git("commit", "--quiet", "-m", "adapter")
    return repository, git("rev-parse", "--short", "HEAD"), git("rev-parse", "HEAD")


def test_add_gpp(foo, adapter_repository) -> None:
    repository, short, full = adapter_repository
    result = foo("add-gpp", "--url", repository, "--commit-id", short, "--path", "proc", "--config", "default")
    assert result.returncode == 0, (result.stdout, result.stderr)
    obj = printed_object(result.stdout, "GPP Data object added: ")
    assert (obj["data_type"], obj["data_format"], obj["owner_iid"]) == (
        "Git-Processor-Pointer",
        "json",
        foo.keystore.iid,
    )
    gpp = obj["gpp"]
    assert (gpp["source"], gpp["commit_id"], gpp["proc_path"], gpp["proc_config"]) == (
        str(repository),
        full,  # the short id is pinned as the full SHA
        "proc",
        "default",
    )
    assert gpp["proc_descriptor"]["name"] == "test-proc"
    assert foo.json("meta", obj["obj_id"])["gpp"] == gpp


@pytest.mark.parametrize(
    ("config", "code", "fragments"),
    [
        (["--config", "fast"], 2, ["Configuration 'fast' is not listed in the descriptor (available: default)"]),
        ([], 2, ["Missing value for config", "--config"]),
    ],
    ids=["unknown-config", "no-config"],
)
def test_add_gpp_errors(foo, adapter_repository, config: list[str], code: int, fragments: list[str]) -> None:
    repository, short, _ = adapter_repository
    result = foo("add-gpp", "--url", repository, "--commit-id", short, "--path", "proc", *config)
    assert_clean_error(result, code, *fragments)
    assert result.stdout == ""


# -- prompts under a pseudo-terminal ---------------------------------------------------------------------------


def test_add_asks_for_missing_values_and_to_publish(spawn_cli, shared_keystore, node_factory, tmp_path: Path) -> None:
    fresh = node_factory()
    address = "{}:{}".format(*fresh.address)
    iid = shared_keystore.iid
    content = write(tmp_path / "data.json", '{"d": 1}')
    child = spawn_cli(*shared_keystore.args(), "-v", "dor", "--address", address, "add", content)
    answer(child, "Enter data type:", "JSONObject")
    child.expect_exact("Enter data format:")
    child.expect_exact("json")  # the file's suffix is the default ...
    child.send("\r")  # ... and is taken
    child.expect_exact(f"Identity {iid} is not known to the node at {address}. Publish identity?")
    child.send("y")
    child.expect_exact(f"Identity {iid} published to node at {address}.")
    child.expect_exact("Select all identities that are co-creators of this data object:")
    child.expect_exact(fresh.keystore.identity.label())  # the node's identity is offered
    child.send("\r")  # nothing ticked: the user is the only creator
    child.expect_exact("Data object added:")
    status, text = finish(child)
    assert status == 0, text
    positions = [
        text.index(marker)
        for marker in (
            "Enter data type:",
            "Enter data format:",
            "Publish identity?",
            "published to node",
            "co-creators",
        )
    ]
    assert positions == sorted(positions)
    obj = printed_object(text)
    assert (obj["data_type"], obj["data_format"], obj["created"]["creators_iid"]) == ("JSONObject", "json", [iid])


def test_add_keeps_the_uploader_among_the_creators(spawn_cli, shared_keystore, node_factory, tmp_path: Path) -> None:
    """Ticking only another identity names it as co-creator: the uploader stays a creator (the DOR refuses an
    upload whose signer is not one of its creators)."""
    fresh = node_factory()
    address = "{}:{}".format(*fresh.address)
    content = write(tmp_path / "data.json", '{"d": 2}')
    child = spawn_cli(
        *shared_keystore.args(), "-v", "dor", "--address", address, "add", "--data-type", "JSONObject",
        "--data-format", "json", content,
    )  # fmt: skip
    child.expect_exact("Publish identity?")
    child.send("y")
    child.expect_exact("Select all identities that are co-creators of this data object:")
    child.expect_exact(fresh.keystore.identity.label())
    child.send(DOWN)  # the node's identity, after the uploader's own
    child.send(" ")  # tick it (and only it)
    child.send("\r")
    child.expect_exact("Data object added:")
    status, text = finish(child)
    assert status == 0, text
    creators = printed_object(text)["created"]["creators_iid"]
    assert creators == [shared_keystore.iid, fresh.node.iid]


def test_add_with_every_flag_does_not_prompt(spawn_cli, shared_keystore, node, tmp_path: Path) -> None:
    content = write(tmp_path / "data.json", "{}")
    child = spawn_cli(
        *shared_keystore.args(), "-v", "dor", "--address", node.address,
        "add", "--assume-creator", "--data-type", "Quiet", "--data-format", "json", content,
    )  # fmt: skip
    status, text = finish(child)
    assert status == 0, text
    assert "?" not in text.split("Data object added:")[0]  # no question was asked
    assert printed_object(text)["created"]["creators_iid"] == [shared_keystore.iid]


def test_grant_asks_for_objects_and_identity(
    spawn_cli, cli, shared_keystore, shared_two_keystores, node_factory, publish, sdk, tmp_path: Path
) -> None:
    fresh = node_factory()
    address = "{}:{}".format(*fresh.address)
    publish(address, shared_keystore)
    publish(address, shared_two_keystores)
    obj_id = sdk_add(address, sdk["foo"], write(tmp_path / "g.json", "{}"), "Grantable", restricted=True)
    alice = shared_two_keystores

    child = spawn_cli(*shared_keystore.args(), "dor", "--address", address, "access", "grant")
    child.expect_exact("Select data objects:")
    child.expect_exact(f"{obj_id} [Grantable/json]")
    child.send(" ")  # tick it
    child.expect(f"\u25cf[^\\n]*{obj_id}")
    child.send("\r")
    child.expect_exact("Select the identity who should be granted access:")
    child.expect(r"\u00bb ([^/\n]+)/")  # the pointer is on the first identity offered
    if child.match.group(1) != alice.name:
        child.send(DOWN)
        child.expect_exact(f"\u00bb {alice.name}/")
    child.send("\r")
    child.expect_exact(f"Granting access to data object {obj_id} for identity {alice.iid}...Done")
    status, text = finish(child)
    assert status == 0, text
    assert fresh.keystore.identity.label() in text  # the node's identity was offered too
    assert set(Dor(cli, shared_keystore, address).json("meta", obj_id)["access"]) == {shared_keystore.iid, alice.iid}
