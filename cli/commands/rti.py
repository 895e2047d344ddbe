"""`saas-cli rti`: deploy and inspect processors on a node's RTI (`rti job` lives in `rti_jobs`).

Group flag `--address` (before or after the sub-command) picks the node. `proc deploy` waits for the deployment
(unless `--no-wait`) and prints the processor ID first; its picker marks processors already deployed and is only
offered to those who may deploy. `proc status` without an ID shows every processor of the node."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from saas.core.errors import AuthorisationError, InvalidInputError, NotFoundError, RTIError
from saas_cli.context import Context, spread_group_option

if TYPE_CHECKING:
    from saas.core.keystore import Keystore
    from saas.rti.proxy import RTIProxy
    from saas.rti.schemas import Processor

__all__ = ["Spinner", "pick_deployed", "proxy", "register", "signer_if_given"]


def proxy(ctx: Context, args: argparse.Namespace, keystore: Keystore | None = None) -> RTIProxy:
    from saas.rti.proxy import RTIProxy

    return RTIProxy(ctx.node_address(args.address), keystore=keystore)


def _label(p: Processor) -> str:
    if p.gpp is None:
        return f"{p.proc_id} [{p.state}]"
    return f"{p.proc_id} [{p.gpp.proc_descriptor.name}] {p.gpp.proc_config}:{p.gpp.commit_id[:7]} ({p.state})"


class Spinner:
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


def _pick_gpp(ctx: Context, args: argparse.Namespace, keystore: Keystore) -> str:
    """The deploy picker: the node's GPPs, those already deployed marked; only for those who may deploy."""
    from saas.dor.proxy import DORProxy
    from saas.dor.schemas import GPP_DATA_TYPE, GPPDataObject
    from saas.nodedb.proxy import NodeDBProxy

    address = ctx.node_address(args.address)
    with NodeDBProxy(address) as nodedb:
        node = nodedb.get_node()
    if node.strict_deployment and node.identity.id != keystore.iid:
        raise AuthorisationError(
            f"Only the owner of the node at {address[0]}:{address[1]} ({node.identity.name}) may deploy processors "
            "on it",
            {"owner": node.identity.id},
        )
    with DORProxy(address, keystore) as dor:
        gpps = [g for g in dor.search(data_type=GPP_DATA_TYPE, limit=1000) if isinstance(g, GPPDataObject)]
    if not gpps:
        raise NotFoundError("No GPP data objects found on this node (add one with 'dor add-gpp')")
    with proxy(ctx, args) as rti:
        states = {p.proc_id: p.state for p in rti.get_deployed()}

    def label(g: GPPDataObject) -> str:
        mark = f" (deployed: {states[g.obj_id]})" if g.obj_id in states else ""
        return f"{g.obj_id} [{g.gpp.proc_descriptor.name}] {g.gpp.proc_config}:{g.gpp.commit_id[:7]}{mark}"

    return ctx.prompt.select(
        "Select the processor you would like to deploy:",
        [(label(g), g.obj_id) for g in gpps],
        name="processor",
        flag="PROC_ID",
    )


def _deployed_summary(status: Processor) -> str:
    if status.gpp is None:
        return f"Processor {status.state}"
    gpp = status.gpp
    return f"Deployed {gpp.proc_descriptor.name} ({gpp.proc_config}:{gpp.commit_id[:7]}): {status.state}"


def proc_deploy(ctx: Context, args: argparse.Namespace) -> None:
    from saas_cli.commands.dor import ensure_published

    keystore = ctx.load_keystore()
    ensure_published(ctx, args, keystore)
    proc_id = args.proc_id or _pick_gpp(ctx, args, keystore)
    ssh_credentials = _ssh_profile(ctx, args, keystore)
    with proxy(ctx, args, keystore) as rti:
        status = rti.deploy(
            proc_id,
            keystore,
            deployment=args.type,
            ssh_credentials=ssh_credentials,
            backend=args.backend,
            partition=args.partition,
        )
        if args.no_wait:
            ctx.out.created(
                "Processor ID",
                proc_id,
                [f"Deploying (state: {status.state}); see it with: saas-cli rti proc status {proc_id}"],
                status.model_dump(mode="json"),
            )
            return
        spinner = Spinner(ctx, f"Deploying processor {proc_id}...")
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
    ctx.out.created("Processor ID", proc_id, [_deployed_summary(status)], status.model_dump(mode="json"))


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
    with proxy(ctx, args, keystore) as rti:
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
            undeployed = _undeploy(ctx, rti, keystore, proc_id, args.force)
            if undeployed is not None:
                done.append(undeployed.model_dump(mode="json"))
                ctx.out.line(f"Undeploy processor {proc_id}...Done")
    ctx.out.result(done)


def _undeploy(ctx: Context, rti: RTIProxy, keystore: Keystore, proc_id: str, force: bool) -> Processor | None:
    """Undeploy; a processor with unfinished jobs asks (as the original did) whether to purge them (None: kept)."""
    from saas.core.errors import ConflictError

    try:
        return rti.undeploy(proc_id, keystore, force=force)
    except ConflictError as e:
        if force or not ctx.prompt.interactive:
            raise
        if not ctx.prompt.confirm(
            f"{e.reason}. Undeploy anyway? Its pending and running jobs are cancelled.",
            name="purge",
            flag="--force",
        ):
            ctx.out.line(f"Processor {proc_id} kept.")
            return None
    return rti.undeploy(proc_id, keystore, force=True)


def proc_list(ctx: Context, args: argparse.Namespace) -> None:
    with proxy(ctx, args) as rti:
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


def pick_deployed(
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


def signer_if_given(ctx: Context) -> Keystore | None:
    """The keystore when one is named (--keystore-id or a password): signed, the node owner sees why a processor
    failed and its log tail; else anonymous."""
    return ctx.load_keystore() if ctx.keystore_id or ctx.password else None


def proc_show(ctx: Context, args: argparse.Namespace) -> None:
    keystore = signer_if_given(ctx)
    if args.proc_id and args.proc_id_option:
        raise InvalidInputError("Give the processor once: as PROC_ID or --proc-id")
    with proxy(ctx, args) as rti:
        status = pick_deployed(ctx, rti, args.proc_id or args.proc_id_option, keystore=keystore)
    document = status.model_dump(mode="json")
    ctx.out.result(document, json.dumps(document, indent=4))


def proc_status(ctx: Context, args: argparse.Namespace) -> None:
    keystore = signer_if_given(ctx)
    if not args.proc_id:  # the original's `proc status`: every processor of the node
        with proxy(ctx, args) as rti:
            statuses = [rti.get_status(p.proc_id, keystore) for p in rti.get_deployed()]
        ctx.out.result([s.model_dump(mode="json") for s in statuses])
        if ctx.out.as_json:
            return
        if not statuses:
            ctx.out.line("No processors deployed.")
            return
        ctx.out.table(
            ["PROCESSOR ID", "NAME", "STATE", "ERROR"],
            [[s.proc_id, s.gpp.proc_descriptor.name if s.gpp else "", s.state, s.error or ""] for s in statuses],
        )
        return
    with proxy(ctx, args) as rti:
        status = rti.get_status(args.proc_id, keystore)
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


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("rti", help="processors and jobs on a node's Runtime Infrastructure")
    group.add_argument(
        "--address",
        help="REST address of the node (default $SAAS_ADDRESS or 127.0.0.1:5001; also after the sub-command)",
    )
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
    p.add_argument(
        "--force", action="store_true", help="cancel unfinished jobs of the processor (else asked when interactive)"
    )
    p.set_defaults(handler=proc_undeploy)
    p = proc_sub.add_parser("list", help="processors on the node")
    p.set_defaults(handler=proc_list)
    p = proc_sub.add_parser("show", help="a processor's state and descriptor")
    p.add_argument("proc_id", nargs="?", metavar="PROC_ID")
    p.add_argument("--proc-id", dest="proc_id_option", metavar="PROC_ID", help="the processor (as in the original)")
    p.set_defaults(handler=proc_show)
    p = proc_sub.add_parser(
        "status",
        help="a processor's deployment state (install log tail if it failed; an agent's instances); without PROC_ID "
        "every processor's",
    )
    p.add_argument("proc_id", nargs="?", metavar="PROC_ID")
    p.set_defaults(handler=proc_status)

    from saas_cli.commands import rti_jobs
    from saas_cli.commands.rti_offers import register_offers

    register_offers(sub)  # offers, packages, level (issue 18)

    rti_jobs.register(sub)
    spread_group_option(group, "--address", "address")
