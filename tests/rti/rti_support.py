"""Helpers for the RTI tests: git repositories built from `adapters/examples/<name>`, and `RTIEnv` (a running node
that knows alice and bob, with helpers to add GPPs, deploy processors and submit the seed's a + b job)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.rti.proxy import RTIProxy
from saas.rti.schemas import Task

EXAMPLES = Path(__file__).resolve().parents[2] / "adapters" / "examples"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.org",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.org",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def processes_of(marker: str) -> list[int]:
    """Live processes (not zombies) whose environment has SAAS_JOB_ID=<marker>: every process of a job (its id) or
    of an agent instance (`agent-<proc_id>-<index>`), wherever the sandbox put them."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("SAAS_JOB_ID") == marker and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def files_holding(root: Path, marker: bytes) -> list[Path]:
    """Files under `root` (not following links) whose bytes contain `marker`. A walk that meets a folder or file
    being removed meanwhile (a finished or cancelled job's folder) is made again: the answer is one complete walk."""
    for _ in range(100):
        try:
            return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and marker in p.read_bytes()]
        except FileNotFoundError:
            time.sleep(0.05)
    raise AssertionError(f"{root} kept changing while it was searched")


def git(path: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args],
        cwd=path,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


def adapter_repo(
    root: Path, *examples: str, extra: dict[str, str] | None = None, copies: dict[str, str] | None = None
) -> tuple[Path, str]:
    """A git repository at `root` with each example adapter in its own folder (and, for `copies`, example
    `copies[folder]` in `folder`), then the `extra` files written over them; returns (path, commit). Used by the
    tests and the benchmarks."""
    root.mkdir(parents=True)
    git(root, "init", "--quiet", "--initial-branch=main")
    for folder, name in [*((n, n) for n in examples), *(copies or {}).items()]:
        shutil.copytree(EXAMPLES / name, root / folder)
    for rel, content in (extra or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "-m", "adapters")
    return root, git(root, "rev-parse", "HEAD")


def processes_with(marker: str) -> list[int]:
    """The pids whose command line holds `marker` (anywhere on this machine; for the isolation tests)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def assert_all_blocked(report: dict[str, str]) -> None:
    """Every attack of a hostile adapter's report (adapters/examples/hostile/attack.py) was tried and blocked."""
    succeeded = {name: result for name, result in report.items() if not result.startswith("blocked")}
    assert not succeeded, succeeded
    assert len(report) >= 15, report  # every attack was tried


@dataclass
class RTIEnv:
    node: Any
    owner: Keystore  # the node's identity
    alice: Keystore
    bob: Keystore
    repo: Path
    commit: str
    tmp: Path
    restarted: list[Any] = dataclasses.field(default_factory=list)

    def restart(self) -> None:
        """Stop the in-process node and start a new one on the same datastore. The stop is graceful but leaves the
        job board as a crash would (the runner kills its processes and records nothing more)."""
        from saas.node import Node

        old = self.node
        old.stop()
        self.node = type(old)(Node(old.node.config, old.node.keystore))
        self.restarted.append(self.node)
        self.node.start()

    def rti(self, keystore: Keystore | None = None) -> RTIProxy:
        return RTIProxy(self.node.address, keystore)

    def dor(self, keystore: Keystore | None = None) -> DORProxy:
        return DORProxy(self.node.address, keystore)

    def add_gpp(
        self, example: str = "abc", config: str = "default", repo: Path | None = None, commit: str | None = None
    ) -> str:
        with self.dor(self.alice) as dor:
            gpp = dor.add_gpp_data_object(
                str(repo or self.repo), commit or self.commit, example, config, self.alice.identity
            )
        return gpp.obj_id

    def deploy(
        self, example: str = "abc", wait: bool = True, deploy_args: dict[str, Any] | None = None, **kwargs: Any
    ) -> str:
        """Add the GPP and deploy it (`deploy_args`: ssh_credentials=, backend=, partition=)."""
        proc_id = self.add_gpp(example, **kwargs)  # kwargs: config, repo, commit
        with self.rti(self.owner) as rti:
            rti.deploy(proc_id, self.owner, **(deploy_args or {}))
            if wait:
                status = rti.wait_deployed(proc_id, timeout=60, authority=self.owner)
                assert status.state == "ready", status
        return proc_id

    def output_value(self, obj_id: str, user: Keystore | None = None) -> Any:
        """The JSON content of a data object."""
        user = user or self.alice
        target = self.tmp / f"download-{os.urandom(4).hex()}"
        with self.dor(user) as dor:
            dor.get_content(obj_id, user, target)
        return json.loads(target.read_text())

    def add_json(self, value: Any, owner: Keystore | None = None, **kwargs: Any) -> str:
        owner = owner or self.alice
        path = self.tmp / f"value-{os.urandom(4).hex()}.json"
        path.write_text(json.dumps(value))
        settings: dict[str, Any] = {"access_restricted": False, "content_encrypted": False}
        settings.update(kwargs)
        with self.dor(owner) as dor:
            return dor.add_data_object(
                path, owner.identity, data_type="JSONObject", data_format="json", **settings
            ).obj_id

    def submit_abc(self, proc_id: str, a: Any = 1, b: Any = 2, user: Keystore | None = None, **out: Any) -> str:
        user = user or self.alice
        inputs: list[Any] = [
            Task.InputReference(name="a", obj_id=self.add_json({"v": a}, user)) if a is not None else None,
            Task.InputValue(name="b", value={"v": b}),
        ]
        outputs = [Task.Output(name="c", owner_iid=user.identity.id, **out)]
        with self.rti(user) as rti:
            return rti.submit_job(proc_id, [i for i in inputs if i], outputs, user).id

    def wait(self, job_id: str, user: Keystore | None = None, timeout: float = 30) -> Any:
        with self.rti(user or self.alice) as rti:
            return rti.wait_for_job(job_id, user or self.alice, timeout=timeout)
