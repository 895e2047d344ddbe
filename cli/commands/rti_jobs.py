"""`saas-cli rti job`: submit, list, follow and cancel jobs on a node's RTI.

`submit --job task.json` takes the seed's job descriptor; interactive submit asks per input "by-value /
by-reference", validates JSON values against the input's schema and offers the data objects of the input's type
and format as a pick list. `status` without a job ID lists your active jobs (as the original did); `wait` shows a
progress bar. What a person reads first: the job ID, its state and timeline; the seed's JSON documents with -v."""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas.core.errors import InvalidInputError, MissingValueError, NotFoundError, RTIError
from saas_cli.commands.rti import Spinner, pick_deployed, proxy
from saas_cli.context import Context

if TYPE_CHECKING:
    from saas.core.keystore import Keystore
    from saas.dor.schemas import DataObject, ProcessorDescriptor
    from saas.rti.proxy import RTIProxy
    from saas.rti.schemas import JobStatus, ListedJob

__all__ = ["register"]

FINAL = ("successful", "failed", "cancelled")
ENTER_ID = "Enter an object ID"


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


# -- submit -----------------------------------------------------------------------------------------------------


def _object_label(obj: DataObject) -> str:
    tags = ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in obj.tags.items())
    where = f" on {obj.custodian.identity.name}" if obj.custodian is not None else ""
    return f"{obj.obj_id} [{obj.data_type}/{obj.data_format}]{where} {tags}".rstrip()


def _pick_object(ctx: Context, address: tuple[str, int], keystore: Keystore, spec: Any) -> str:
    """A by-reference input: the objects of the input's type and format in the network as a pick list (or an ID
    typed in, checked at once: it must exist somewhere in the network with that type and format)."""
    from saas.dor.proxy import locate, search_network

    found = search_network(address, keystore, data_type=spec.data_type, data_format=spec.data_format, limit=100)
    if found:
        choices: list[tuple[str, str | None]] = [(_object_label(o), o.obj_id) for o in found]
        picked = ctx.prompt.select(
            f"Select the data object for input '{spec.name}' ({spec.data_type}/{spec.data_format}):",
            [*choices, (f"{ENTER_ID} ...", None)],
            name=f"input {spec.name}",
            flag="--job",
        )
        if picked is not None:
            return picked

    def check(text: str) -> bool | str:
        obj_id = text.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", obj_id):
            return "An object ID is 64 hexadecimal characters"
        records = locate(address, keystore, [obj_id]).get(obj_id, [])
        if not records:
            return f"No data object {obj_id[:12]}… in the network (or you may not read it)"
        obj = records[0]
        if (obj.data_type, obj.data_format) != (spec.data_type, spec.data_format):
            need = f"{spec.data_type}/{spec.data_format}"
            return f"That object is {obj.data_type}/{obj.data_format}, the input needs {need}"
        return True

    return ctx.prompt.text(f"{ENTER_ID} for '{spec.name}':", name=f"input {spec.name}", flag="--job", validate=check)


def _value_check(schema: Any) -> Any:
    from saas.rti.validation import schema_error

    def check(text: str) -> bool | str:
        try:
            value = json.loads(text)
        except ValueError as e:
            return f"Not valid JSON: {e}"
        problem = None if schema is None else schema_error(value, schema)
        return True if problem is None else f"Does not match the schema: {problem}"

    return check


def _ask_task(ctx: Context, rti: RTIProxy, keystore: Keystore, args: argparse.Namespace) -> dict[str, Any]:
    """Build a task interactively: processor, each input by value or by reference, each output's settings."""
    if not ctx.prompt.interactive:
        raise MissingValueError("job descriptor", "--job")
    processor = pick_deployed(ctx, rti, args.proc_id, ready_only=True)
    assert processor.gpp is not None
    descriptor: ProcessorDescriptor = processor.gpp.proc_descriptor
    inputs: list[dict[str, Any]] = []
    for spec in descriptor.input:
        how = ctx.prompt.select(
            f"How to provide input '{spec.name}' ({spec.data_type}/{spec.data_format})?",
            [("by-value", "value"), ("by-reference", "reference")],
            name=f"input {spec.name}",
            flag="--job",
        )
        if how == "reference":
            obj_id = _pick_object(ctx, rti.address, keystore, spec)
            inputs.append({"name": spec.name, "type": "reference", "obj_id": obj_id.strip().lower()})
            continue
        check = _value_check(spec.data_schema)
        text = ctx.prompt.text(
            f"Value for '{spec.name}' (JSON):", name=f"input {spec.name}", flag="--job", validate=check
        )
        inputs.append({"name": spec.name, "type": "value", "value": json.loads(text)})
    outputs = []
    for spec in descriptor.output:
        outputs.append(
            {
                "name": spec.name,
                "owner_iid": keystore.iid,
                "restricted_access": ctx.prompt.confirm(
                    f"Restrict access to output '{spec.name}'?", name="restricted_access", flag="--job"
                ),
                "content_encrypted": ctx.prompt.confirm(
                    f"Encrypt output '{spec.name}'?", name="content_encrypted", flag="--job"
                ),
            }
        )
    return {"proc_id": processor.proc_id, "user_iid": keystore.iid, "input": inputs, "output": outputs}


def _read_task(path: str, keystore: Keystore) -> dict[str, Any]:
    try:
        task = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except OSError as e:
        raise InvalidInputError(f"Cannot read job descriptor '{path}': {e.strerror}") from None
    except ValueError as e:
        raise InvalidInputError(f"Job descriptor '{path}' is not valid JSON: {e}") from None
    if not isinstance(task, dict) or "proc_id" not in task:
        raise InvalidInputError("A job descriptor is a JSON object with proc_id, user_iid, input and output")
    task.setdefault("user_iid", keystore.iid)
    if task["user_iid"] != keystore.iid:
        raise InvalidInputError(f"The job descriptor's user_iid is {task['user_iid']}, but you are {keystore.iid}")
    return task


def job_submit(ctx: Context, args: argparse.Namespace) -> None:
    from saas_cli.commands.dor import ensure_published

    keystore = ctx.load_keystore()
    ensure_published(ctx, args, keystore)
    with proxy(ctx, args, keystore) as rti:
        task = _read_task(args.job, keystore) if args.job else _ask_task(ctx, rti, keystore, args)
        if args.anywhere:  # issue 18: to the node of the network with the best offer
            from saas_cli.commands.rti_offers import submit_anywhere

            submit_anywhere(ctx, args, task, keystore)
            return
        job = rti.submit_task(task, keystore)
    ctx.out.created(
        "Job ID",
        job.id,
        [f"Job submitted to processor {job.proc_id[:12]}…; follow it with: saas-cli rti job wait {job.id}"],
        job.model_dump(mode="json"),
        f"Job submitted: job-id={job.id}",
    )


# -- status -----------------------------------------------------------------------------------------------------


def _timeline_rows(status: JobStatus) -> list[list[str]]:
    """One row per state the job went through; a reason that is one of the job's errors is left out (the error
    is printed once, below the timeline)."""
    rows = []
    for entry in status.timeline:
        reason = str(entry.get("reason") or "")
        shown = "" if reason in status.errors else reason
        rows.append([_when(int(entry.get("time", 0))), str(entry.get("state", "")), shown])
    return rows


def _print_status(ctx: Context, status: JobStatus, show_errors: bool = True) -> None:
    """Job ID first, then state, timeline and outputs; the seed's documents with -v; errors once (unless the
    caller raises them)."""
    ctx.out.result(status.model_dump(mode="json"))
    if ctx.out.as_json:
        return
    ctx.out.line(f"Job ID: {status.job.id}")
    name = f" ({status.job.task.name})" if status.job.task.name else ""
    ctx.out.line(f"Processor: {status.job.proc_id}{name}")
    ctx.out.line(f"State: {status.state}  Progress: {status.progress}%")
    if status.timeline:
        ctx.out.line("Timeline:")
        ctx.out.table(["TIME", "STATE", "REASON"], _timeline_rows(status))
    for name, obj in status.output.items():
        custodian = f" (on node {obj.custodian.identity.id})" if obj.custodian is not None else ""
        ctx.out.line(f"Output {name}: {obj.obj_id}{custodian}")
    if status.messages:
        last = status.messages[-1]
        ctx.out.line(f"Last message: {last.get('severity', 'info')}: {last.get('message', '')}")
    if ctx.out.verbose:  # the seed's layout: the job descriptor, then the status as JSON
        ctx.out.line(f"Job descriptor: {json.dumps(status.job.model_dump(mode='json'), indent=4)}")
        seed_status: dict[str, object] = {
            "output": [{"name": name, "obj_id": obj.obj_id} for name, obj in status.output.items()],
            "progress": str(status.progress),
            "state": status.state,
            "messages": status.messages[-10:],
        }
        ctx.out.line(f"Status: {json.dumps(seed_status, indent=4)}")
    if show_errors:
        for error in status.errors:
            ctx.out.line(f"Error: {error}")


def _jobs_table(ctx: Context, jobs: list[ListedJob], rti: RTIProxy) -> None:
    names = {p.proc_id: p.gpp.proc_descriptor.name for p in rti.get_deployed() if p.gpp is not None}
    ctx.out.table(
        ["JOB ID", "STATE", "PROCESSOR", "NAME", "SUBMITTED"],
        [
            [
                j.id,
                j.state,
                names.get(j.proc_id, j.proc_id[:12] + "…"),
                j.task.name or "",
                _when(j.t_submitted),
            ]
            for j in jobs
        ],
    )


def job_status(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    with proxy(ctx, args, keystore) as rti:
        if args.job_id:
            _print_status(ctx, rti.get_job_status(args.job_id, keystore))
            return
        jobs = rti.get_jobs_with_states(keystore)  # with their states: one request
        shown = [j for j in jobs if args.show_inactive or j.state not in FINAL]
        ctx.out.result([j.model_dump(mode="json") for j in shown])
        if ctx.out.as_json:
            return
        what = "jobs" if args.show_inactive else "active jobs"
        if not shown:
            hint = "" if args.show_inactive else " (--show-inactive: finished ones too)"
            ctx.out.line(f"You have no {what} on this node.{hint}")
            return
        ctx.out.line(f"Your {what} ({len(shown)}):")
        _jobs_table(ctx, shown, rti)


def job_list(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    with proxy(ctx, args, keystore) as rti:
        jobs = rti.get_jobs_with_states(keystore)  # with their states: one request
        ctx.out.result([j.model_dump(mode="json") for j in jobs])
        if not ctx.out.as_json:
            _jobs_table(ctx, jobs, rti)


def job_cancel(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    results = []
    with proxy(ctx, args, keystore) as rti:
        job_ids = list(args.job_ids)
        if not job_ids:
            jobs = rti.get_jobs_with_states(keystore)  # with their states: one request
            active = [j for j in jobs if j.state not in FINAL]
            if not active:
                raise NotFoundError("You have no active jobs on this node")
            job_ids = ctx.prompt.checkbox(
                "Select the jobs to cancel:",
                [(f"{j.id} [{j.state}] {j.task.name or j.proc_id[:12] + '…'}", j.id) for j in active],
                name="jobs",
                flag="JOB_IDS",
            )
        for job_id in job_ids:
            status = rti.cancel_job(job_id, keystore)
            results.append({"job_id": job_id, "state": status.state})
            ctx.out.line(f"Job {job_id}: {status.state}")
    ctx.out.result(results)


def job_logs(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    if args.destination_positional and args.destination:
        raise InvalidInputError("Give the destination once: as DESTINATION or --destination")
    with proxy(ctx, args, keystore) as rti:
        if args.follow:
            for line in rti.follow_job_logs(args.job_id, keystore):
                ctx.out.stream(line)  # the adapter's output: cleaned for a terminal
            return
        folder = Path(args.destination_positional or args.destination or ".").expanduser()
        if not folder.is_dir():
            raise InvalidInputError(f"'{folder}' is not a folder")
        target = folder / f"{args.job_id}-logs.tar.gz"
        rti.get_job_logs(args.job_id, keystore, target)
    ctx.out.result({"path": str(target)}, f"Logs downloaded to {target}")


def job_wait(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    bar = Spinner(ctx, f"Job {args.job_id}")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with proxy(ctx, args, keystore) as rti:
        status = rti.get_job_status(args.job_id, keystore)
        while status.state not in FINAL:
            bar.update(status.progress)
            if deadline is not None and time.monotonic() > deadline:
                bar.done()
                raise RTIError(f"Job {args.job_id} is still {status.state} after {args.timeout:g} s")
            status = rti.get_job_status(args.job_id, keystore, wait=5.0)
        bar.update(status.progress)
        bar.done()
    _print_status(ctx, status, show_errors=False)
    if status.state != "successful":  # its errors, once: the error line
        raise RTIError(f"Job {args.job_id} {status.state}" + (f": {'; '.join(status.errors)}" if status.errors else ""))


def register(sub: argparse._SubParsersAction) -> None:
    from saas_cli.commands.rti_offers import add_rank_arguments

    job = sub.add_parser("job", help="submit and follow jobs")
    job.set_defaults(handler=None, _parser=job)
    job_sub = job.add_subparsers(title="commands", metavar="COMMAND")
    p = job_sub.add_parser("submit", help="submit a job (a job descriptor file, or interactively)")
    p.add_argument("--job", metavar="PATH", help="job descriptor (JSON: proc_id, user_iid, input, output)")
    p.add_argument("--proc-id", help="processor (interactive submit)")
    p.add_argument("--publish-identity", action="store_true", help="publish your identity if the node lacks it")
    p.add_argument("--anywhere", action="store_true", help="submit to the RTI of the network with the best offer")
    add_rank_arguments(p)  # --rank, --timeout (with --anywhere)
    p.set_defaults(handler=job_submit)
    p = job_sub.add_parser("status", help="state, timeline and outputs of a job; without JOB_ID your active jobs")
    p.add_argument("job_id", nargs="?", metavar="JOB_ID")
    p.add_argument("--show-inactive", action="store_true", help="without JOB_ID: list finished jobs too")
    p.set_defaults(handler=job_status)
    p = job_sub.add_parser("list", help="your jobs on the node, with their state")
    p.set_defaults(handler=job_list)
    p = job_sub.add_parser("cancel", help="cancel jobs (without JOB_IDS: pick from your active jobs)")
    p.add_argument("job_ids", nargs="*", metavar="JOB_ID")
    p.set_defaults(handler=job_cancel)
    p = job_sub.add_parser("logs", help="download a job's logs (tar.gz), or follow them")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("destination_positional", nargs="?", metavar="DESTINATION", help="folder to download into")
    p.add_argument("--destination", help="folder to download into (default: current folder)")
    p.add_argument("--follow", action="store_true", help="print log lines as the job writes them")
    p.set_defaults(handler=job_logs)
    p = job_sub.add_parser("wait", help="wait for a job to finish (with a progress bar)")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--timeout", type=float, help="give up after this many seconds")
    p.set_defaults(handler=job_wait)
