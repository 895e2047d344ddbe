"""`saas-cli identity credentials add/list/remove` without a terminal. Secrets never reach the output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOKEN = "ghp_SuperSecretToken_0123456789"
URL = "http://127.0.0.1:8123/owner/repo"


def key_body(key_file: Path) -> list[str]:
    """The base64 lines of a private key file: none of them may ever be printed."""
    return [line for line in key_file.read_text().splitlines() if line and "PRIVATE KEY" not in line]


def assert_no_secrets(result, key_file: Path | None = None, token: str = TOKEN) -> None:
    for stream in (result.stdout, result.stderr):
        assert token not in stream
        assert "PRIVATE KEY" not in stream
        if key_file is not None:
            for line in key_body(key_file):
                assert line not in stream


def add_ssh(cli, keystore, key_file: Path, name: str = "lab", host: str = "127.0.0.1:2222", login: str = "user"):
    return cli(
        *keystore.args(),
        *("identity", "credentials", "add", "ssh"),
        *("--name", name, "--host", host, "--login", login, "--key-file", key_file),
    )


def add_github(cli, keystore, url: str = URL, login: str = "me", token: str = TOKEN, json_output: bool = False):
    return cli(
        *keystore.args(),
        *(["--json"] if json_output else []),
        *("identity", "credentials", "add", "github"),
        *("--url", url, "--login", login, "--personal-access-token", token),
    )


def list_json(cli, keystore) -> list[dict]:
    result = cli(*keystore.args(), "--json", "identity", "credentials", "list")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def shared_credentials(add_credentials, shared_keystore, ssh_key: Path, tmp_path_factory):
    """A keystore (read-only) with SSH credentials 'lab' and GitHub credentials for URL."""
    keystore = shared_keystore.copy_to(tmp_path_factory.mktemp("credentials") / "keystore")
    return add_credentials(keystore, ssh={"lab": ("127.0.0.1:2222", "user", ssh_key)}, github={URL: ("me", TOKEN)})


@pytest.fixture
def with_credentials(shared_credentials, tmp_path: Path):
    """A copy of `shared_credentials` the test may change."""
    return shared_credentials.copy_to(tmp_path / "keystore")


def test_add_ssh(cli, keystore, ssh_key: Path) -> None:
    result = add_ssh(cli, keystore, ssh_key)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "SSH credentials 'lab' added (user@127.0.0.1:2222)."
    assert_no_secrets(result, ssh_key)
    assert list_json(cli, keystore) == [
        {"type": "ssh", "name": "lab", "login": "user", "host": "127.0.0.1:2222", "key_path": str(ssh_key.resolve())}
    ]
    # The key is kept encrypted: the keystore file does not hold it in clear.
    content = keystore.path.read_text()
    assert all(line not in content for line in key_body(ssh_key))


def test_add_github_normalises_url_and_replaces(cli, keystore) -> None:
    first = add_github(cli, keystore, url=URL + "/")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"GitHub credentials for {URL} added (login me)."
    second = add_github(cli, keystore, login="other", token="ghp_another_token", json_output=True)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == {"type": "github", "url": URL, "login": "other", "replaced": True}
    assert_no_secrets(first)
    assert_no_secrets(second, token="ghp_another_token")
    assert list_json(cli, keystore) == [
        {"type": "github", "name": URL, "login": "other", "host": "127.0.0.1", "key_path": None}
    ]
    content = keystore.path.read_text()
    assert TOKEN not in content and "ghp_another_token" not in content


def test_add_github_json(cli, keystore) -> None:
    result = add_github(cli, keystore, json_output=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"type": "github", "url": URL, "login": "me", "replaced": False}
    assert_no_secrets(result)


def test_list_table_never_shows_secrets(cli, shared_credentials, ssh_key: Path) -> None:
    result = cli(*shared_credentials.args(), "identity", "credentials", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Found 2 credentials:"
    assert lines[1].split() == ["TYPE", "NAME/URL", "LOGIN", "HOST"]
    assert lines[2].split() == ["----", "--------", "-----", "----"]
    assert lines[3].split() == ["ssh", "lab", "user", "127.0.0.1:2222"]
    assert lines[4].split() == ["github", URL, "me", "127.0.0.1"]
    assert len(lines) == 5
    assert_no_secrets(result, ssh_key)

    as_json = cli(*shared_credentials.args(), "--json", "identity", "credentials", "list")
    assert as_json.returncode == 0, as_json.stderr
    assert [(row["type"], row["name"]) for row in json.loads(as_json.stdout)] == [("ssh", "lab"), ("github", URL)]
    assert_no_secrets(as_json, ssh_key)


def test_credentials_persist_across_processes(cli, keystore, ssh_key: Path) -> None:
    """Each invocation is its own process: the second add must not lose the first, and a third process sees
    both."""
    assert add_ssh(cli, keystore, ssh_key, name="one").returncode == 0
    assert add_github(cli, keystore).returncode == 0
    assert [(row["type"], row["name"]) for row in list_json(cli, keystore)] == [("ssh", "one"), ("github", URL)]


def test_remove_by_names(cli, with_credentials) -> None:
    result = cli(*with_credentials.args(), "identity", "credentials", "remove", "lab", URL + "/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Removed credentials 'lab'.", f"Removed credentials '{URL}'."]
    listed = cli(*with_credentials.args(), "identity", "credentials", "list")
    assert listed.stdout.strip() == "Found 0 credentials:"


def test_remove_json(cli, with_credentials) -> None:
    result = cli(*with_credentials.args(), "--json", "identity", "credentials", "remove", URL)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"removed": [URL]}
    assert [row["name"] for row in list_json(cli, with_credentials)] == ["lab"]


def test_remove_unknown_name_removes_nothing(cli, with_credentials) -> None:
    before = with_credentials.path.read_bytes()
    result = cli(*with_credentials.args(), "identity", "credentials", "remove", "lab", "nope")
    assert result.returncode == 4
    assert result.stderr.strip() == "Error: No credentials named 'nope'; nothing removed"
    assert "Removed" not in result.stdout
    assert with_credentials.path.read_bytes() == before
    assert [row["name"] for row in list_json(cli, with_credentials)] == ["lab", URL]


def test_remove_without_names_and_without_terminal(cli, shared_credentials) -> None:
    before = shared_credentials.path.read_bytes()
    result = cli(*shared_credentials.args(), "identity", "credentials", "remove")
    assert result.returncode == 2
    assert "NAMES" in result.stderr
    assert shared_credentials.path.read_bytes() == before


def test_remove_with_nothing_stored(cli, shared_keystore) -> None:
    result = cli(*shared_keystore.args(), "identity", "credentials", "remove")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "No credentials to remove."


@pytest.mark.parametrize(
    ("kind", "options", "fragment"),
    [
        ("ssh", {"--name": "../evil"}, "Invalid name"),
        ("ssh", {"--key-file": "PUBLIC"}, "does not look like a private key"),
        ("ssh", {"--host": "  "}, "Invalid host"),
        ("github", {"--url": "ftp://127.0.0.1/owner/repo"}, "Invalid url"),
        ("github", {"--url": "http://me:pw@127.0.0.1/owner/repo"}, "credentials in the URL"),
        ("github", {"--login": "  "}, "Invalid login"),
    ],
)
def test_add_rejects_bad_values(cli, keystore, ssh_key: Path, kind: str, options: dict, fragment: str) -> None:
    values = (
        {"--name": "lab", "--host": "127.0.0.1:22", "--login": "user", "--key-file": str(ssh_key)}
        if kind == "ssh"
        else {"--url": URL, "--login": "me", "--personal-access-token": TOKEN}
    )
    values.update(options)
    if values.get("--key-file") == "PUBLIC":
        values["--key-file"] = str(ssh_key.with_suffix(".pub"))
    before = keystore.path.read_bytes()
    result = cli(*keystore.args(), "identity", "credentials", "add", kind, *[x for kv in values.items() for x in kv])
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("Error: ") and fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1  # no traceback
    assert_no_secrets(result, ssh_key)
    assert keystore.path.read_bytes() == before


def test_test_without_stored_credentials(cli, shared_keystore) -> None:
    result = cli(*shared_keystore.args(), "identity", "credentials", "test", "github")
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip() == "Error: The keystore has no GitHub credentials"
