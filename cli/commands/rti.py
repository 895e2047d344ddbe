"""`saas-cli rti`: deploy processors and run jobs on a node's RTI.

Group flag `--address` (before the sub-command) picks the node. `proc deploy` waits for the deployment (unless
`--no-wait`); `job submit --job task.json` takes the seed's job descriptor; interactive submit asks per input
"by-value / by-reference" and validates JSON values against the input's schema; `job wait` shows a progress bar."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas.core.errors import InvalidInputError, MissingValueError, NotFoundError, RTIError
from saas_cli.context import Context

if TYPE_CHECKING:
    from saas.core.keystore import Keystore
    from saas.rti.proxy import RTIProxy
    from saas.rti.schemas import JobStatus, Processor

__all__ = ["register"]

FINAL = ("successful", "failed", "cancelled")


def _proxy(ctx: Context, args: argparse.Namespace, keystore: Keystore | None = None) -> RTIProxy:
    from saas.rti.proxy import RTIProxy

    return RTIProxy(ctx.node_address(args.address), keystore=keystore)


def _label(p: Processor) -> str:
    if p.gpp is None:
        return f"{p.proc_id} [{p.state}]"
    return f"{p.proc_id} [{p.gpp.proc_descriptor.name}] {p.gpp.proc_config}:{p.gpp.commit_id[:7]} ({p.state})"


class _Spinner:
    """A one-line spinner / progress bar on stderr (only on a terminal, never under --json)."""

    def __init__(self, ctx: Context, label: str):
        self.enabled = sys.stderr.isatty() and not ctx.out.as_json
        self.label = label
        self.tick = 0

    def update(self, progress: int | None = None) -> None:
        if not self.enabled:
            return
        self.tick += 1
        if progress is None:
            text = "|/-\\"[self.tick % 4]
        else:
            bar = "#" * (progress // 4) + "." * (25 - progress // 4)
            text = f"[{bar}] {progress:3d}%"
        sys.stderr.write(f"\r{self.label} {text}")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


# -- processors -------------------------------------------------------------------------------------------------


def proc_deploy(ctx: Context, args: argparse.Namespace) -> None:
    from saas.dor.proxy import DORProxy
    from saas.dor.schemas import GPP_DATA_TYPE, GPPDataObject
    from saas_cli.commands.dor import ensure_published

    keystore = ctx.load_keystore()
    ensure_published(ctx, args, keystore)
    proc_id = args.proc_id
    if not proc_id:
        with DORProxy(ctx.node_address(args.address), keystore) as dor:
            gpps = [g for g in dor.search(data_type=GPP_DATA_TYPE, limit=1000) if isinstance(g, GPPDataObject)]
        if not gpps:
            raise NotFoundError("No GPP data objects found on this node (add one with 'dor add-gpp')")
        proc_id = ctx.prompt.select(
            "Select the processor you would like to deploy:",
            [
                (f"{g.obj_id} [{g.gpp.proc_descriptor.name}] {g.gpp.proc_config}:{g.gpp.commit_id[:7]}", g.obj_id)
                for g in gpps
            ],
            name="processor",
            flag="PROC_ID",
        )
    ssh_credentials = _ssh_profile(ctx, args, keystore)
    with _proxy(ctx, args, keystore) as rti:
        status = rti.deploy(
            proc_id,
            keystore,
            deployment=args.type,
            ssh_credentials=ssh_credentials,
            backend=args.backend,
            partition=args.partition,
        )
        if args.no_wait:
            ctx.out.result(status.model_dump(mode="json"), f"Deploying processor {proc_id}... (state: {status.state})")
            return
        spinner = _Spinner(ctx, f"Deploying processor {proc_id}...")
        while status.state == "deploying":
            spinner.update()
            time.sleep(0.1)
            status = rti.get_status(proc_id, keystore)  # signed: the node owner sees why it failed
        spinner.done()
    if status.state != "ready":
        raise RTIError(
            f"Deploying processor {proc_id} failed: {status.error}",
            {"proc_id": proc_id, "log_tail": status.log_tail},
        )
    ctx.out.result(status.model_dump(mode="json"), f"Deploying processor {proc_id}...Done")


def _ssh_profile(ctx: Context, args: argparse.Namespace, keystore: Keystore) -> Any:
    """The SSH credentials to deploy with: `--ssh-profile`, or asked (as in the seed) when there is a TTY and the
    keystore has SSH profiles. The ssh backend needs one; slurm uses one to reach a login node."""
    if args.partition is not None and args.backend != "slurm":
        raise InvalidInputError("--partition is only for --backend slurm")
    profiles = keystore.ssh_credentials.list()
    name = args.ssh_profile
    if name is None and args.backend == "local":
        return None
    if name is None and args.backend == "ssh":
        if not profiles:
            raise NotFoundError("The ssh backend needs an SSH profile: add one with 'identity credentials add ssh'")
        name = ctx.prompt.select(
            "Select the SSH profile:", [(n, n) for n in profiles], name="SSH profile", flag="--ssh-profile"
        )
    elif name is None:
        if not (ctx.prompt.interactive and profiles):
            return None
        if not ctx.prompt.confirm("Use an SSH profile for deployment?", name="SSH profile", flag="--ssh-profile"):
            return None
        name = ctx.prompt.select(
            "Select the SSH profile:", [(n, n) for n in profiles], name="SSH profile", flag="--ssh-profile"
        )
    credentials = keystore.ssh_credentials.get(name)
    if credentials is None:
        raise NotFoundError(f"No SSH profile '{name}' in the keystore", {"profiles": profiles})
    if args.backend == "local":
        raise InvalidInputError("--ssh-profile is for the ssh or slurm backend, not local")
    return credentials


def proc_undeploy(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    with _proxy(ctx, args, keystore) as rti:
        proc_ids = args.proc_ids
        if not proc_ids:
            deployed = rti.get_deployed()
            if not deployed:
                raise NotFoundError("No processors are deployed on this node")
            proc_ids = ctx.prompt.checkbox(
                "Select the processor(s) you would like to undeploy:",
                [(_label(p), p.proc_id) for p in deployed],
                name="processors",
                flag="PROC_IDS",
            )
        done = []
        for proc_id in proc_ids:
            done.append(rti.undeploy(proc_id, keystore, force=args.force).model_dump(mode="json"))
            ctx.out.line(f"Undeploy processor {proc_id}...Done")
    ctx.out.result(done)


def proc_list(ctx: Context, args: argparse.Namespace) -> None:
    with _proxy(ctx, args) as rti:
        deployed = rti.get_deployed()
    ctx.out.result([p.model_dump(mode="json") for p in deployed])
    if ctx.out.as_json:
        return
    if not deployed:
        ctx.out.line("No processors deployed.")
        return
    ctx.out.table(
        ["PROCESSOR ID", "NAME", "CONFIG", "COMMIT", "STATE"],
        [
            [
                p.proc_id,
                p.gpp.proc_descriptor.name if p.gpp else "",
                p.gpp.proc_config if p.gpp else "",
                p.gpp.commit_id[:7] if p.gpp else "",
                p.state,
            ]
            for p in deployed
        ],
    )


def _pick_deployed(
    ctx: Context, rti: RTIProxy, given: str | None, ready_only: bool = False, keystore: Keystore | None = None
) -> Processor:
    if given:
        return rti.get_status(given, keystore)
    deployed = [p for p in rti.get_deployed() if p.state == "ready" or not ready_only]
    if not deployed:
        raise NotFoundError("No processors are deployed on this node")
    return ctx.prompt.select(
        "Select the processor:", [(_label(p), p) for p in deployed], name="processor", flag="PROC_ID"
    )


def _signer_if_given(ctx: Context) -> Keystore | None:
    """The keystore when one is named (--keystore-id or a password): signed, the node owner sees why a processor
    failed and its log tail; else anonymous."""
    return ctx.load_keystore() if ctx.keystore_id or ctx.password else None


def proc_show(ctx: Context, args: argparse.Namespace) -> None:
    keystore = _signer_if_given(ctx)
    with _proxy(ctx, args) as rti:
        status = _pick_deployed(ctx, rti, args.proc_id, keystore=keystore)
    document = status.model_dump(mode="json")
    ctx.out.result(document, json.dumps(document, indent=4))


def proc_status(ctx: Context, args: argparse.Namespace) -> None:
    keystore = _signer_if_given(ctx)
    with _proxy(ctx, args) as rti:
        status = _pick_deployed(ctx, rti, args.proc_id, keystore=keystore)
    ctx.out.result(status.model_dump(mode="json"))
    if ctx.out.as_json:
        return
    ctx.out.line(f"Processor {status.proc_id}: {status.state}")
    if status.error:
        ctx.out.line(f"Error: {status.error}")
    if status.log_tail:
        ctx.out.line("Install log (tail):" if not status.instances else "Log (tail):")
        ctx.out.line(status.log_tail.rstrip())
    if status.instances:
        ctx.out.line(f"Agent instances: {len(status.instances)}")
        ctx.out.table(
            ["INSTANCE", "STATE", "JOB", "JOBS SERVED", "RESTARTS", "ERROR"],
            [[i.index, i.state, i.job_id or "-", i.jobs_served, i.restarts, i.error or ""] for i in status.instances],
        )


# -- jobs -------------------------------------------------------------------------------------------------------


def _ask_task(ctx: Context, rti: RTIProxy, keystore: Keystore, args: argparse.Namespace) -> dict[str, Any]:
    """Build a task interactively: processor, each input by value or by reference, each output's settings."""
    if not ctx.prompt.interactive:
        raise MissingValueError("job descriptor", "--job")
    import jsonschema

    processor = _pick_deployed(ctx, rti, args.proc_id, ready_only=True)
    assert processor.gpp is not None
    descriptor = processor.gpp.proc_descriptor
    inputs: list[dict[str, Any]] = []
    for spec in descriptor.input:
        how = ctx.prompt.select(
            f"How to provide input '{spec.name}' ({spec.data_type}/{spec.data_format})?",
            [("by-value", "value"), ("by-reference", "reference")],
            name=f"input {spec.name}",
            flag="--job",
        )
        if how == "reference":
            obj_id = ctx.prompt.text(f"Object ID for '{spec.name}':", name=f"input {spec.name}", flag="--job")
            inputs.append({"name": spec.name, "type": "reference", "obj_id": obj_id.strip()})
            continue

        def check(text: str, schema: Any = spec.data_schema) -> bool | str:
            try:
                value = json.loads(text)
            except ValueError as e:
                return f"Not valid JSON: {e}"
            if schema is not None:
                try:
                    jsonschema.validate(value, schema)
                except jsonschema.ValidationError as e:
                    return f"Does not match the schema: {e.message}"
            return True

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


def job_submit(ctx: Context, args: argparse.Namespace) -> None:
    from saas_cli.commands.dor import ensure_published

    keystore = ctx.load_keystore()
    ensure_published(ctx, args, keystore)
    with _proxy(ctx, args, keystore) as rti:
        if args.job:
            try:
                task = json.loads(Path(args.job).expanduser().read_text(encoding="utf-8"))
            except OSError as e:
                raise InvalidInputError(f"Cannot read job descriptor '{args.job}': {e.strerror}") from None
            except ValueError as e:
                raise InvalidInputError(f"Job descriptor '{args.job}' is not valid JSON: {e}") from None
            if not isinstance(task, dict) or "proc_id" not in task:
                raise InvalidInputError("A job descriptor is a JSON object with proc_id, user_iid, input and output")
            task.setdefault("user_iid", keystore.iid)
            if task["user_iid"] != keystore.iid:
                raise InvalidInputError(
                    f"The job descriptor's user_iid is {task['user_iid']}, but you are {keystore.iid}"
                )
        else:
            task = _ask_task(ctx, rti, keystore, args)
        if args.anywhere:  # issue 18: to the node of the network with the best offer
            from saas_cli.commands.rti_offers import submit_anywhere

            submit_anywhere(ctx, args, task, keystore)
            return
        job = rti.submit_task(task, keystore)
    ctx.out.result(job.model_dump(mode="json"), f"Job submitted: job-id={job.id}")


def _print_status(ctx: Context, status: JobStatus) -> None:
    document = status.model_dump(mode="json")
    ctx.out.result(document)
    if ctx.out.as_json:
        return
    # The seed's layout: the job descriptor, then the status as JSON, then a one-line summary.
    ctx.out.line(f"Job descriptor: {json.dumps(status.job.model_dump(mode='json'), indent=4)}")
    seed_status: dict[str, object] = {
        "output": [{"name": name, "obj_id": obj.obj_id} for name, obj in status.output.items()],
        "progress": str(status.progress),
        "state": status.state,
    }
    if status.messages:
        seed_status["messages"] = status.messages[-10:]
    if status.errors:
        seed_status["errors"] = status.errors
    ctx.out.line(f"Status: {json.dumps(seed_status, indent=4)}")
    ctx.out.line(f"State: {status.state}  Progress: {status.progress}%")
    for name, obj in status.output.items():
        custodian = f" (on node {obj.custodian.identity.id})" if obj.custodian is not None else ""
        ctx.out.line(f"Output {name}: {obj.obj_id}{custodian}")
    for error in status.errors:
        ctx.out.line(f"Error: {error}")


def job_status(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    with _proxy(ctx, args, keystore) as rti:
        _print_status(ctx, rti.get_job_status(args.job_id, keystore))


def job_list(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    with _proxy(ctx, args, keystore) as rti:
        jobs = rti.get_jobs_by_user(keystore)
    ctx.out.result([j.model_dump(mode="json") for j in jobs])
    if not ctx.out.as_json:
        ctx.out.table(
            ["JOB ID", "PROCESSOR", "NAME", "SUBMITTED"],
            [
                [
                    j.id,
                    j.proc_id[:16] + "…",
                    j.task.name or "",
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j.t_submitted / 1000)),
                ]
                for j in jobs
            ],
        )


def job_cancel(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    results = []
    with _proxy(ctx, args, keystore) as rti:
        for job_id in args.job_ids:
            status = rti.cancel_job(job_id, keystore)
            results.append({"job_id": job_id, "state": status.state})
            ctx.out.line(f"Job {job_id}: {status.state}")
    ctx.out.result(results)


def job_logs(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    with _proxy(ctx, args, keystore) as rti:
        if args.follow:
            for line in rti.follow_job_logs(args.job_id, keystore):
                ctx.out.stream(line)  # the adapter's output: cleaned for a terminal
            return
        target = Path(args.destination).expanduser() / f"{args.job_id}-logs.tar.gz"
        rti.get_job_logs(args.job_id, keystore, target)
    ctx.out.result({"path": str(target)}, f"Logs downloaded to {target}")


def job_wait(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    bar = _Spinner(ctx, f"Job {args.job_id}")
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with _proxy(ctx, args, keystore) as rti:
        status = rti.get_job_status(args.job_id, keystore)
        while status.state not in FINAL:
            bar.update(status.progress)
            if deadline is not None and time.monotonic() > deadline:
                bar.done()
                raise RTIError(f"Job {args.job_id} is still {status.state} after {args.timeout:g} s")
            status = rti.get_job_status(args.job_id, keystore, wait=5.0)
        bar.update(status.progress)
        bar.done()
    _print_status(ctx, status)
    if status.state != "successful":
        raise RTIError(f"Job {args.job_id} {status.state}" + (f": {status.errors[-1]}" if status.errors else ""))


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("rti", help="processors and jobs on a node's Runtime Infrastructure")
    group.add_argument("--address", help="REST address of the node (default $SAAS_ADDRESS or 127.0.0.1:5001)")
    group.set_defaults(handler=None, _parser=group)
    sub = group.add_subparsers(title="commands", metavar="COMMAND")

    proc = sub.add_parser("proc", help="deploy, undeploy and inspect processors")
    proc.set_defaults(handler=None, _parser=proc)
    proc_sub = proc.add_subparsers(title="commands", metavar="COMMAND")
    p = proc_sub.add_parser("deploy", help="deploy a processor (its ID is the GPP's object ID)")
    p.add_argument("proc_id", nargs="?", metavar="PROC_ID")
    p.add_argument("--type", default="native", choices=["native"], help="deployment type")
    p.add_argument(
        "--backend",
        choices=["local", "ssh", "slurm"],
        help="where jobs run: this node (local), the --ssh-profile host (ssh, the default with a profile) or SLURM "
        "(slurm: the node's own, or through the --ssh-profile login node)",
    )
    p.add_argument("--ssh-profile", metavar="NAME", help="an SSH profile of your keystore (sent encrypted)")
    p.add_argument("--partition", help="SLURM partition (--backend slurm)")
    p.add_argument("--no-wait", action="store_true", help="return at once instead of waiting for the deployment")
    p.add_argument("--publish-identity", action="store_true", help="publish your identity if the node lacks it")
    p.set_defaults(handler=proc_deploy)
    p = proc_sub.add_parser("undeploy", help="undeploy processors")
    p.add_argument("proc_ids", nargs="*", metavar="PROC_IDS")
    p.add_argument("--force", action="store_true", help="cancel unfinished jobs of the processor")
    p.set_defaults(handler=proc_undeploy)
    p = proc_sub.add_parser("list", help="processors on the node")
    p.set_defaults(handler=proc_list)
    p = proc_sub.add_parser("show", help="a processor's state and descriptor")
    p.add_argument("proc_id", nargs="?", metavar="PROC_ID")
    p.set_defaults(handler=proc_show)
    p = proc_sub.add_parser(
        "status", help="a processor's deployment state (install log tail if it failed; an agent's instances)"
    )
    p.add_argument("proc_id", nargs="?", metavar="PROC_ID")
    p.set_defaults(handler=proc_status)

    from saas_cli.commands.rti_offers import add_rank_arguments, register_offers

    register_offers(sub)  # offers, packages, level (issue 18)
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
    p = job_sub.add_parser("status", help="state, progress and outputs of a job")
    p.add_argument("job_id", metavar="JOB_ID")
    p.set_defaults(handler=job_status)
    p = job_sub.add_parser("list", help="your jobs on the node")
    p.set_defaults(handler=job_list)
    p = job_sub.add_parser("cancel", help="cancel jobs")
    p.add_argument("job_ids", nargs="+", metavar="JOB_ID")
    p.set_defaults(handler=job_cancel)
    p = job_sub.add_parser("logs", help="download a job's logs (tar.gz), or follow them")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--destination", default=".", help="folder to download into (default: current folder)")
    p.add_argument("--follow", action="store_true", help="print log lines as the job writes them")
    p.set_defaults(handler=job_logs)
    p = job_sub.add_parser("wait", help="wait for a job to finish (with a progress bar)")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--timeout", type=float, help="give up after this many seconds")
    p.set_defaults(handler=job_wait)
