"""Fixtures for the DOR tests: a running node that knows three users, proxies acting as each of them, files to
upload, signed raw requests, and real git repositories (built in `tmp_path`) holding small adapters."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from saas.core.keystore import Keystore
from saas.core.signing import EMPTY_BODY_SHA256, sign_request
from saas.dor.proxy import DORProxy
from saas.nodedb.proxy import NodeDBProxy

API = "/api/v1"


@dataclass
class Users:
    alice: Keystore
    bob: Keystore
    carol: Keystore


@pytest.fixture
def users(node: Any, keystores: Callable[[str], Keystore]) -> Users:
    """Three identities the node knows (published through its REST API)."""
    found = Users(keystores("alice"), keystores("bob"), keystores("carol"))
    with NodeDBProxy(node.address) as db:
        for keystore in (found.alice, found.bob, found.carol):
            db.update_identity(keystore.identity)
    return found


@pytest.fixture
def dor_as(node: Any) -> Iterator[Callable[[Keystore | None], DORProxy]]:
    """`dor_as(keystore)`: a DORProxy for the node acting as `keystore` (None: anonymous)."""
    proxies: list[DORProxy] = []

    def make(keystore: Keystore | None) -> DORProxy:
        proxy = DORProxy(node.address, keystore)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def write_file(tmp_path: Path) -> Callable[..., Path]:
    """`write_file(content, name=None)`: a file in `tmp_path/files` holding `content`."""
    folder = tmp_path / "files"
    folder.mkdir()
    counter = iter(range(1_000_000))

    def write(content: bytes, name: str | None = None) -> Path:
        path = folder / (name or f"file-{next(counter)}")
        path.write_bytes(content)
        return path

    return write


@pytest.fixture
def add(dor_as: Callable[[Keystore | None], DORProxy], write_file: Callable[..., Path], users: Users) -> Callable:
    """`add(content, owner=alice, signer=owner, **kwargs)`: upload `content` with DORProxy.add_data_object."""

    def run(content: bytes, owner: Keystore | None = None, signer: Keystore | None = None, **kwargs: Any) -> Any:
        owner = owner or users.alice
        settings: dict[str, Any] = {
            "access_restricted": False,
            "content_encrypted": False,
            "data_type": "Text",
            "data_format": "txt",
        }
        settings.update(kwargs)
        return dor_as(signer or owner).add_data_object(write_file(content), owner.identity, **settings)

    return run


@pytest.fixture
def add_output(
    node: Any, dor_as: Callable[[Keystore | None], DORProxy], write_file: Callable[..., Path], users: Users
) -> Callable:
    """`add_output(content, recipe, owner=alice, user=owner, **kwargs)`: upload `content` as the node's RTI stores
    a job output: signed by the node, with the recipe signed by it and `user`'s signed task (`claims_support`)."""
    from tests.claims_support import job_output

    def run(
        content: bytes,
        recipe: dict[str, Any],
        owner: Keystore | None = None,
        user: Keystore | None = None,
        **kwargs: Any,
    ) -> Any:
        owner = owner or users.alice
        settings: dict[str, Any] = {
            "access_restricted": False,
            "content_encrypted": False,
            "data_type": recipe["product"]["data_type"],
            "data_format": recipe["product"]["data_format"],
        }
        settings.update(kwargs)
        claim = job_output(
            node.keystore, user or owner, recipe, content, owner, restricted_access=settings["access_restricted"]
        )
        return dor_as(node.keystore).add_data_object(write_file(content), owner.identity, **settings, **claim)

    return run


def dor_files(node: Any) -> dict[str, list[Path]]:
    """The files in the node's `dor/content` and `dor/tmp` folders."""
    root = node.node.config.datastore / "dor"
    return {
        "content": sorted(p for p in (root / "content").rglob("*") if p.is_file()),
        "tmp": sorted(p for p in (root / "tmp").rglob("*") if p.is_file()),
    }


def catalog_ids(node: Any) -> set[str]:
    """Every obj_id in the node's catalog, read directly (not through the API under test)."""
    rows = node.node.dor.db.call(lambda c: c.execute("SELECT obj_id FROM objects").fetchall())
    return {r[0] for r in rows}


@pytest.fixture
def files() -> Callable[[Any], dict[str, list[Path]]]:
    return dor_files


@pytest.fixture
def catalog() -> Callable[[Any], set[str]]:
    return catalog_ids


@pytest.fixture
def send(node: Any) -> Iterator[Callable[..., httpx.Response]]:
    """`send(signer, method, path, body=b"", headers=None)`: a request to `/api/v1<path>` signed by `signer`."""
    client = httpx.Client(base_url=node.url, timeout=30, trust_env=False)

    def run(
        signer: Keystore | None,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        body_sha256: str | None = None,
    ) -> httpx.Response:
        all_headers = dict(headers or {})
        if signer is not None:
            digest = body_sha256 or (hashlib.sha256(body).hexdigest() if body else EMPTY_BODY_SHA256)
            all_headers.update(sign_request(signer, method, API + path, node.node.iid, digest))
        return client.request(method, API + path, content=body or None, headers=all_headers)

    yield run
    client.close()


def add_c_body(owner_iid: str, content: bytes, **params: Any) -> bytes:
    head = {"owner_iid": owner_iid, "data_type": "Text", "data_format": "txt", **params}
    return json.dumps(head).encode() + b"\n" + content


@pytest.fixture
def make_body() -> Callable[..., bytes]:
    return add_c_body


# -- git repositories ------------------------------------------------------------------------------------------

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.org",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.org",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


class GitRepo:
    """A real git repository in a folder; `commit(files)` writes files and commits them, returning the SHA."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "--quiet", "--initial-branch=main")

    def git(self, *args: str) -> str:
        result = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", *args],
            cwd=self.path,
            env={**os.environ, **GIT_ENV},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return result.stdout.strip()

    def commit(self, files: dict[str, str | bytes], message: str = "change") -> str:
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        self.git("add", "--all")
        self.git("commit", "--quiet", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def git_repo(tmp_path: Path) -> Callable[[str], GitRepo]:
    """`git_repo(name)`: a new, empty git repository in `tmp_path/repos/<name>`."""

    def make(name: str = "adapter") -> GitRepo:
        return GitRepo(tmp_path / "repos" / name)

    return make
