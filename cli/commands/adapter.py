"""`saas-cli adapter`: write a new adapter from the template, and test an adapter locally without a node.

`init` copies `adapters/template/` into a new folder and makes it its own git repository (one commit, ready to
push). `test` validates the descriptor and the inputs, then installs and runs the adapter exactly as the RTI would
(`saas.rti.local`: the RTI's runner functions) and prints the progress, messages and outputs as they come."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from saas.core.errors import ConfigError, InvalidInputError, RTIError
from saas_cli.context import Context

__all__ = ["TEMPLATE", "register"]

SHOW_BYTES = 2000  # outputs this small are printed
TEMPLATE = Path(__file__).resolve().parents[2] / "adapters" / "template"
AGENT_PROCESSOR = '''"""Template agent: a long-lived adapter. The RTI starts `execute.sh <config> <agent dir>` once
and hands it one job at a time as a JSON line on stdin ({"job_id": ..., "wd": ...}); each job ends with
`trigger:done` or `trigger:error:<text>`. Load expensive things (a model, a connection) once, before the loop."""

import csv
import json
import os
import sys


def trigger(line):
    print(f"trigger:{line}", flush=True)


def run(wd):
    with open(os.path.join(wd, "parameters")) as f:
        factor = json.load(f)["factor"]
    total, rows = 0.0, 0
    with open(os.path.join(wd, "table"), newline="") as f:
        for row in csv.DictReader(f):
            total += float(row["value"]) * factor
            rows += 1
    with open(os.path.join(wd, "result"), "w") as f:
        json.dump({"total": total, "rows": rows}, f)
    trigger("output:result")


def main():
    # load expensive things here, once; then tell the RTI this instance is ready for jobs
    trigger("ready")
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        try:
            trigger("progress:0")
            run(job["wd"])
            trigger("progress:100")
            trigger("done")
        except Exception as e:  # report and wait for the next job
            trigger(f"error:{type(e).__name__}: {' '.join(str(e).splitlines())}")


if __name__ == "__main__":
    main()
'''


def _git(folder: Path, *args: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    try:
        result = subprocess.run(
            ["git", *args], cwd=folder, env=env, capture_output=True, text=True, timeout=60, check=False
        )
    except FileNotFoundError:
        raise ConfigError("git is not installed (it is needed to make the adapter a repository)") from None
    if result.returncode != 0:
        raise ConfigError(f"git {args[0]} failed: {(result.stderr or result.stdout).strip()[-300:]}")
    return result.stdout.strip()


def _has_git_identity(folder: Path) -> bool:
    result = subprocess.run(["git", "config", "user.email"], cwd=folder, capture_output=True, text=True, check=False)
    return bool(result.stdout.strip())


def init(ctx: Context, args: argparse.Namespace) -> None:
    import shutil

    from saas.dor.gpp import validate_descriptor

    folder = Path(args.folder).expanduser()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InvalidInputError(f"'{folder}' already exists and is not an empty folder")
    if not (TEMPLATE / "descriptor.json").is_file():
        raise ConfigError(f"The adapter template is missing at '{TEMPLATE}' (install saas-middleware from source)")
    name = args.name or folder.resolve().name
    descriptor = json.loads((TEMPLATE / "descriptor.json").read_text(encoding="utf-8"))
    descriptor["name"] = name
    if args.kind == "agent":
        descriptor = {**descriptor, "kind": "agent"}
    validate_descriptor(descriptor)  # e.g. a --name the descriptor does not accept: before anything is written
    shutil.copytree(TEMPLATE, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    if args.kind == "agent":
        (folder / "processor.py").write_text(AGENT_PROCESSOR, encoding="utf-8")
    (folder / "descriptor.json").write_text(json.dumps(descriptor, indent=2) + "\n", encoding="utf-8")
    (folder / ".gitignore").write_text(".venv/\n__pycache__/\n", encoding="utf-8")
    _git(folder, "init", "--quiet")
    _git(folder, "add", "--all")
    identity = [] if _has_git_identity(folder) else ["-c", "user.name=saas-cli", "-c", "user.email=saas-cli@localhost"]
    _git(folder, *identity, "-c", "commit.gpgsign=false", "commit", "--quiet", "-m", f"New {args.kind}: {name}")
    commit = _git(folder, "rev-parse", "HEAD")
    document = {"path": str(folder.resolve()), "name": name, "kind": args.kind, "commit_id": commit}
    ctx.out.result(
        document,
        f"Adapter '{name}' ({args.kind}) created in '{folder}': a git repository at commit {commit[:12]}.\n"
        f"Next: edit descriptor.json, install.sh, execute.sh and processor.py; try it with\n"
        f"  saas-cli adapter test {folder} --input parameters='{{\"factor\": 2}}' --input table=table.csv\n"
        f"then commit, push and add it with 'saas-cli dor add-gpp'.",
    )


def _uncommitted(folder: Path) -> bool:
    """True if `folder` is in a git repository and has changes not committed (False without git)."""
    try:
        result = subprocess.run(
            ["git", "status", "--porcelain", "--", "."], cwd=folder, capture_output=True, text=True, check=False
        )
    except OSError:
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def test(ctx: Context, args: argparse.Namespace) -> None:
    from saas.rti.local import load_descriptor, parse_inputs, run_locally

    folder = Path(args.folder).expanduser()
    descriptor, _ = load_descriptor(folder)
    out = ctx.out
    out.line(
        f"Descriptor OK: {descriptor.name} (inputs: {', '.join(s.name for s in descriptor.input) or 'none'}; "
        f"outputs: {', '.join(s.name for s in descriptor.output) or 'none'}; "
        f"configurations: {', '.join(descriptor.configurations)})"
    )
    config = args.config
    if config is None:
        if len(descriptor.configurations) == 1:
            config = descriptor.configurations[0]
        else:
            config = ctx.prompt.select(
                "Select the configuration:", [(c, c) for c in descriptor.configurations], name="config", flag="--config"
            )
    inputs = parse_inputs(descriptor, args.input or [])
    out.line(
        "Inputs OK: "
        + ", ".join(f"{i.name} ({'value' if i.by_value else f'file {i.path}'})" for i in inputs)
        + ("" if inputs else "none")
    )
    if _uncommitted(folder):
        out.warning("the folder has uncommitted changes: they are tested here, but the RTI deploys only commits")
    work = (
        Path(args.work_dir).expanduser()
        if args.work_dir
        else Path(tempfile.mkdtemp(prefix="saas-adapter-test-", dir=ctx.temp_directory()))
    )
    out.line(f"Working folder: {work}")

    def on_event(kind: str, value: Any) -> None:
        if kind == "step":
            out.line(f"Running {value} ...")
        elif kind in ("install", "line"):
            out.line(f"  | {value}")
        elif kind == "progress":
            out.line(f"  progress: {value}%")
        elif kind == "message":
            out.line(f"  message [{value[0]}]: {value[1]}")
        elif kind == "output":
            out.line(f"  output announced: {value}")

    try:
        run = run_locally(folder, config, descriptor, inputs, work, on_event)
    except RTIError:  # the run failed: what it left is worth a look
        out.line(f"Logs and working folder kept in '{work}'.")
        raise
    specs = {s.name: s for s in descriptor.output}
    rows = [
        [name, f"{specs[name].data_type}/{specs[name].data_format}", path.stat().st_size, path]
        for name, path in run.outputs.items()
    ]
    out.line("Outputs OK:")
    out.table(["OUTPUT", "TYPE/FORMAT", "BYTES", "PATH"], rows)
    for name, path in run.outputs.items():
        if path.stat().st_size <= SHOW_BYTES:
            with contextlib.suppress(UnicodeDecodeError):
                out.line(f"{name}: {path.read_text(encoding='utf-8').strip()}")
    out.result(
        {
            "name": descriptor.name,
            "config": config,
            "work_dir": str(work),
            "progress": run.progress,
            "messages": [{"severity": s, "message": m} for s, m in run.messages],
            "outputs": {name: str(path) for name, path in run.outputs.items()},
        },
        f"Adapter test passed: {descriptor.name} ({config}).",
    )


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("adapter", help="write and test adapters locally (no node needed)")
    group.set_defaults(handler=None, _parser=group)
    sub = group.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("init", help="write a new adapter from the template (its own git repository)")
    p.add_argument("folder", metavar="FOLDER", help="new (or empty) folder for the adapter")
    p.add_argument("--kind", choices=["processor", "agent"], default="processor", help="adapter kind")
    p.add_argument("--name", help="name in descriptor.json (default: the folder's name)")
    p.set_defaults(handler=init)

    p = sub.add_parser(
        "test", help="validate an adapter and run one job locally, exactly as the RTI would (install + execute)"
    )
    p.add_argument("folder", metavar="FOLDER", help="the adapter folder (with descriptor.json)")
    p.add_argument("--config", help="configuration profile (default: the only one)")
    p.add_argument(
        "--input",
        action="append",
        metavar="NAME=FILE|JSON",
        help="an input: a file, or a JSON value given by value (repeatable, one per descriptor input)",
    )
    p.add_argument("--work-dir", metavar="PATH", help="folder for the run (default: a new temporary folder)")
    p.set_defaults(handler=test)
