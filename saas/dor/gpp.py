"""Git-Processor-Pointers: clone an adapter repository at a commit and read and validate its descriptor.

Security: the repository URL is untrusted. Only the sources the node allows are fetched (`saas.git`:
https and ssh to public addresses; local ones only with `allow_local_git`), the token of GitHub credentials
reaches git through `GIT_ASKPASS` and the environment of that one git process (never the command line, a file, a
log or a response), and the descriptor folder must stay inside the clone. git's own output (which can tell what
exists on the node) is in an error only for the node owner (`detail`). Everything here blocks: call it in a
worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from saas.core.bounded_json import check_json
from saas.core.errors import DORError, InvalidInputError, UnreachableError
from saas.core.schemas import GithubCredentials
from saas.dor.schemas import (
    MAX_AGENT_INSTANCES,
    MAX_AGENT_TIMEOUT,
    MAX_DESCRIPTOR_SIZE,
    GitProcessorPointer,
    ProcessorDescriptor,
)
from saas.git import CloneError, RepositoryPathError, askpass_env, clone, git_env, redact, repo_folder

__all__ = ["GPPError", "fetch_gpp", "validate_descriptor"]

CLONE_TIMEOUT = 600

DESCRIPTOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "input", "output", "configurations"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "input": {"type": "array", "items": {"$ref": "#/$defs/io"}},
        "output": {"type": "array", "items": {"$ref": "#/$defs/io"}},
        "configurations": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1},
        "kind": {"enum": ["processor", "agent"]},
        "instances": {"type": "integer", "minimum": 1, "maximum": MAX_AGENT_INSTANCES},
        "job_timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_AGENT_TIMEOUT},
        "startup_timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_AGENT_TIMEOUT},
    },
    "$defs": {
        "io": {
            "type": "object",
            "required": ["name", "data_type", "data_format"],
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"},
                "data_type": {"type": "string", "minLength": 1},
                "data_format": {"type": "string", "minLength": 1},
                "data_schema": {"type": "object"},
            },
        }
    },
}


class GPPError(DORError, InvalidInputError):
    """The repository, commit, folder or descriptor of a GPP is not usable."""


def validate_descriptor(document: Any) -> ProcessorDescriptor:
    """A descriptor checked against the descriptor schema (and every `data_schema` checked as a JSON schema)."""
    import jsonschema

    try:
        check_json(document, MAX_DESCRIPTOR_SIZE)  # first: jsonschema recurses through the document
    except ValueError as e:
        raise GPPError(f"Invalid descriptor: it {e}") from None
    try:
        jsonschema.validate(document, DESCRIPTOR_SCHEMA)
        for item in [*document["input"], *document["output"]]:
            if item.get("data_schema") is not None:
                jsonschema.Draft202012Validator.check_schema(item["data_schema"])
        for direction in ("input", "output"):
            names = [item["name"] for item in document[direction]]
            if len(names) != len(set(names)):
                raise GPPError(f"Invalid descriptor: duplicate {direction} names")
        return ProcessorDescriptor.model_validate(document)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "descriptor"
        raise GPPError(f"Invalid descriptor at '{where}': {e.message}") from None
    except jsonschema.SchemaError as e:
        raise GPPError(f"Invalid data_schema in descriptor: {e.message}") from None
    except ValidationError as e:
        raise GPPError(f"Invalid descriptor: {e.errors(include_input=False)[0]['msg']}") from None


CLONE_MARKER = "SAAS_GPP_CLONE"


def kill_leftover_clones(work_dir: Path) -> int:
    """After a crash: SIGKILL the git processes of clones into `work_dir` (their environment carries
    `SAAS_GPP_CLONE=<work_dir>`) that the crashed node left running; returns how many. Blocks."""
    import signal

    from saas.core.helpers import marked_processes

    killed = 0
    for pid, _ in marked_processes(f"{CLONE_MARKER}={work_dir.resolve()}"):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


def fetch_gpp(
    source: str,
    commit_id: str,
    proc_path: str,
    proc_config: str,
    credentials: GithubCredentials | None = None,
    work_dir: Path | None = None,
    *,
    allow_local: bool = False,
    detail: bool = False,
) -> GitProcessorPointer:
    """Clone `source` (if the node allows it: `allow_local` is the node's `allow_local_git`), check out
    `commit_id`, read `<proc_path>/descriptor.json`; the commit is pinned as full SHA. With `detail` (the caller
    is the node owner) a failed clone's error carries git's message."""
    import git

    try:
        relative = repo_folder(proc_path)
    except RepositoryPathError as e:
        raise GPPError(e.reason) from None
    env = git_env(source, allow_local)
    work = Path(tempfile.mkdtemp(prefix="gpp-", dir=work_dir)).resolve()
    try:
        env[CLONE_MARKER] = str(work.parent)  # a restarted node kills the git processes a crashed one left
        if credentials is not None:
            env |= askpass_env(work, credentials)
        repo_dir = work / "repo"
        try:
            clone(source, repo_dir, env, checkout=False, timeout=CLONE_TIMEOUT, cwd=work)
        except CloneError as e:
            message = e.stderr.strip().replace("\n", " ")[-300:]
            message = redact(message, credentials.token() if credentials is not None else None)
            if re.search(r"no space left on device|disk quota exceeded", message, re.I):  # the caller: 507
                raise OSError(errno.ENOSPC, "git: no space left on device") from None
            said = f": {message or 'git failed'}" if detail else " (git's message is shown to the node owner)"
            if re.search(r"could not resolve|unable to access|connection refused|timed out", message, re.I):
                raise UnreachableError(f"Could not reach repository '{source}'{said}") from None
            raise GPPError(f"Could not clone '{source}'{said}") from None
        repo = git.Repo(repo_dir)
        try:
            full_commit = repo.git.rev_parse("--verify", "--quiet", f"{commit_id}^{{commit}}")
            repo.git.checkout("--quiet", full_commit)
        except git.GitCommandError:
            raise GPPError(f"Commit '{commit_id}' not found in '{source}'") from None
        folder = (repo_dir / relative).resolve()
        if not folder.is_relative_to(repo_dir.resolve()) or not folder.is_dir():
            raise GPPError(f"No folder '{proc_path}' in '{source}' at commit {full_commit[:12]}")
        descriptor_file = folder / "descriptor.json"
        if not descriptor_file.is_file() or not descriptor_file.resolve().is_relative_to(repo_dir.resolve()):
            raise GPPError(f"No descriptor.json in '{proc_path}' at commit {full_commit[:12]}")
        if descriptor_file.stat().st_size > 4 * MAX_DESCRIPTOR_SIZE:  # room for indentation
            raise GPPError(f"descriptor.json is larger than {4 * MAX_DESCRIPTOR_SIZE} bytes")
        try:
            document = json.loads(descriptor_file.read_text(encoding="utf-8"))
        except RecursionError:
            raise GPPError("descriptor.json is nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise GPPError(f"descriptor.json is not valid JSON: {e}") from None
        descriptor = validate_descriptor(document)
        if proc_config not in descriptor.configurations:
            raise GPPError(
                f"Configuration '{proc_config}' is not listed in the descriptor "
                f"(available: {', '.join(descriptor.configurations)})"
            )
        return GitProcessorPointer(
            source=source,
            commit_id=full_commit,
            proc_path=str(relative),
            proc_config=proc_config,
            proc_descriptor=descriptor,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
