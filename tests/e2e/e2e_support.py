"""Support for the end-to-end tests: real node processes started with `saas-cli service`.

A `NodeProcess` is a node run as a subprocess (stdin /dev/null, its own process
group, output to files under the test's tmp dir) on free 127.0.0.1 ports and its own datastore. It can be stopped
gracefully (SIGTERM/SIGINT), killed with SIGKILL and restarted on the same datastore and ports. `close()` tears it down:
SIGTERM, then SIGKILL to its process group after a timeout.

With `user=`, the node runs as that (unprivileged) local user through `runuser` (the test runs as root): its work
folder, a copy of its keystore and its datastore belong to that user, and the password reaches it through a 0600
password file where the CLI has `--password-file`, else through $SAAS_PASSWORD (never on its command line).
`unprivileged_user()` makes such a user and checks it can run the venv's `saas-cli`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from saas.core.identity import Identity
from saas.core.keystore import Keystore
from saas.core.signing import canonical_json
from saas.dor.proxy import DORProxy
from saas.nodedb.proxy import NodeDBProxy
from tests.waiting import WaitTimeout, wait_until

PASSWORD = "test password"  # of the `keystores` fixture in tests/conftest.py
SAAS_CLI = Path(sys.executable).parent / "saas-cli"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
MiB = 1024 * 1024


def cli_command() -> list[str]:
    """How to run `saas-cli`: the venv's script, else the module with this interpreter."""
    if SAAS_CLI.is_file():
        return [str(SAAS_CLI)]
    return [sys.executable, "-m", "saas_cli.main"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(home: Path) -> dict[str, str]:
    """The environment without proxies or SAAS_* defaults, with HOME in a temp dir and unbuffered output."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.upper().endswith("_PROXY") and not k.startswith("SAAS_") and not k.startswith("PYTEST_")
    }
    env["HOME"] = str(home)
    env["NO_PROXY"] = "*"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def port_is_free(port: int) -> bool:
    """True if a listening socket can be opened on 127.0.0.1:port (as the node itself does, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
    return True


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def write_random_file(path: Path, size: int, chunk: int = 1024 * 1024) -> Path:
    """A file of `size` random bytes, written in chunks."""
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n
    return path


class StreamingUpload:
    """A signed `POST /dor/add-c` whose body comes from a generator at a limited rate, run in a thread.

    The content is one random block repeated (`size` bytes in all); the signed body hash is the real one, so the
    upload would succeed if left alone. `sent` counts content bytes handed to httpx; `result` is the response
    document, `error` the exception if the request failed."""

    def __init__(self, proxy: DORProxy, owner: Identity, size: int, rate: float, block_size: int = MiB):
        self.proxy = proxy
        self.size = size
        self.rate = rate
        self.block = os.urandom(block_size)
        self.blocks, rest = divmod(size, block_size)
        assert rest == 0, "size must be a multiple of the block size"
        params = {
            "owner_iid": owner.id,
            "creators_iid": [],
            "data_type": "E2EStream",
            "data_format": "bin",
            "access_restricted": False,
            "content_encrypted": False,
            "license": {"by": False, "sa": False, "nc": False, "nd": False},
            "recipe": None,
            "key_envelope": None,
        }
        self.head = canonical_json(params) + b"\n"
        digest = hashlib.sha256(self.head)
        for _ in range(self.blocks):
            digest.update(self.block)
        self.body_sha256 = digest.hexdigest()
        self.sent = 0
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-upload", daemon=True)

    def _body(self) -> Iterator[bytes]:
        yield self.head
        start = time.monotonic()
        for _ in range(self.blocks):
            if self._abort.is_set():
                return
            yield self.block
            self.sent += len(self.block)
            ahead = start + self.sent / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # the pace is the behaviour: an upload at `rate` bytes per second

    def _run(self) -> None:
        try:
            response = self.proxy.request(
                "POST",
                "/dor/add-c",
                content=self._body(),
                body_sha256=self.body_sha256,
                signed=True,
                headers={
                    "content-type": "application/octet-stream",
                    "content-length": str(len(self.head) + self.size),
                },
            )
            self.result = response.json()
        except BaseException as e:
            self.error = e

    def start(self) -> StreamingUpload:
        _ = self.proxy.node_iid  # ask before streaming starts
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float = 30.0) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            self._thread.join(timeout)
        assert not self._thread.is_alive(), "the upload thread did not finish"


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds (`tests.waiting`)."""
    return wait_until(condition, timeout, interval=interval, what=what)


def cli_has_password_file() -> bool:
    """Whether `saas-cli` takes `--password-file` (else the password goes through $SAAS_PASSWORD)."""
    from saas_cli.main import build_parser

    return any("--password-file" in action.option_strings for action in build_parser()._actions)


def grant_traverse(path: Path) -> list[tuple[Path, int]]:
    """Add o+x (traverse only: no listing, no reading) to every folder above `path` that lacks it, so another local
    user can reach `path`; returns [(folder, old mode)] to restore. The folders' contents keep their modes."""
    changed = []
    for folder in reversed(path.resolve().parents):
        mode = stat.S_IMODE(folder.stat().st_mode)
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)
            changed.append((folder, mode))
    return changed


def unprivileged_user(name: str) -> tuple[pwd.struct_passwd, list[tuple[Path, int]]]:
    """The local user `name`, created (as root) when missing, able to run this venv's `saas-cli` from this
    checkout; returns it and the folder modes changed for that (see `grant_traverse`; restore them afterwards).
    Fails, saying what to do, when the user is missing and we are not root, or when it cannot run the CLI."""
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        if os.geteuid() != 0:
            pytest.fail(
                f"the local user '{name}' is missing and this test does not run as root: create it once "
                f"(sudo useradd --create-home --shell /bin/bash {name}) or run the tests as root (as CI does)"
            )
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True, capture_output=True)
        user = pwd.getpwnam(name)
    if os.geteuid() != 0:
        pytest.fail(f"running a node as '{name}' needs root (runuser): run the tests as root (as CI does)")
    # The venv, the interpreter it links to (e.g. under /root/.pyenv) and the checkout (editable install) must be
    # reachable by that user: their parent folders get o+x when they lack it (restored by the caller).
    changed: list[tuple[Path, int]] = []
    for path in {Path(sys.executable).resolve(), Path(sys.prefix), Path(sys.base_prefix), Path(__file__).parents[2]}:
        changed += grant_traverse(path)
    check = subprocess.run(
        ["runuser", "-u", name, "--", *cli_command(), "--help"], capture_output=True, text=True, timeout=60
    )
    if check.returncode != 0:
        pytest.fail(
            f"the user '{name}' cannot run {cli_command()[0]} (are the venv and the checkout readable by others?)\n"
            f"{check.stderr[-2000:]}"
        )
    return user, changed


class NodeProcess:
    """A node run by `saas-cli service` in a subprocess; restartable on the same datastore and ports. With `user`,
    run as that local user (see the module's docstring); `service_args` are added to `saas-cli service`."""

    def __init__(
        self, keystore: Keystore, work: Path, name: str, user: str | None = None, service_args: Sequence[str] = ()
    ):
        self.keystore = keystore
        self.name = name
        self.work = work
        self.user = user
        self.service_args = list(service_args)
        self.datastore = work / "datastore"
        self.home = work / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.keystore_dir = keystore.path.parent
        self.password_file: Path | None = None
        if user is not None:
            self._hand_over(user)
        self.rest_port = free_port()
        self.p2p_port = free_port()
        while self.p2p_port == self.rest_port:
            self.p2p_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # How `saas-cli` gets the keystore password: "file" (--password-file), "argument" (--password) or
        # "environment" ($SAAS_PASSWORD).
        self.password_via = "file"
        self.runs = 0
        self.stdout_path = work / "stdout-0.txt"
        self.stderr_path = work / "stderr-0.txt"
        self._proxies: list[NodeDBProxy | DORProxy] = []

    # -- addresses and clients ----------------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.rest_port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def dor_dir(self) -> Path:
        return self.datastore / "dor"

    def temp_files(self) -> list[Path]:
        """Files in <datastore>/dor/tmp (unfinished uploads)."""
        folder = self.dor_dir / "tmp"
        return sorted(folder.iterdir()) if folder.is_dir() else []

    def content_files(self) -> list[Path]:
        """Every file under <datastore>/dor/content (at any depth)."""
        folder = self.dor_dir / "content"
        return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []

    def dor(self, keystore: Keystore | None = None) -> DORProxy:
        proxy = DORProxy(self.address, keystore)
        self._proxies.append(proxy)
        return proxy

    def nodedb(self, keystore: Keystore | None = None) -> NodeDBProxy:
        proxy = NodeDBProxy(self.address, keystore)
        self._proxies.append(proxy)
        return proxy

    def publish(self, *keystores: Keystore) -> None:
        """Publish identities to the node (so they can sign requests)."""
        db = self.nodedb()
        for keystore in keystores:
            db.update_identity(keystore.identity)

    # -- running ------------------------------------------------------------------------------------------------

    def _hand_over(self, user: str) -> None:
        """Give the work folder to `user`: a copy of the keystore (0600), the password file (0600) when the CLI
        takes one, and everything owned by the user (the folder itself 0700)."""
        self.keystore_dir = self.work / "keystore"
        self.keystore_dir.mkdir(exist_ok=True)
        copy = self.keystore_dir / self.keystore.path.name
        shutil.copyfile(self.keystore.path, copy)
        copy.chmod(0o600)
        if cli_has_password_file():
            self.password_file = self.work / "password"
            self.password_file.write_text(PASSWORD)
            self.password_file.chmod(0o600)
        entry = pwd.getpwnam(user)
        self.work.chmod(0o700)
        for folder, dirs, files in os.walk(self.work):
            os.chown(folder, entry.pw_uid, entry.pw_gid)
            for name in files + dirs:
                os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def command(self) -> list[str]:
        if self.user is None:
            secret = self.password_args()
        elif self.password_file is not None:
            secret = ["--password-file", str(self.password_file)]
        else:
            secret = []  # $SAAS_PASSWORD (see spawn)
        return [
            *cli_command(),
            "--keystore",
            str(self.keystore_dir),
            "--keystore-id",
            self.keystore.iid,
            *secret,
            "--non-interactive",
            "service",
            "--use-defaults",
            "--type",
            "full",
            "--datastore",
            str(self.datastore),
            "--rest-address",
            f"127.0.0.1:{self.rest_port}",
            "--p2p-address",
            f"127.0.0.1:{self.p2p_port}",
            "--allow-local-git",  # GPPs from repositories in tmp_path
            *self.service_args,
        ]

    def password_args(self) -> list[str]:
        """The global password option for `password_via` (none for the environment)."""
        if self.password_via == "argument":
            return ["--password", PASSWORD]
        if self.password_via == "file":
            path = self.work / "password"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(PASSWORD + "\n")
            return ["--password-file", str(path)]
        return []

    def env(self) -> dict[str, str]:
        """The node's environment: `clean_env`, with $SAAS_PASSWORD if `password_via` says so."""
        env = clean_env(self.home)
        if self.password_via == "environment":
            env["SAAS_PASSWORD"] = PASSWORD
        return env

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def node_pid(self) -> int:
        """The pid of the node itself (with `user`, `pid` is runuser's: the node is its child)."""
        if self.user is None:
            return self.pid
        children = wait_for(lambda: psutil.Process(self.pid).children(), 10, "the node process under runuser")
        return int(children[0].pid)

    def spawn(self, command: list[str] | None = None) -> subprocess.Popen[bytes]:
        """Start the process (without waiting for it to be ready)."""
        assert not self.running, "the node is still running"
        self.runs += 1
        self.stdout_path = self.work / f"stdout-{self.runs}.txt"
        self.stderr_path = self.work / f"stderr-{self.runs}.txt"
        argv = command or self.command()
        env = self.env()
        if self.user is not None:
            # -m: keep this environment (HOME in the work folder) instead of the user's login one
            argv = ["runuser", "-m", "-u", self.user, "--", *argv]
            if self.password_file is None:
                env["SAAS_PASSWORD"] = PASSWORD
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=self.work,
                start_new_session=True,  # its own process group: signals from the test only
            )
        return self.proc

    def start(self, timeout: float = READY_TIMEOUT) -> NodeProcess:
        first = self.runs == 0
        for attempt in range(3 if first else 1):
            self.spawn()
            if first and attempt < 2 and self._lost_port_race():
                # A port free_port() found was taken before the node bound it: pick new ones (first start only;
                # a restart keeps its ports).
                self.rest_port, self.p2p_port = free_port(), free_port()
                continue
            break
        self.wait_ready(timeout)
        return self

    def _lost_port_race(self, within: float = 10.0) -> bool:
        """True if the process exits at start-up because a port is in use (it is reaped then)."""
        assert self.proc is not None
        proc = self.proc

        def outcome() -> tuple[bool] | None:  # (lost?) once the start-up went one way or the other
            if proc.poll() is not None:
                return ("Cannot listen on" in self.stderr(),)
            return (False,) if "Created '" in self.stdout() else None

        try:
            (lost,) = wait_until(outcome, within, interval=0.02, what=f"node '{self.name}' to start or exit")
        except WaitTimeout:
            return False  # still starting: not a lost race (wait_ready judges the rest)
        return lost

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until GET /api/v1/db/node answers 200; fail with the process output otherwise."""
        proc = self.proc
        assert proc is not None
        with httpx.Client(trust_env=False, timeout=1.0) as client:

            def answers() -> bool:
                code = proc.poll()
                if code is not None:
                    pytest.fail(f"node '{self.name}' exited with {code} before it answered\n{self.output()}")
                return client.get(f"{self.url}/api/v1/db/node").status_code == 200

            try:
                wait_until(
                    answers,
                    timeout,
                    interval=0.02,
                    what=f"node '{self.name}' to answer",
                    ignore=(httpx.TransportError,),
                )
            except WaitTimeout:
                self.kill()
                pytest.fail(f"node '{self.name}' did not answer within {timeout} s\n{self.output()}")

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def output(self) -> str:
        return f"--- stdout ---\n{self.stdout()}--- stderr ---\n{self.stderr()}"

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self, only_the_node: bool = False) -> None:
        """SIGKILL the node's process group (or, `only_the_node`, the node alone, as `kill -9 <pid>` or the OOM
        killer would: what it started lives on) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if only_the_node:
                    os.kill(self.proc.pid, signal.SIGKILL)
                else:
                    os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(STOP_TIMEOUT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Stop gracefully with `sig`; SIGKILL after `timeout`. Returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def restart(self, timeout: float = READY_TIMEOUT) -> NodeProcess:
        """Start again on the same datastore and ports (stop or kill first)."""
        return self.start(timeout)

    def close(self) -> None:
        for proxy in self._proxies:
            proxy.close()
        self._proxies.clear()
        if self.running:
            self.stop()
