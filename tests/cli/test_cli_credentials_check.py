"""`saas-cli identity credentials test github|ssh`: real checks against a local git HTTP server and a real sshd.

A check reports success only when the server really let us in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def github_keystore(add_credentials, shared_keystore, git_server, closed_port: int, tmp_path_factory):
    """A keystore (read-only) with GitHub credentials for the local git server: right ones for /owner/repo,
    a wrong token for /owner/second, a wrong login for /owner/third, and credentials for a repository the server
    does not have, one whose server fails, and one on a closed port."""
    keystore = shared_keystore.copy_to(tmp_path_factory.mktemp("github") / "keystore")
    login, token = git_server.login, git_server.token
    return add_credentials(
        keystore,
        github={
            git_server.url_for("/owner/repo"): (login, token),
            git_server.url_for("/owner/second"): (login, "ghp_wrong_token"),
            git_server.url_for("/owner/third"): ("someone-else", token),
            git_server.url_for("/owner/missing"): (login, token),
            git_server.url_for("/broken/repo"): (login, token),
            git_server.url_for("/webpage/repo"): (login, token),
            f"http://127.0.0.1:{closed_port}/owner/repo": (login, token),
        },
    )


def check_github(cli, keystore, url: str, *flags: str):
    return cli(*keystore.args(), *flags, "identity", "credentials", "test", "github", "--url", url)


# -- GitHub (git smart HTTP) -----------------------------------------------------------------------


def test_github_right_credentials(cli, github_keystore, git_server) -> None:
    seen = len(git_server.requests)
    result = check_github(cli, github_keystore, git_server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Authenticated access to {git_server.url} works (login {git_server.login})."
    assert git_server.token not in result.stdout + result.stderr
    # The server really answered an authenticated git-upload-pack advertisement request.
    requests = git_server.requests[seen:]
    assert [r["path"] for r in requests] == ["/owner/repo/info/refs?service=git-upload-pack"]
    assert requests[0]["authorization"].startswith("Basic ")


def test_github_right_credentials_json(cli, github_keystore, git_server) -> None:
    result = check_github(cli, github_keystore, git_server.url + "/", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"type": "github", "url": git_server.url, "ok": True, "status": 200}


@pytest.mark.parametrize("repository", ["/owner/second", "/owner/third"], ids=["wrong-token", "wrong-login"])
def test_github_wrong_credentials(cli, github_keystore, git_server, repository: str) -> None:
    url = git_server.url_for(repository)
    result = check_github(cli, github_keystore, url)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == f"Error: 127.0.0.1 rejected the credentials for {url} (HTTP 401)"
    assert "ghp_" not in result.stderr


def test_github_repository_not_found(cli, github_keystore, git_server) -> None:
    url = git_server.url_for("/owner/missing")
    result = check_github(cli, github_keystore, url)
    assert result.returncode == 4, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "not found" in result.stderr and url in result.stderr


def test_github_server_error_is_not_success(cli, github_keystore, git_server) -> None:
    result = check_github(cli, github_keystore, git_server.url_for("/broken/repo"))
    assert result.returncode == 6, (result.stdout, result.stderr)
    assert result.stdout == ""
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: 127.0.0.1 failed to answer") and "HTTP 500" in error


def test_github_unreachable_host(cli, github_keystore, closed_port: int) -> None:
    result = check_github(cli, github_keystore, f"http://127.0.0.1:{closed_port}/owner/repo")
    assert result.returncode == 6, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Could not reach host '127.0.0.1'")
    assert "Traceback" not in result.stderr


def test_github_unknown_url_sends_nothing(cli, github_keystore, git_server) -> None:
    seen = len(git_server.requests)
    result = check_github(cli, github_keystore, git_server.url_for("/owner/other"))
    assert result.returncode == 4
    assert "No GitHub credentials" in result.stderr
    assert len(git_server.requests) == seen


def test_github_only_credentials_need_no_url(cli, add_credentials, keystore, git_server) -> None:
    add_credentials(keystore, github={git_server.url: (git_server.login, git_server.token)})
    result = cli(*keystore.args(), "identity", "credentials", "test", "github")
    assert result.returncode == 0, result.stderr
    assert f"Authenticated access to {git_server.url} works" in result.stdout


def test_github_several_credentials_need_url_without_terminal(cli, github_keystore) -> None:
    result = cli(*github_keystore.args(), "identity", "credentials", "test", "github")
    assert result.returncode == 2
    assert "--url" in result.stderr


# -- SSH (a real sshd) -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ssh_keystore(add_credentials, shared_keystore, sshd, other_ssh_key: Path, closed_port: int, tmp_path_factory):
    """A keystore (read-only) with SSH credentials for the test sshd: 'lab' works, 'stranger' has a key the
    server does not know, 'nobody' a login that does not exist, 'closed' points at a closed port."""
    keystore = shared_keystore.copy_to(tmp_path_factory.mktemp("ssh") / "keystore")
    return add_credentials(
        keystore,
        ssh={
            "lab": (sshd.host, sshd.login, sshd.key),
            "stranger": (sshd.host, sshd.login, other_ssh_key),
            "nobody": (sshd.host, "no-such-user-xyz", sshd.key),
            "closed": (f"127.0.0.1:{closed_port}", sshd.login, sshd.key),
        },
    )


@pytest.fixture
def ssh_cli(cli, ssh_path: str, tmp_path: Path):
    """`cli` with the isolated `ssh` on PATH and a private --temp-dir (to check the key file is cleaned up)."""
    temp_dir = tmp_path / "tmp"
    temp_dir.mkdir()

    def run(*args, **kwargs):
        return cli("--temp-dir", temp_dir, *args, env_extra={"PATH": ssh_path}, **kwargs)

    run.temp_dir = temp_dir  # type: ignore[attr-defined]  # a function attribute the tests read
    return run


def check_ssh(ssh_cli, keystore, name: str, *flags: str):
    return ssh_cli(*keystore.args(), *flags, "identity", "credentials", "test", "ssh", "--name", name)


def test_ssh_login_works(ssh_cli, ssh_keystore, sshd, home: Path) -> None:
    result = check_ssh(ssh_cli, ssh_keystore, "lab")
    assert result.returncode == 0, (result.stderr, sshd.log_text()[-2000:])
    assert result.stdout.strip() == f"SSH login to {sshd.login}@{sshd.host} with 'lab' works."
    assert list(ssh_cli.temp_dir.iterdir()) == []  # the temporary copy of the key is gone
    assert "[127.0.0.1]:" in (home / ".ssh" / "known_hosts").read_text()  # host keys went to the test's HOME


def test_ssh_login_works_json(ssh_cli, ssh_keystore, sshd) -> None:
    result = check_ssh(ssh_cli, ssh_keystore, "lab", "--json")
    assert result.returncode == 0, (result.stderr, sshd.log_text()[-2000:])
    assert json.loads(result.stdout) == {"type": "ssh", "name": "lab", "ok": True}


@pytest.mark.parametrize("name", ["stranger", "nobody"])
def test_ssh_rejected(ssh_cli, ssh_keystore, name: str) -> None:
    result = check_ssh(ssh_cli, ssh_keystore, name)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("Error: SSH login to ") and " failed: " in result.stderr
    assert "Permission denied" in result.stderr
    assert "PRIVATE KEY" not in result.stderr
    assert list(ssh_cli.temp_dir.iterdir()) == []


def test_ssh_closed_port(ssh_cli, ssh_keystore) -> None:
    result = check_ssh(ssh_cli, ssh_keystore, "closed")
    assert result.returncode == 6, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Connection refused" in result.stderr
    assert list(ssh_cli.temp_dir.iterdir()) == []


def test_ssh_unknown_name(ssh_cli, ssh_keystore) -> None:
    result = check_ssh(ssh_cli, ssh_keystore, "other")
    assert result.returncode == 4
    assert "No SSH credentials named 'other'" in result.stderr


def test_ssh_several_credentials_need_name_without_terminal(ssh_cli, ssh_keystore) -> None:
    result = ssh_cli(*ssh_keystore.args(), "identity", "credentials", "test", "ssh")
    assert result.returncode == 2
    assert "--name" in result.stderr


def test_github_web_page_is_not_success(cli, github_keystore, git_server) -> None:
    # A 200 that is not a git ref advertisement (e.g. a sign-in page after a redirect) proves nothing.
    result = check_github(cli, github_keystore, git_server.url_for("/webpage/repo"))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "not as a git server" in result.stderr.strip().splitlines()[-1]


def test_github_plain_http_warns_on_stderr(cli, github_keystore, git_server) -> None:
    result = check_github(cli, github_keystore, git_server.url)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"Warning: {git_server.url} is plain HTTP")
    assert "Warning" not in result.stdout
