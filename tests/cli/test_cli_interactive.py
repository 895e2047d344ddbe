"""`saas-cli` under a pseudo-terminal: the questionary prompts fill in what the command line leaves out."""

from __future__ import annotations

import io
import json
import re

import pexpect
import pytest

TIMEOUT = 20
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
DOWN, CTRL_U = "\x1b[B", "\x15"


def transcript(child: pexpect.spawn) -> str:
    """Everything the child wrote so far, without terminal escape sequences."""
    log = child.logfile_read
    assert isinstance(log, io.StringIO)  # tests/cli/conftest.py
    return ANSI.sub("", log.getvalue())


def finish(child: pexpect.spawn) -> tuple[int | None, str]:
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, transcript(child)


@pytest.fixture
def spawn(spawn_cli):
    """`spawn(*args)` starts `saas-cli *args` on a pseudo-terminal (the shared `spawn_cli` fixture)."""
    return lambda *args: spawn_cli(*args, timeout=TIMEOUT)


def answer(child: pexpect.spawn, prompt: str, text: str) -> None:
    child.expect_exact(prompt)
    child.send(text + "\r")


def test_create_asks_again_for_empty_or_mismatched_password(spawn, cli, tmp_path) -> None:
    directory = tmp_path / "ks"
    child = spawn("--keystore", directory, "identity", "create")
    answer(child, "Enter name:", "foo bar")
    answer(child, "Enter email:", "foo.bar@example.com")
    answer(child, "Enter password:", "")
    child.expect_exact("The password must not be empty.")
    answer(child, "Enter password:", "first")
    answer(child, "Re-enter password:", "second")
    child.expect_exact("Passwords do not match, try again.")
    answer(child, "Enter password:", "s3cret")
    answer(child, "Re-enter password:", "s3cret")
    child.expect_exact("New keystore created!")
    status, text = finish(child)
    assert status == 0, text
    identity = re.search(r"- Identity: foo bar/foo\.bar@example\.com/([0-9a-z]{64})\n", text)
    assert identity, text
    assert re.search(r"- Signing Key: EC/secp384r1/384/[0-9a-f]{64}\n", text)
    assert re.search(r"- Encryption Key: RSA/4096/[0-9a-f]{64}", text)
    assert "s3cret" not in text and "first" not in text  # passwords are masked
    assert list(directory.glob("*.json")) == [directory / f"{identity.group(1)}.json"]
    # The keystore opens with the password entered twice, and not with the first one.
    assert cli("--keystore", directory, "--password", "s3cret", "identity", "credentials", "list").returncode == 0
    assert cli("--keystore", directory, "--password", "first", "identity", "credentials", "list").returncode == 3


def test_create_with_invalid_email_asks_again(spawn, tmp_path) -> None:
    child = spawn("--keystore", tmp_path / "ks", "identity", "create", "--name", "n")
    answer(child, "Enter email:", "not-an-email")
    child.expect_exact("Enter an email address")  # refused; the prompt stays
    child.send(CTRL_U + "n@example.com\r")
    child.expect_exact("Enter password:")  # accepted
    child.send("\x03")
    status, text = finish(child)
    assert status == 130, text


def test_update_prompts_with_current_values(spawn, cli, keystore) -> None:
    child = spawn("--keystore", keystore.directory, "identity", "update")
    child.expect(f"Enter name:[^\\n]*{re.escape(keystore.name)}")  # the current name is the default ...
    child.send("\r")  # ... and is kept
    child.expect(f"Enter email:[^\\n]*{re.escape(keystore.email)}")
    child.send(CTRL_U + "changed@example.org\r")
    answer(child, "Enter password:", keystore.password)
    child.expect_exact("Identity updated (nonce 1).")
    status, text = finish(child)
    assert status == 0, text
    shown = json.loads(cli(*keystore.args(password=False), "--json", "identity", "show").stdout)
    assert (shown["name"], shown["email"], shown["nonce"]) == (keystore.name, "changed@example.org", 1)


def test_wrong_password_at_the_prompt(spawn, keystore) -> None:
    """A wrong password typed at the prompt is asked again, three times in all, then it is the error."""
    before = keystore.path.read_bytes()
    child = spawn("--keystore", keystore.directory, "identity", "update", "--name", "x")
    for attempt in range(3):
        answer(child, "Enter password:", f"wrong {attempt}")
        if attempt < 2:
            child.expect_exact("Wrong password, try again.")
    status, text = finish(child)
    assert status == 3, text
    assert text.count("Wrong password, try again.") == 2
    assert "Error: Wrong password" in text
    assert "Traceback" not in text
    assert keystore.path.read_bytes() == before


def test_wrong_password_then_the_right_one(spawn, cli, keystore) -> None:
    child = spawn("--keystore", keystore.directory, "identity", "update", "--name", "Second Try")
    answer(child, "Enter password:", "wrong")
    child.expect_exact("Wrong password, try again.")
    answer(child, "Enter password:", keystore.password)
    status, text = finish(child)
    assert status == 0, text
    assert "Identity updated (nonce 1)." in text


@pytest.mark.parametrize(("key", "removed"), [("n", False), ("y", True)])
def test_remove_asks_for_confirmation(spawn, keystore, key: str, removed: bool) -> None:
    child = spawn("--keystore", keystore.directory, "identity", "remove")
    child.expect_exact(f"Remove keystore {keystore.name}/{keystore.email}/{keystore.iid}?")
    child.send(key)
    status, text = finish(child)
    assert status == 0, text
    assert keystore.path.exists() is not removed
    assert ("Keystore " + keystore.iid + " removed." in text) is removed
    assert ("Nothing removed." in text) is not removed


def test_select_the_second_of_two_keystores(spawn, shared_two_keystores) -> None:
    alice, bob = shared_two_keystores, shared_two_keystores.others[0]
    child = spawn("--keystore", alice.directory, "identity", "show")
    child.expect_exact("Select the keystore:")
    child.expect_exact(f"{bob.name}/{bob.email}/{bob.iid}")  # both are offered
    child.send(DOWN)
    child.expect_exact(f"\u00bb {bob.name}/")  # the pointer moved to the second one
    child.send("\r")
    status, text = finish(child)
    assert status == 0, text
    assert f"- Identity: {bob.name}/{bob.email}/{bob.iid}" in text
    assert f"- Identity: {alice.name}/" not in text


def test_add_github_credentials(spawn, cli, keystore) -> None:
    token = "ghp_InteractiveSecret_42"
    url = "http://127.0.0.1:8123/owner/repo"
    child = spawn(*keystore.args(), "identity", "credentials", "add", "github")
    answer(child, "Enter URL of the repository:", "ftp://127.0.0.1/owner/repo")
    child.expect_exact("Enter an http(s) URL")  # refused; the prompt stays
    child.send(CTRL_U + url + "\r")
    answer(child, "Enter login:", "me")
    answer(child, "Enter personal access token:", token)
    child.expect_exact(f"GitHub credentials for {url} added (login me).")
    status, text = finish(child)
    assert status == 0, text
    assert token not in text
    listed = json.loads(cli(*keystore.args(), "--json", "identity", "credentials", "list").stdout)
    assert [(row["type"], row["name"], row["login"]) for row in listed] == [("github", url, "me")]


def test_add_ssh_credentials(spawn, cli, keystore, ssh_key) -> None:
    child = spawn(*keystore.args(), "identity", "credentials", "add", "ssh")
    answer(child, "Enter name of the SSH profile:", "lab")
    answer(child, "Enter host (host or host:port):", "127.0.0.1:2222")
    answer(child, "Enter login:", "user")
    answer(child, "Enter path to the private key file:", str(ssh_key))
    child.expect_exact("SSH credentials 'lab' added (user@127.0.0.1:2222).")
    status, text = finish(child)
    assert status == 0, text
    assert "PRIVATE KEY" not in text
    listed = json.loads(cli(*keystore.args(), "--json", "identity", "credentials", "list").stdout)
    assert [(row["type"], row["name"], row["host"]) for row in listed] == [("ssh", "lab", "127.0.0.1:2222")]


def test_remove_credentials_with_checkbox(spawn, cli, add_credentials, keystore, ssh_key) -> None:
    url = "http://127.0.0.1:8123/owner/repo"
    add_credentials(keystore, ssh={"lab": ("127.0.0.1:2222", "user", ssh_key)}, github={url: ("me", "ghp_x")})
    child = spawn(*keystore.args(), "identity", "credentials", "remove")
    child.expect_exact("Select the credentials to remove:")
    child.expect_exact(f"github: {url} (me)")
    child.send(" ")  # tick the first entry: the SSH credentials
    child.expect("\u25cf[^\n]*ssh: lab")
    child.send("\r")
    child.expect_exact("Removed credentials 'lab'.")
    status, text = finish(child)
    assert status == 0, text
    assert f"Removed credentials '{url}'" not in text
    listed = json.loads(cli(*keystore.args(), "--json", "identity", "credentials", "list").stdout)
    assert [row["name"] for row in listed] == [url]


def test_non_interactive_flag_never_prompts(spawn, tmp_path) -> None:
    directory = tmp_path / "ks"
    child = spawn(
        "--keystore", directory, "--password", "pw", "--non-interactive", "identity", "create", "--email", "a@b.c"
    )
    status, text = finish(child)
    assert status == 2, text
    assert "Error: Missing value for name (use --name)" in text
    assert "Enter name" not in text
    assert not directory.exists() or not list(directory.glob("*.json"))


@pytest.mark.parametrize("key", ["\x03", "\x04"], ids=["ctrl-c", "ctrl-d"])
def test_interrupting_a_prompt(spawn, tmp_path, key: str) -> None:
    directory = tmp_path / "ks"
    child = spawn("--keystore", directory, "identity", "create")
    child.expect_exact("Enter name:")
    child.send(key)
    status, text = finish(child)
    assert status == 130, text
    assert "Error: Interrupted" in text
    assert "Traceback" not in text
    assert not directory.exists() or not list(directory.glob("*.json"))
