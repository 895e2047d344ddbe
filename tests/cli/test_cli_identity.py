"""`saas-cli identity ...` without a terminal: flags, environment defaults, JSON output, errors and exit codes."""

from __future__ import annotations

import base64
import json
import re
import stat
from pathlib import Path

import pytest

from tests.cli.cli_support import assert_clean_error, write_password_file

ID = r"[0-9a-z]{64}"
HEX64 = r"[0-9a-f]{64}"
SIGNING_KEY = re.compile(rf"^EC/secp384r1/384/{HEX64}$")
ENCRYPTION_KEY = re.compile(rf"^RSA/4096/{HEX64}$")


def fill(args: list[str], keystore) -> list[str]:
    """`args` with the "{password_file}" placeholder replaced by a file holding the keystore's password."""
    return [str(keystore.password_file) if arg == "{password_file}" else arg for arg in args]


def keystores_in(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.json")) if directory.exists() else []


# -- create ----------------------------------------------------------------------------------------


def test_create_prints_identity_and_writes_private_keystore_file(cli, tmp_path: Path) -> None:
    directory = tmp_path / "ks"
    password_file = write_password_file(tmp_path / "password", "pw")
    result = cli(
        *("--keystore", directory, "--password-file", password_file),
        *("identity", "create", "--name", "foo bar", "--email", "foo@bar.com"),
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    first = re.fullmatch(rf"Identity ID: ({ID})", lines[0])  # the ID first, on its own line
    assert first is not None
    iid = first.group(1)
    assert lines[1] == "New keystore created!"
    assert lines[2] == f"- Identity: foo bar/foo@bar.com/{iid}"
    assert re.fullmatch(rf"- Signing Key: EC/secp384r1/384/{HEX64}", lines[3]), lines[3]
    assert re.fullmatch(rf"- Encryption Key: RSA/4096/{HEX64}", lines[4]), lines[4]
    path = directory / f"{iid}.json"
    assert lines[5] == f"- Keystore: {path}"
    assert len(lines) == 6

    assert keystores_in(directory) == [path]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["identity"]["id"] == iid


def test_create_json(shared_keystore) -> None:
    """What `identity create --json` printed when the session fixture created the shared keystore."""
    document = shared_keystore.created
    assert re.fullmatch(ID, document["id"])
    assert (document["name"], document["email"], document["nonce"]) == (
        shared_keystore.name,
        shared_keystore.email,
        0,
    )
    assert SIGNING_KEY.match(document["signing_key"])
    assert ENCRYPTION_KEY.match(document["encryption_key"])
    assert document["keystore"] == str(shared_keystore.path)
    assert shared_keystore.path.is_file()
    assert document["record"]["id"] == document["id"]
    assert document["record"]["signature"]
    assert "private" not in json.dumps(document).lower()


@pytest.mark.parametrize(
    ("name", "email", "field"),
    [("", "a@b.c", "name"), ("   ", "a@b.c", "name"), ("ok", "not-an-email", "email"), ("bad\x01", "a@b.c", "name")],
)
def test_create_rejects_invalid_profile(cli, tmp_path: Path, name: str, email: str, field: str) -> None:
    directory = tmp_path / "ks"
    env = {"SAAS_PASSWORD": "pw"}
    result = cli("--keystore", directory, "identity", "create", "--name", name, "--email", email, env_extra=env)
    assert_clean_error(result, 2, field)
    assert keystores_in(directory) == []


def test_create_rejects_empty_password(cli, tmp_path: Path) -> None:
    directory = tmp_path / "ks"
    result = cli("--keystore", directory, "--password", "", "identity", "create", "--name", "n", "--email", "a@b.c")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "password" in result.stderr.lower()
    assert keystores_in(directory) == []


# -- list and show ---------------------------------------------------------------------------------


def test_list_prints_count_and_table(cli, shared_two_keystores) -> None:
    alice, bob = shared_two_keystores, shared_two_keystores.others[0]
    result = cli("--keystore", alice.directory, "identity", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Found 2 keystores in '{alice.directory}':"
    assert lines[1].split() == ["NAME", "EMAIL", "KEYSTORE/IDENTITY", "ID"]
    assert lines[1].startswith("NAME ")
    assert lines[2].split() == ["----", "-----", "--------------------"]
    assert lines[3].split() == [alice.name, alice.email, alice.iid]
    assert lines[4].split() == [bob.name, bob.email, bob.iid]
    assert len(lines) == 5
    # Columns line up: every value starts where its header starts.
    for column, header in enumerate(["NAME", "EMAIL", "KEYSTORE/IDENTITY ID"]):
        start = lines[1].index(header)
        assert lines[3][start:].startswith([alice.name, alice.email, alice.iid][column])


def test_list_json(cli, shared_two_keystores) -> None:
    alice, bob = shared_two_keystores, shared_two_keystores.others[0]
    result = cli("--keystore", alice.directory, "--json", "identity", "list")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {"name": k.name, "email": k.email, "id": k.iid, "keystore": str(k.path)} for k in (alice, bob)
    ]


def test_list_empty_and_missing_directory(cli, tmp_path: Path) -> None:
    result = cli("--keystore", tmp_path / "nowhere", "identity", "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Found 0 keystores in '{tmp_path / 'nowhere'}':"
    result = cli("--keystore", tmp_path / "nowhere", "--json", "identity", "list")
    assert json.loads(result.stdout) == []


def test_list_ignores_files_that_are_not_keystores(cli, keystore) -> None:
    (keystore.directory / "notes.json").write_text('{"hello": "world"}')
    (keystore.directory / "broken.json").write_text("{not json")
    result = cli("--keystore", keystore.directory, "--json", "identity", "list")
    assert result.returncode == 0, result.stderr
    assert [entry["id"] for entry in json.loads(result.stdout)] == [keystore.iid]
    # ... but says so: a tampered keystore must not silently disappear from the list.
    assert result.stderr.startswith("Warning: not valid keystores")
    assert "broken.json" in result.stderr and "notes.json" in result.stderr


def test_show(cli, shared_keystore) -> None:
    result = cli("--keystore", shared_keystore.directory, "identity", "show")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Identity ID: {shared_keystore.iid}"  # your own ID first
    assert lines[1] == f"- Identity: {shared_keystore.name}/{shared_keystore.email}/{shared_keystore.iid}"
    assert SIGNING_KEY.match(lines[2].removeprefix("- Signing Key: "))
    assert ENCRYPTION_KEY.match(lines[3].removeprefix("- Encryption Key: "))
    assert lines[4] == "- Nonce: 0"
    assert lines[5] == f"- Keystore: {shared_keystore.path}"


def test_show_json_needs_no_password(cli, shared_two_keystores) -> None:
    bob = shared_two_keystores.others[0]
    result = cli(*bob.args(password=False), "--json", "identity", "show")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["id"], document["name"], document["email"], document["nonce"]) == (
        bob.iid,
        bob.name,
        bob.email,
        0,
    )
    assert document["keystore"] == str(bob.path)
    assert SIGNING_KEY.match(document["signing_key"]) and ENCRYPTION_KEY.match(document["encryption_key"])


# -- update ----------------------------------------------------------------------------------------


def show_json(cli, keystore) -> dict:
    result = cli(*keystore.args(password=False), "--json", "identity", "show")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_update_name_then_email(cli, keystore) -> None:
    result = cli(*keystore.args(), "identity", "update", "--name", "New Name")
    assert result.returncode == 0, result.stderr
    assert "Identity updated (nonce 1)." in result.stdout
    assert f"- Identity: New Name/{keystore.email}/{keystore.iid}" in result.stdout

    result = cli(*keystore.args(), "identity", "update", "--email", "new@example.org")
    assert result.returncode == 0, result.stderr
    assert "Identity updated (nonce 2)." in result.stdout
    shown = show_json(cli, keystore)
    assert (shown["name"], shown["email"], shown["nonce"]) == ("New Name", "new@example.org", 2)

    text = cli(*keystore.args(password=False), "identity", "show").stdout
    assert f"- Identity: New Name/new@example.org/{keystore.iid}" in text
    assert "- Nonce: 2" in text


def test_update_json_both_fields(cli, keystore) -> None:
    result = cli(*keystore.args(), "--json", "identity", "update", "--name", "A", "--email", "a@b.org")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["id"], document["name"], document["email"], document["nonce"]) == (keystore.iid, "A", "a@b.org", 1)
    assert document["record"]["nonce"] == 1
    assert show_json(cli, keystore)["record"] == document["record"]


def test_update_rejects_invalid_email_and_keeps_record(cli, keystore) -> None:
    before = keystore.path.read_bytes()
    result = cli(*keystore.args(), "identity", "update", "--email", "nope")
    assert_clean_error(result, 2, "email")
    assert keystore.path.read_bytes() == before


# -- remove ----------------------------------------------------------------------------------------


def test_remove_with_confirm(cli, keystore) -> None:
    result = cli(*keystore.args(password=False), "identity", "remove", "--confirm")
    assert result.returncode == 0, result.stderr
    assert f"Keystore {keystore.iid} removed." in result.stdout
    assert not keystore.path.exists()
    assert list(keystore.directory.iterdir()) == []  # the lock file is gone too
    assert "Found 0 keystores" in cli("--keystore", keystore.directory, "identity", "list").stdout


def test_remove_json_removes_only_the_selected_keystore(cli, two_keystores) -> None:
    bob = two_keystores.others[0]
    result = cli(*bob.args(password=False), "--json", "identity", "remove", "--confirm")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"removed": True, "id": bob.iid}
    assert keystores_in(two_keystores.directory) == [two_keystores.path]


# -- missing values without a terminal -------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["identity", "create", "--email", "a@b.c"], "--name"),
        (["identity", "create", "--name", "n"], "--email"),
        (["identity", "create", "--name", "n", "--email", "a@b.c"], "--password"),
    ],
)
def test_create_missing_value_names_its_flag(cli, tmp_path: Path, args: list[str], flag: str) -> None:
    directory = tmp_path / "ks"
    env = {} if flag == "--password" else {"SAAS_PASSWORD": "pw"}
    result = cli("--keystore", directory, *args, env_extra=env)
    assert_clean_error(result, 2, "Missing value", flag)
    assert result.stdout == ""
    assert keystores_in(directory) == []


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["identity", "remove"], "--confirm"),
        (["identity", "update"], "--name"),
        (["identity", "update", "--name", "x"], "--password"),
        (["identity", "credentials", "list"], "--password"),
        (["--password-file", "{password_file}", "identity", "credentials", "add", "ssh", "--name", "lab"], "--host"),
        (
            [
                "--password-file",
                "{password_file}",
                "identity",
                "credentials",
                "add",
                "github",
                "--url",
                "http://127.0.0.1/o/r",
            ],
            "--login",
        ),
        (
            [
                "--password-file",
                "{password_file}",
                "identity",
                "credentials",
                *("add", "github", "--url", "http://127.0.0.1/o/r", "--login", "me"),
            ],
            "--personal-access-token",
        ),
    ],
)
def test_missing_value_names_its_flag(cli, shared_keystore, args: list[str], flag: str) -> None:
    before = shared_keystore.path.read_bytes()
    result = cli("--keystore", shared_keystore.directory, *fill(args, shared_keystore))
    assert_clean_error(result, 2, "Missing value", flag)
    assert shared_keystore.path.read_bytes() == before


@pytest.mark.parametrize(
    "args",
    [
        ["identity", "show"],
        ["identity", "remove", "--confirm"],
        ["--password-file", "{password_file}", "identity", "update", "--name", "x"],
        ["--password-file", "{password_file}", "identity", "credentials", "list"],
    ],
)
def test_two_keystores_without_keystore_id_names_the_flag(cli, shared_two_keystores, args: list[str]) -> None:
    result = cli("--keystore", shared_two_keystores.directory, *fill(args, shared_two_keystores))
    assert_clean_error(result, 2, "--keystore-id")
    assert len(keystores_in(shared_two_keystores.directory)) == 2


def test_json_error_envelope_on_stdout(cli, shared_two_keystores) -> None:
    result = cli("--keystore", shared_two_keystores.directory, "--json", "identity", "show")
    assert result.returncode == 2
    envelope = json.loads(result.stdout)["error"]
    assert envelope["details"] == {"name": "keystore", "flag": "--keystore-id"}
    assert "--keystore-id" in envelope["reason"]
    assert envelope["id"]
    assert result.stderr.startswith("Error: ")


# -- errors ----------------------------------------------------------------------------------------


def test_wrong_password(cli, shared_keystore, tmp_path: Path) -> None:
    before = shared_keystore.path.read_bytes()
    password_file = write_password_file(tmp_path / "password", "wrong")
    args = ("--keystore", shared_keystore.directory, "--password-file", password_file)
    result = cli(*args, "identity", "update", "--name", "x")
    assert_clean_error(result, 3, "Wrong password")
    assert result.stderr.startswith("Error: Wrong password")
    assert result.stdout == ""
    assert shared_keystore.path.read_bytes() == before


def _flip_secret_bit(doc: dict) -> None:
    blob = bytearray(base64.b64decode(doc["secrets"]))
    blob[len(blob) // 2] ^= 0x01
    doc["secrets"] = base64.b64encode(bytes(blob)).decode()


def _tamper_identity_name(doc: dict) -> None:
    doc["identity"]["name"] = "Mallory"


def _tamper_kdf(doc: dict) -> None:
    doc["kdf"]["n"] = 2**14


def _tamper_signature(doc: dict) -> None:
    doc["signature"] = doc["signature"][:-12] + "AAAAAAAAAAA="


@pytest.mark.parametrize("tamper", [_flip_secret_bit, _tamper_identity_name, _tamper_kdf, _tamper_signature])
def test_tampered_keystore_exits_7(cli, keystore, tamper) -> None:
    doc = json.loads(keystore.path.read_text())
    tamper(doc)
    keystore.path.write_text(json.dumps(doc, indent=2))
    result = cli(*keystore.args(), "identity", "credentials", "list")
    assert_clean_error(result, 7, str(keystore.path))
    assert "modified" in result.stderr
    assert result.stdout == ""


def test_truncated_keystore_exits_7(cli, keystore) -> None:
    keystore.path.write_bytes(keystore.path.read_bytes()[:100])
    result = cli(*keystore.args(), "identity", "update", "--name", "x")
    assert_clean_error(result, 7, str(keystore.path))


@pytest.mark.parametrize("value", ["../etc", "../../etc/passwd", "A" * 64, "abc", "x" * 63 + "/"])
def test_bad_keystore_id_is_refused(cli, shared_keystore, value: str) -> None:
    result = cli("--keystore", shared_keystore.directory, "--keystore-id", value, "identity", "show")
    assert_clean_error(result, 2, "not an identity ID")
    assert result.stdout == ""


def test_unknown_keystore_id_exits_4(cli, shared_keystore) -> None:
    result = cli("--keystore", shared_keystore.directory, "--keystore-id", "0" * 64, "identity", "show")
    assert_clean_error(result, 4, "0" * 64)


def test_no_keystore_exits_4(cli, tmp_path: Path) -> None:
    env = {"SAAS_PASSWORD": "pw"}
    result = cli("--keystore", tmp_path / "empty", "identity", "credentials", "list", env_extra=env)
    assert_clean_error(result, 4, "identity create")


# -- environment defaults --------------------------------------------------------------------------


def test_environment_defaults_replace_flags(cli, two_keystores) -> None:
    bob = two_keystores.others[0]
    env = {"SAAS_KEYSTORE": str(bob.directory), "SAAS_KEYSTORE_ID": bob.iid, "SAAS_PASSWORD": bob.password}
    result = cli("--json", "identity", "update", "--name", "Robert", env_extra=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == bob.iid

    result = cli("--json", "identity", "show", env_extra=env)
    assert result.returncode == 0, result.stderr
    assert (json.loads(result.stdout)["name"], json.loads(result.stdout)["nonce"]) == ("Robert", 1)

    # Flags win over the environment.
    result = cli("--keystore-id", two_keystores.iid, "--json", "identity", "show", env_extra=env)
    assert json.loads(result.stdout)["id"] == two_keystores.iid
    result = cli("--password", "wrong", "identity", "credentials", "list", env_extra=env)
    assert result.returncode == 3
    # An empty variable counts as unset.
    result = cli("identity", "credentials", "list", env_extra={**env, "SAAS_PASSWORD": ""})
    assert_clean_error(result, 2, "--password")


def test_default_keystore_is_in_home(cli, home: Path) -> None:
    result = cli("identity", "list")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Found 0 keystores in '{home / '.keystore'}':")
