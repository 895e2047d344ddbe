"""`saas.git`, the one module for git: folder checks, askpass, redaction and clone, on real repositories. (The
source checks are tested in test_dor_sources.py, credentials end to end in test_dor_gpp*.py and the deploy tests.)"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from pydantic import SecretStr

from saas.core.errors import InvalidInputError
from saas.core.schemas import GithubCredentials
from saas.git import CloneError, RepositoryPathError, askpass_env, clone, redact, repo_folder


@pytest.mark.parametrize(
    ("path", "expected"),
    [("proc", "proc"), ("a/b", "a/b"), (".", "."), ("a/./b/", "a/b"), ("", ".")],
)
def test_repo_folder_accepts_folders_inside(path: str, expected: str) -> None:
    assert repo_folder(path) == PurePosixPath(expected)


@pytest.mark.parametrize("path", ["/etc", "..", "../x", "a/../../b", "a/..", "a\x00b"])
def test_repo_folder_refuses_the_way_out(path: str) -> None:
    with pytest.raises(RepositoryPathError, match="must be a folder inside the repository") as e:
        repo_folder(path)
    assert isinstance(e.value, InvalidInputError)  # a client mistake: 400


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        ("fatal: https://bob:tok@host/x", "tok", "fatal: https://bob:***@host/x"),
        ("tok tok", "tok", "*** ***"),
        ("nothing here", "tok", "nothing here"),
        ("no secret given", None, "no secret given"),
        ("empty secret", "", "empty secret"),
    ],
)
def test_redact(text: str, secret: str | None, expected: str) -> None:
    assert redact(text, secret) == expected


def test_askpass_answers_from_the_environment_only(tmp_path: Path) -> None:
    credentials = GithubCredentials(login="bob", personal_access_token=SecretStr("s3cret-token"))
    env = askpass_env(tmp_path, credentials)
    script = Path(env["GIT_ASKPASS"])
    assert script.parent == tmp_path
    assert stat.S_IMODE(script.stat().st_mode) == 0o700
    assert "s3cret-token" not in script.read_text()  # the file holds no secret

    def ask(prompt: str) -> str:
        result = subprocess.run([str(script), prompt], env={**os.environ, **env}, capture_output=True, text=True)
        return result.stdout.strip()

    assert ask("Username for 'https://github.com': ") == "bob"
    assert ask("Password for 'https://bob@github.com': ") == "s3cret-token"


@pytest.fixture
def source(git_repo: Callable[[str], Any]) -> Any:
    repo = git_repo("adapter")
    repo.commit({"proc/descriptor.json": "{}", "README": "hello"})
    return repo


@pytest.mark.parametrize("checkout", [True, False])
def test_clone(source: Any, tmp_path: Path, checkout: bool) -> None:
    dest = tmp_path / "clone"
    clone(str(source.path), dest, {"GIT_TERMINAL_PROMPT": "0"}, checkout=checkout, timeout=60)
    assert (dest / ".git").is_dir()
    assert (dest / "README").is_file() == checkout


def test_clone_relative_source_is_relative_to_cwd(source: Any, tmp_path: Path) -> None:
    relative = os.path.relpath(source.path, tmp_path)
    clone(relative, tmp_path / "a", {}, cwd=tmp_path)
    assert (tmp_path / "a" / "README").read_text() == "hello"
    with pytest.raises(CloneError):
        clone(relative, tmp_path / "b", {}, cwd=tmp_path / "a")  # the same text from elsewhere: no repository


def test_clone_failure_keeps_git_output_out_of_the_reason(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo-on-this-machine"
    with pytest.raises(CloneError) as e:
        clone(str(missing), tmp_path / "clone", {"GIT_TERMINAL_PROMPT": "0"})
    assert "no-such-repo-on-this-machine" in e.value.stderr  # git said which path does not exist ...
    assert e.value.reason == "git clone failed"  # ... and only the caller decides who sees it
    assert e.value.details == {}
    assert not (tmp_path / "clone").exists()
