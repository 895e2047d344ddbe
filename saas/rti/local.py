"""Run one job of an adapter folder locally, the way the RTI runs it, without a node (`saas-cli adapter test`).

The steps and checks are the RTI's own: the descriptor is validated by `saas.dor.gpp.validate_descriptor`; the
adapter's repository is copied to `<work>/procs/local/repo` (as a deployment clones it: the whole repository, its
working tree including uncommitted changes) and `install.sh <config>` runs in the adapter's folder in its own
process group, without the caller's `SAAS_*` variables and with the RTI's install timeout; the working folder
(`<work>/jobs/<job id>`, with `.store/`) gets by-value inputs through `saas.rti.inputs.write_value` and files at
`saas.rti.inputs.input_path`; `execute.sh <config> <wd>` runs through `runner.execute` with each line parsed by
`runner.parse_trigger` (an agent runs in an `AgentPool` of one instance, as the RTI runs it); outputs are
checked by `saas.rti.outputs.check_outputs`. Mistakes raise `InvalidInputError` (the
adapter or the inputs) or `JobFailedError` (the run), each with a one-line reason."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saas.core.errors import InvalidInputError
from saas.dor.schemas import ProcessorDescriptor
from saas.rti import inputs as job_inputs
from saas.rti import outputs, runner, validation
from saas.rti.runner import JobFailedError
from saas.rti.sandbox import Sandbox, SandboxUnavailableError

__all__ = ["LocalInput", "LocalRun", "load_descriptor", "parse_inputs", "run_locally"]

JOB_ID = "local-test"
PROC_ID = "local"
INSTALL_LOG = "install.log"
Event = Callable[[str, Any], None]  # ("install" | "line" | "progress" | "message" | "output" | "step", value)


@dataclass
class LocalInput:
    """An input for a local run: a JSON value (by value) or a file (as a by-reference input arrives)."""

    name: str
    value: Any = None
    path: Path | None = None

    @property
    def by_value(self) -> bool:
        return self.path is None


@dataclass
class LocalRun:
    """What a local run produced: the folders, every trigger in order, and the output files by name."""

    work: Path
    repo: Path
    adapter: Path
    wd: Path
    logs: Path
    sandbox: Sandbox | None = None  # None: bubblewrap is missing, the adapter ran without it
    progress: list[int] = field(default_factory=list)
    messages: list[tuple[str, str]] = field(default_factory=list)
    announced: list[str] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)


def load_descriptor(folder: Path) -> tuple[ProcessorDescriptor, dict[str, Any]]:
    """The folder's descriptor.json, validated as the DOR validates a GPP's; also the raw document."""
    from saas.dor.gpp import validate_descriptor

    path = folder / "descriptor.json"
    if not folder.is_dir():
        raise InvalidInputError(f"'{folder}' is not a folder")
    if not path.is_file():
        raise InvalidInputError(f"No descriptor.json in '{folder}'")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"descriptor.json is not valid JSON: {e}") from None
    for script in ("install.sh", "execute.sh"):
        if not (folder / script).is_file():
            raise InvalidInputError(f"No {script} in '{folder}'")
    return validate_descriptor(document), document


def parse_inputs(descriptor: ProcessorDescriptor, items: Sequence[str], base: Path | None = None) -> list[LocalInput]:
    """`name=value` items: a value that parses as a JSON object, array, number, boolean or null is given by value,
    anything else is a file path. Every descriptor input exactly once; by-value inputs and JSON files are checked
    against the input's `data_schema` (as the RTI checks by-value inputs at submission)."""
    pairs: list[tuple[str, str]] = []
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidInputError(f"Invalid input '{item}': use NAME=FILE or NAME=JSON")
        pairs.append((name, text))
    validation.check_names(descriptor, [name for name, _ in pairs], hint="give each with --input NAME=FILE|JSON")
    given: dict[str, LocalInput] = {}
    for name, text in pairs:
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        if isinstance(value, str):
            path = Path(value).expanduser()
            if base is not None and not path.is_absolute():
                path = base / path
            if not path.is_file():
                raise InvalidInputError(f"Input '{name}': '{text}' is neither a file nor a JSON value")
            given[name] = LocalInput(name, path=path)
        else:
            given[name] = LocalInput(name, value=value)
    schemas = {s.name: s.data_schema for s in descriptor.input}
    for name, local in given.items():
        if schemas[name] is None:
            continue
        value = local.value
        if local.path is not None:
            try:
                value = json.loads(local.path.read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                raise InvalidInputError(
                    f"Input '{name}': '{local.path}' is not valid JSON (it has a data_schema)"
                ) from None
        validation.check_value(descriptor, name, value)
    return [given[s.name] for s in descriptor.input]


async def _install(run: LocalRun, config: str, log: Path, on_event: Event, timeout: float) -> None:
    """`install.sh <config>` as a deployment runs it (`saas.rti.deploy.run_install`); each output line is also
    reported."""
    from saas.rti.deploy import DeploymentError, run_install

    try:
        await run_install(
            run.adapter,
            config,
            log,
            timeout,
            on_line=lambda line: on_event("install", line),
            sandbox=run.sandbox,
            visible=run.repo,
        )
    except DeploymentError as e:
        raise JobFailedError(e.reason) from None


def repository_root(folder: Path) -> Path:
    """The git repository `folder` is in (the RTI clones the whole repository), else `folder` itself."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return folder


def _copy_repository(root: Path, target: Path) -> None:
    shutil.copytree(root, target, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__"), symlinks=True)


async def _run(
    run: LocalRun,
    folder: Path,
    config: str,
    descriptor: ProcessorDescriptor,
    inputs: Sequence[LocalInput],
    on_event: Event,
    install_timeout: float,
) -> None:
    await asyncio.to_thread(_copy_repository, repository_root(folder), run.repo)
    try:
        run.sandbox = await asyncio.to_thread(Sandbox.detect, run.work, as_caller=True, cgroups=False)
    except SandboxUnavailableError as e:
        on_event("step", f"running WITHOUT the sandbox the RTI uses: {e.reason}")
    run.wd.mkdir(parents=True)
    (run.wd / ".store").mkdir()
    run.logs.mkdir(parents=True)
    on_event("step", f"install.sh {config}")
    await _install(run, config, run.repo.parent / INSTALL_LOG, on_event, install_timeout)
    for item in inputs:
        if item.by_value:
            await asyncio.to_thread(job_inputs.write_value, run.wd, item.name, item.value)
        else:
            assert item.path is not None
            await asyncio.to_thread(shutil.copyfile, item.path, job_inputs.input_path(run.wd, item.name))

    def on_line(line: str) -> None:
        trigger = runner.parse_trigger(line)
        if trigger is None:
            on_event("line", line.rstrip("\r\n"))
            return
        kind, value = trigger
        if kind == "progress":
            run.progress.append(value)
        elif kind == "output":
            if value not in run.announced:
                run.announced.append(value)
        else:
            run.messages.append(value)
        on_event(kind, value)

    if descriptor.kind == "agent":
        await _run_on_agent(run, config, descriptor, on_line, on_event)
    else:
        on_event("step", f"execute.sh {config} {run.wd}")
        await runner.execute(
            run.sandbox, run.adapter, config, run.wd, run.logs, on_line, job_id=JOB_ID, visible=run.repo
        )
    await asyncio.to_thread(outputs.check_outputs, descriptor.output, run.wd, set(run.announced))
    run.outputs = {spec.name: job_inputs.input_path(run.wd, spec.name) for spec in descriptor.output}


async def _run_on_agent(
    run: LocalRun, config: str, descriptor: ProcessorDescriptor, on_line: Callable[[str], None], on_event: Event
) -> None:
    """An agent as the RTI runs it (`saas.rti.agents.AgentPool`): one instance started with `execute.sh <config>
    <agent dir>` until `trigger:ready`, the job sent as a JSON line on its stdin, ended by `trigger:done` (or
    `trigger:error`, raised as `JobFailedError`), then the instance stopped (stdin closed, SIGTERM, SIGKILL)."""
    from saas.rti.agents import AgentPool
    from saas.rti.deploy import DeploymentError

    agent_dir = run.work / "procs" / PROC_ID / "agent"
    pool = AgentPool(
        PROC_ID,
        run.adapter,
        config,
        agent_dir,
        1,
        descriptor.job_timeout,
        descriptor.startup_timeout,
        sandbox=run.sandbox,
        visible=run.repo,
    )
    on_event("step", f"execute.sh {config} {agent_dir / 'instance-0'} (agent: waiting for trigger:ready)")
    try:
        await pool.start()
    except DeploymentError as e:
        raise JobFailedError(f"The agent did not start: {e.reason}") from None
    try:
        on_event("step", f'job sent on stdin: {{"job_id": "{JOB_ID}", "wd": "{run.wd}"}}')

        async def started(index: int) -> None:
            return None

        await pool.run_job(await pool.acquire(), JOB_ID, run.wd, run.logs, on_line, started)
    finally:
        await pool.stop()


def run_locally(
    folder: Path,
    config: str,
    descriptor: ProcessorDescriptor,
    inputs: Sequence[LocalInput],
    work: Path,
    on_event: Event | None = None,
    install_timeout: float | None = None,
) -> LocalRun:
    """Install and run one job of the adapter in `folder` under `work` (created; must not exist or be empty).
    Blocks; raises `JobFailedError` with the reason when installing, running or an output check fails."""
    from saas.rti.deploy import INSTALL_TIMEOUT

    if config not in descriptor.configurations:
        available = ", ".join(descriptor.configurations)
        raise InvalidInputError(f"Configuration '{config}' is not in the descriptor (configurations: {available})")
    if work.exists() and any(work.iterdir()):
        raise InvalidInputError(f"Working folder '{work}' is not empty")
    folder, work = folder.resolve(), work.resolve()
    if work.is_relative_to(repository_root(folder)):
        raise InvalidInputError(f"The working folder '{work}' must be outside the adapter's repository")
    repo = work / "procs" / PROC_ID / "repo"  # as a deployment: <rti>/procs/<proc id>/repo/<proc path>
    run = LocalRun(
        work=work,
        repo=repo,
        adapter=repo / folder.relative_to(repository_root(folder)),
        wd=work / "jobs" / JOB_ID,
        logs=work / "logs" / JOB_ID,
    )
    work.mkdir(parents=True, exist_ok=True)
    asyncio.run(
        _run(
            run,
            folder,
            config,
            descriptor,
            inputs,
            on_event or (lambda kind, value: None),
            install_timeout or INSTALL_TIMEOUT,
        )
    )
    return run
