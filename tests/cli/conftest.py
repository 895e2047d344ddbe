"""Fixtures for the `saas-cli` tests: the real `saas-cli` script run as a subprocess (or under a pseudo-terminal),
shared keystores created once per session, a local git smart-HTTP server and a real sshd on 127.0.0.1.

Every subprocess gets HOME set to a temporary directory and an explicit `--keystore`, so the user's
`~/.keystore` and `~/.ssh` are never touched. Network traffic only goes to 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.cli.cli_support import write_password_file
from tests.conftest import RunningNode
from tests.waiting import wait_until

SAAS_CLI = Path(sys.executable).parent / "saas-cli"
PASSWORD = "correct horse battery"

# -- running the CLI -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The current environment without proxies or SAAS_* defaults (tests add HOME).

    Byte code goes to a cache outside the source tree, so the ~150 `saas-cli` processes do not each compile the
    package again when PYTHONDONTWRITEBYTECODE is set."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().endswith("_PROXY")
        and not k.startswith("SAAS_")
        and not k.startswith("PYTEST_")
        and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["NO_PROXY"] = "*"
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.mktemp("pycache"))
    return env


@pytest.fixture(scope="session")
def saas_cli() -> Path:
    assert SAAS_CLI.is_file(), f"{SAAS_CLI} is missing: install the package into this venv (pip install -e .)"
    return SAAS_CLI


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def cli_env(base_env: dict[str, str], home: Path) -> dict[str, str]:
    """Environment for one test's subprocesses, with HOME in the test's tmp_path."""
    return {**base_env, "HOME": str(home)}


Run = Callable[..., subprocess.CompletedProcess]


def _runner(saas_cli: Path, env: dict[str, str]) -> Run:
    def run(*args: Any, env_extra: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(saas_cli), *map(str, args)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={**env, **(env_extra or {})},
            timeout=timeout,
        )

    return run


@pytest.fixture
def cli(saas_cli: Path, cli_env: dict[str, str]) -> Run:
    """`cli(*args)` runs `saas-cli *args` with stdin not a TTY and returns the CompletedProcess."""
    return _runner(saas_cli, cli_env)


# -- keystores -------------------------------------------------------------------------------------


@dataclass
class KeystoreInfo:
    """A keystore directory holding one identity (or more, see `others`)."""

    directory: Path
    iid: str
    name: str
    email: str
    password: str = PASSWORD
    others: list[KeystoreInfo] = field(default_factory=list)
    created: dict[str, Any] = field(default_factory=dict)  # what `identity create --json` printed

    @property
    def path(self) -> Path:
        return self.directory / f"{self.iid}.json"

    @property
    def password_file(self) -> Path:
        """A 0600 file holding the password, next to the keystore directory (created when first asked for)."""
        return write_password_file(self.directory.parent / f"{self.directory.name}.password", self.password)

    def args(self, *, password: bool = True, keystore_id: bool = True) -> list[str]:
        """The global flags that select this keystore (the password from a file: `--password` warns)."""
        args = ["--keystore", str(self.directory)]
        if keystore_id:
            args += ["--keystore-id", self.iid]
        if password:
            args += ["--password-file", str(self.password_file)]
        return args

    def copy_to(self, directory: Path) -> KeystoreInfo:
        shutil.copytree(self.directory, directory)
        return KeystoreInfo(
            directory,
            self.iid,
            self.name,
            self.email,
            self.password,
            [KeystoreInfo(directory, o.iid, o.name, o.email, o.password) for o in self.others],
        )


def create_keystores(saas_cli: Path, env: dict[str, str], specs: list[tuple[Path, str, str]]) -> list[KeystoreInfo]:
    """Create keystores (directory, name, email) with `saas-cli identity create`."""
    run = _runner(saas_cli, env)
    created = []
    for directory, name, email in specs:
        password_file = write_password_file(directory.parent / "create.password", PASSWORD)
        result = run(
            *("--keystore", directory, "--password-file", password_file, "--json"),
            *("identity", "create", "--name", name, "--email", email),
        )
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        created.append(KeystoreInfo(directory, document["id"], name, email, created=document))
    return created


@pytest.fixture(scope="session")
def _shared_keystores(
    saas_cli: Path, base_env: dict[str, str], session_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[KeystoreInfo, KeystoreInfo]:
    one = tmp_path_factory.mktemp("shared") / "keystore"
    two = tmp_path_factory.mktemp("shared2") / "keystore"
    shared, alice, bob = create_keystores(
        saas_cli,
        {**base_env, "HOME": str(session_home)},
        [(one, "Foo Bar", "foo.bar@example.com"), (two, "alice", "alice@example.com"), (two, "bob", "bob@example.com")],
    )
    alice.others.append(bob)
    return shared, alice


@pytest.fixture(scope="session")
def shared_keystore(_shared_keystores: tuple[KeystoreInfo, KeystoreInfo]) -> KeystoreInfo:
    """One keystore, created once. Read-only: tests that change it use `keystore` (a copy)."""
    return _shared_keystores[0]


@pytest.fixture(scope="session")
def shared_two_keystores(_shared_keystores: tuple[KeystoreInfo, KeystoreInfo]) -> KeystoreInfo:
    """A directory with two keystores: 'alice' (listed first) and 'bob' (in `others[0]`). Read-only."""
    return _shared_keystores[1]


@pytest.fixture
def keystore(shared_keystore: KeystoreInfo, tmp_path: Path) -> KeystoreInfo:
    """A private copy of the shared keystore that the test may change."""
    return shared_keystore.copy_to(tmp_path / "keystore")


@pytest.fixture
def two_keystores(shared_two_keystores: KeystoreInfo, tmp_path: Path) -> KeystoreInfo:
    return shared_two_keystores.copy_to(tmp_path / "keystore2")


def _add_credentials(
    keystore: KeystoreInfo,
    ssh: dict[str, tuple[str, str, Path]] | None = None,
    github: dict[str, tuple[str, str]] | None = None,
) -> KeystoreInfo:
    """Store credentials with the SDK (fast set-up for read-only fixtures; the CLI's own `add` has its tests).

    `ssh`: name -> (host, login, key file); `github`: url -> (login, token)."""
    from saas.core.keystore import Keystore
    from saas.core.schemas import GithubCredentials, SSHCredentials

    store = Keystore.load(keystore.path, keystore.password)
    for name, (host, login, key_file) in (ssh or {}).items():
        credentials = SSHCredentials(host=host, login=login, key=key_file.read_text(), key_path=str(key_file))
        store.ssh_credentials.update(name, credentials)
    for url, (login, token) in (github or {}).items():
        store.github_credentials.update(url, GithubCredentials(login=login, personal_access_token=token))
    return keystore


@pytest.fixture(scope="session")
def add_credentials() -> Callable[..., KeystoreInfo]:
    """`add_credentials(keystore, ssh={name: (host, login, key file)}, github={url: (login, token)})`."""
    return _add_credentials


# -- keys and ports --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on."""
    return free_port()


# -- a git smart-HTTP server -----------------------------------------------------------------------


@dataclass
class GitServer:
    port: int
    login: str
    token: str
    requests: list[dict[str, Any]]

    @property
    def url(self) -> str:
        return self.url_for("/owner/repo")

    def url_for(self, repository: str) -> str:
        return f"http://127.0.0.1:{self.port}{repository}"


GIT_REPOSITORIES = ("/owner/repo", "/owner/second", "/owner/third")


@pytest.fixture(scope="session")
def git_server() -> Iterator[GitServer]:
    """Answers `GET <repository>/info/refs?service=git-upload-pack` for the GIT_REPOSITORIES with 200 (a git ref
    advertisement) only when Basic auth is `login:token`, 401 otherwise; `/broken/...` answers 500; any other
    path 404; `/webpage/...` answers 200 with an HTML page."""
    login, token = "me", "ghp_TestToken0123456789abcdef"
    requests: list[dict[str, Any]] = []
    expected = "Basic " + base64.b64encode(f"{login}:{token}".encode()).decode()
    paths = {f"{repository}/info/refs?service=git-upload-pack" for repository in GIT_REPOSITORIES}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append({"path": self.path, "authorization": self.headers.get("Authorization")})
            if self.path.startswith("/broken/"):
                self._answer(500, b"internal error", "text/plain")
            elif self.path.startswith("/webpage/"):  # e.g. a sign-in page after a redirect
                self._answer(200, b"<html>Sign in</html>", "text/html")
            elif self.path not in paths:
                self._answer(404, b"Repository not found.", "text/plain")
            elif self.headers.get("Authorization") != expected:
                self._answer(401, b"Authentication failed", "text/plain", {"WWW-Authenticate": 'Basic realm="git"'})
            else:
                body = b"001e# service=git-upload-pack\n0000"
                self._answer(200, body, "application/x-git-upload-pack-advertisement")

        def _answer(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield GitServer(server.server_address[1], login, token, requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def ssh_path(tmp_path: Path) -> str:
    """A PATH whose `ssh` is the real ssh client told to keep host keys in $HOME/.ssh/known_hosts.

    OpenSSH finds `~/.ssh` through the password database, not $HOME, so without this the CLI's
    `StrictHostKeyChecking=accept-new` would add the test sshd's host key to the real user's known_hosts."""
    real_ssh = shutil.which("ssh")
    if real_ssh is None:
        pytest.fail("openssh-client not installed (no 'ssh' on PATH): scripts/test installs it")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    wrapper.write_text(
        "#!/bin/sh\n"
        'mkdir -p "$HOME/.ssh"\n'
        f'exec {real_ssh} -F /dev/null -o UserKnownHostsFile="$HOME/.ssh/known_hosts" '
        '-o GlobalKnownHostsFile=/dev/null "$@"\n'
    )
    wrapper.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"


# -- nodes, background processes and pseudo-terminals (dor, service, publish and run-node tests) ---------------


class ModuleNode(RunningNode):
    """A node on its own event loop thread (like `node_factory`'s), shared by the tests of one module; its
    `address` is the `host:port` text the CLI takes."""

    @property
    def address(self) -> str:  # type: ignore[override]
        return "{}:{}".format(*self.node.config.rest_address)

    @property
    def iid(self) -> str:
        return self.node.iid


@pytest.fixture(scope="module")
def module_node(tmp_path_factory: pytest.TempPathFactory, keystores: Callable[[str], Any]) -> Iterator[ModuleNode]:
    """A full node (in-process, real REST server on a free 127.0.0.1 port) shared by one test module.

    Tests using it must not depend on what other tests of the module added (use their own data types)."""
    from saas.config import NodeConfig
    from saas.node import Node

    keystore = keystores("cli-node")
    config = NodeConfig(
        datastore=tmp_path_factory.mktemp("module-node") / "datastore",
        keystore=keystore.path,
        password="test password",  # tests/conftest.py's PASSWORD
        rest_address=("127.0.0.1", free_port()),
        p2p_address=("127.0.0.1", free_port()),
        log_level="WARNING",
        allow_local_git=True,  # GPPs from repositories in tmp_path and the git server on 127.0.0.1
    )
    running = ModuleNode(Node(config, keystore))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def publish_identity(address: str, keystore: KeystoreInfo) -> None:
    """Publish a CLI keystore's identity (its self-signed public record) to a node, without its password."""
    from saas.core.identity import Identity
    from saas.nodedb.proxy import NodeDBProxy

    identity = Identity.model_validate(json.loads(keystore.path.read_text())["identity"])
    with NodeDBProxy(address) as proxy:
        proxy.update_identity(identity)


@pytest.fixture(scope="session")
def publish() -> Callable[[str, KeystoreInfo], None]:
    """`publish(address, keystore)`: make a node know a keystore's identity (fast set-up via the SDK)."""
    return publish_identity


@dataclass
class Background:
    """A process running in the background; its stdout is collected line by line, stderr goes to a file."""

    process: subprocess.Popen
    stderr_file: Path
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None  # collects `lines` until the end of stdout

    @property
    def stdout(self) -> str:
        return "".join(self.lines)

    @property
    def stderr(self) -> str:
        return self.stderr_file.read_text(errors="replace") if self.stderr_file.exists() else ""

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The first stdout line containing `text`; fails if the process ends or the time runs out first."""

        def printed() -> str:  # "" while not printed yet
            line = next((line for line in list(self.lines) if text in line), "")
            if not line and self.process.poll() is not None:
                self.collected()
                line = next((line for line in self.lines if text in line), "")
                if not line:
                    pytest.fail(
                        f"exited with {self.process.returncode} before printing {text!r}:\n"
                        f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
                    )
            return line

        return wait_until(
            printed,
            timeout,
            what=f"{text!r} on stdout",
            detail=lambda: f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}",
        )

    def collected(self, timeout: float = 5) -> None:
        """Wait (once the process has ended) for the reader thread to take in the last lines of stdout."""
        if self.reader is not None:
            self.reader.join(timeout)

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        """Send `sig` (default SIGTERM) and wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"did not stop within {timeout} s after signal {sig}:\n{self.stdout}\n{self.stderr}")
        self.collected()
        return code


@pytest.fixture
def background(tmp_path: Path) -> Iterator[Callable[..., Background]]:
    """`background(args, env=...)` starts a process (stdin /dev/null); any still running at teardown is killed."""
    started: list[Background] = []

    def start(args: list[Any], env: dict[str, str], cwd: Path | None = None) -> Background:
        stderr_file = tmp_path / f"stderr-{len(started)}.txt"
        with open(stderr_file, "wb") as stderr:
            process = subprocess.Popen(
                [str(a) for a in args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
                cwd=cwd,
            )
        handle = Background(process, stderr_file)

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                handle.lines.append(line)

        handle.reader = threading.Thread(target=read, daemon=True)
        handle.reader.start()
        started.append(handle)
        return handle

    yield start
    for handle in started:
        if handle.process.poll() is None:
            handle.process.kill()
            handle.process.wait()


@pytest.fixture
def spawn_cli(saas_cli: Path, cli_env: dict[str, str]) -> Iterator[Callable[..., Any]]:
    """`spawn_cli(*args)` starts `saas-cli *args` on a pseudo-terminal (a pexpect child; `child.logfile_read` is
    a StringIO with everything it wrote)."""
    import io

    import pexpect

    children: list[Any] = []
    env = {**cli_env, "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}

    def start(*args: Any, timeout: float = 20) -> Any:
        child = pexpect.spawn(
            str(saas_cli), [str(a) for a in args], env=env, encoding="utf-8", dimensions=(40, 200), timeout=timeout
        )
        child.logfile_read = io.StringIO()
        children.append(child)
        return child

    yield start
    for child in children:
        if child.isalive():
            child.terminate(force=True)
