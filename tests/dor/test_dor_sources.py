"""add-gpp fetches only what the node allows (issue 14, item 8), tried as an attacker would: a node without
`allow_local_git` refuses local paths, file://, plain http, loopback, private and link-local addresses (IPv4, IPv6,
IPv4 inside IPv6, host names that resolve to them) with 403 before git runs; a listener on loopback sees no
connection; redirects are not followed; errors do not tell a caller other than the node owner what exists on the
node. The checks themselves (`saas.git`) are tested directly too."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from saas.core.errors import RemoteError
from saas.git import (
    GitSourceRefusedError,
    UnsupportedSourceError,
    git_env,
    is_public,
    parse_source,
)
from tests.dor.test_dor_gpp import adapter_files


@pytest.fixture
def node(node_factory: Callable[..., Any]) -> Any:
    """A node with the default git sources (https and ssh to public addresses)."""
    return node_factory("default-sources", allow_local_git=False)


@pytest.fixture
def repo(git_repo: Callable) -> Any:
    repository = git_repo("adapter")
    repository.head = repository.commit(adapter_files("proc"), "adapter")
    return repository


class Listener:
    """A TCP listener on 127.0.0.1 that counts the connections it gets (an internal service to be reached)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    running = Listener()
    yield running
    running.close()


def add_gpp(node: Any, signer: Any, source: str, commit: str = "a" * 40) -> Any:
    from saas.dor.proxy import DORProxy

    with DORProxy(node.address, signer) as dor:
        return dor.add_gpp_data_object(source, commit, "proc", "default", signer.identity)


def refused(node: Any, signer: Any, source: str, commit: str = "a" * 40) -> RemoteError:
    with pytest.raises(RemoteError) as error:
        add_gpp(node, signer, source, commit)
    return error.value


def publish(node: Any, *keystores: Any) -> None:
    from saas.nodedb.proxy import NodeDBProxy

    with NodeDBProxy(node.address) as db:
        for keystore in keystores:
            db.update_identity(keystore.identity)


ATTACKS = [
    "https://127.0.0.1:{port}/repo.git",
    "https://localhost:{port}/repo.git",  # a host name that resolves to loopback
    "https://[::1]:{port}/repo.git",
    "https://[::ffff:127.0.0.1]:{port}/repo.git",  # IPv4-mapped IPv6
    "https://[2002:7f00:1::]:{port}/repo.git",  # 6to4 of 127.0.0.1
    "https://2130706433:{port}/repo.git",  # 127.0.0.1 as one number
    "https://127.1:{port}/repo.git",
    "https://0.0.0.0:{port}/repo.git",
    "https://10.1.2.3/repo.git",
    "https://192.168.0.1/repo.git",
    "https://172.16.0.1/repo.git",
    "https://100.64.0.1/repo.git",  # shared address space
    "https://169.254.169.254/latest/meta-data",  # cloud metadata (link-local)
    "https://[fe80::1]/repo.git",
    "https://[fd00::1]/repo.git",
    "https://224.0.0.1/repo.git",
    "ssh://127.0.0.1:{port}/repo.git",
    "ssh://git@localhost:{port}/repo.git",
    "git@127.0.0.1:repo.git",
    "git@[::1]:repo.git",
    "localhost:repo.git",
    "http://127.0.0.1:{port}/repo.git",
    "http://example.org/repo.git",  # plain http: only with --allow-local-git
]


@pytest.mark.parametrize("template", ATTACKS)
def test_private_addresses_and_plain_http_are_refused_without_the_flag(
    node: Any, users: Any, catalog: Callable, files: Callable, listener: Listener, template: str
) -> None:
    error = refused(node, users.alice, template.format(port=listener.port))
    assert error.status == 403, error.reason
    assert "--allow-local-git" in error.reason
    assert listener.connections == 0  # git never ran
    assert catalog(node) == set() and files(node) == {"content": [], "tmp": []}


def test_local_paths_and_file_urls_are_refused_without_the_flag(
    node: Any, users: Any, repo: Any, catalog: Callable, tmp_path: Path
) -> None:
    for signer in (users.alice, node.keystore):  # the node owner too: it is the node's setting
        for source in (str(repo.path), repo.path.as_uri(), f"file:{repo.path}", "./repos/adapter"):
            error = refused(node, signer, source, repo.head)
            assert error.status == 403, (source, error.reason)
            assert "local paths" in error.reason and "--allow-local-git" in error.reason
    assert catalog(node) == set()


def test_a_missing_local_path_looks_like_an_existing_one(node: Any, users: Any, repo: Any, tmp_path: Path) -> None:
    (tmp_path / "not-a-repo").mkdir()
    reasons = set()
    for path in (repo.path, tmp_path / "not-a-repo", tmp_path / "no-such-folder", Path("/etc")):
        for source in (str(path), path.as_uri()):
            error = refused(node, users.alice, source)
            assert error.status == 403
            assert str(path) not in error.reason
            reasons.add((error.status, error.reason, repr(error.details)))
    assert len(reasons) == 1


@pytest.mark.parametrize("template", ["ext::sh -c touch% {marker}", "fd::17", "git://github.com/x/y.git", "-u x"])
def test_other_transports_are_400(node: Any, users: Any, tmp_path: Path, template: str) -> None:
    marker = tmp_path / "pwned"
    error = refused(node, users.alice, template.format(marker=marker))
    assert error.status == 400
    assert not marker.exists()


# -- a node with --allow-local-git: git runs, but only the node owner reads what git said --------------------------


@pytest.fixture
def local_node(node_factory: Callable[..., Any], users: Any) -> Any:
    running = node_factory("local-sources", allow_local_git=True)
    publish(running, users.alice)
    return running


def test_with_the_flag_local_repositories_work(local_node: Any, users: Any, repo: Any) -> None:
    gpp = add_gpp(local_node, users.alice, str(repo.path), repo.head)
    assert gpp.gpp.commit_id == repo.head
    assert add_gpp(local_node, users.alice, repo.path.as_uri(), repo.head).gpp.commit_id == repo.head


def test_with_the_flag_git_errors_only_for_the_node_owner(local_node: Any, users: Any, tmp_path: Path) -> None:
    (tmp_path / "not-a-repo").mkdir()
    (tmp_path / "not-a-repo" / "secret.txt").write_text("x")
    seen = set()
    for name in ("not-a-repo", "no-such-folder"):
        path = tmp_path / name
        error = refused(local_node, users.alice, str(path))
        assert error.status == 400
        assert "fatal" not in error.reason and "does not" not in error.reason and "exist" not in error.reason
        seen.add((error.status, error.reason.replace(str(path), "<source>"), repr(error.details)))
        owner = refused(local_node, local_node.keystore, str(path))
        assert owner.status == 400 and "fatal" in owner.reason  # the node owner reads git's message
    assert len(seen) == 1  # a missing folder and an existing one look the same to others


def test_redirects_are_not_followed(local_node: Any, users: Any, listener: Listener) -> None:
    """A repository URL that redirects (here to a loopback service; for a public URL, anywhere) is not followed."""
    target = f"http://127.0.0.1:{listener.port}/internal.git"

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", target + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        error = refused(local_node, local_node.keystore, f"http://127.0.0.1:{server.server_address[1]}/repo.git")
    finally:
        server.shutdown()
        server.server_close()
    assert error.status in (400, 502)
    assert listener.connections == 0


# -- the checks ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("::127.0.0.1", False),
        ("64:ff9b::7f00:1", False),
        ("2002:7f00:1::", False),
        ("2002:808:808::", True),
        ("10.0.0.1", False),
        ("169.254.1.1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("255.255.255.255", False),
        ("224.0.0.1", False),
        ("ff02::1", False),
    ],
)
def test_is_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize(
    ("source", "kind", "host"),
    [
        ("https://github.com/org/repo.git", "https", "github.com"),
        ("https://user@GitHub.com:8443/org/repo", "https", "github.com"),
        ("ssh://git@github.com/org/repo.git", "ssh", "github.com"),
        ("git@github.com:org/repo.git", "ssh", "github.com"),
        ("git@[2001:db8::1]:org/repo.git", "ssh", "2001:db8::1"),
        ("http://example.org/repo", "http", "example.org"),
        ("file:///srv/repo", "file", None),
        ("/srv/repo", "local", None),
        ("./repo", "local", None),
        ("repo", "local", None),
        ("dir/with:colon", "local", None),
    ],
)
def test_parse_source(source: str, kind: str, host: str | None) -> None:
    parsed = parse_source(source)
    assert (parsed.kind, parsed.host) == (kind, host)


@pytest.mark.parametrize(
    "source",
    ["", "-u x", "ext::sh", "fd::3", "git://github.com/x", "ftp://example.org/x", "https:///x", "https://-x/y",
     "https://a b/x", "https://exa\x00mple.org/x", "git@-oProxyCommand=x:y", "https://[::1/x"],
)  # fmt: skip
def test_unsupported_sources(source: str) -> None:
    with pytest.raises(UnsupportedSourceError):
        git_env(source, allow_local=True)


def test_git_env() -> None:
    env = git_env("https://127.0.0.1/x.git", allow_local=True)
    assert env["GIT_ALLOW_PROTOCOL"] == "https:ssh:http:file"
    config = {env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"] for i in range(int(env["GIT_CONFIG_COUNT"]))}
    assert config["http.followRedirects"] == "false"
    with pytest.raises(GitSourceRefusedError):
        git_env("https://localhost/x.git", allow_local=False)
    with pytest.raises(GitSourceRefusedError):
        git_env("/srv/repo", allow_local=False)
