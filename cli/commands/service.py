"""`saas-cli service`: configure and run a node in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from saas.core.errors import InvalidInputError
from saas_cli.context import Context

if TYPE_CHECKING:
    from saas.config import NodeConfig

__all__ = ["parse_size", "register"]

NODE_TYPES = [
    ("Full node (i.e., DOR + RTI services)", "full"),
    ("Storage node (i.e., DOR service only)", "storage"),
    ("Execution node (i.e., RTI service only)", "execution"),
]
DEFAULT_DATASTORE = "~/.datastore"
DEFAULT_REST = "127.0.0.1:5001"
DEFAULT_P2P = "127.0.0.1:4001"
_HTTP_LIMITS = (  # flags of `service` that are NodeConfig fields of the same name
    "http_max_header_size",
    "http_header_timeout",
    "http_body_timeout",
    "http_keepalive_timeout",
    "http_max_connections",
    "http_max_connections_per_client",
)
_FLAG_OF = {"trusted_proxies": "trusted-proxy"}  # configuration fields whose flag has another name
_DASHBOARD = ("dashboard_session_lifetime", "dashboard_max_sessions", "dashboard_token_max_lifetime")  # the same
_OFFERS = (  # the same
    "packages_file",
    "default_level",
    "offer_lifetime",
    "offer_veto",
    "offer_veto_timeout",
    "booking_grace",
    "job_gpus",
)


def parse_size(text: str) -> int:
    """`1048576`, `512K`, `100M`, `2G` (powers of 1024) as bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid size '{text}' (e.g. 500M, 2G)")
    return int(match.group(1)) * 1024 ** " KMGT".index(match.group(2).upper() or " ")


def _address(text: str) -> bool | str:
    from saas.core.helpers import parse_address

    try:
        parse_address(text)
    except InvalidInputError as e:
        return e.reason
    return True


def _yes_no(value: bool) -> str:
    return "Yes" if value else "No"


def _keep_password_out_of_reach(ctx: Context) -> None:
    """A node lives long: if its password is in this process's initial command line or environment (readable in
    /proc/<pid>/cmdline and /proc/<pid>/environ), start again without it (DESIGN §12). Before any prompt, so
    nothing is asked twice."""
    if ctx.password_exposed and ctx.password is not None and ctx.command_line is not None:
        from saas_cli.password import reexec_without_password

        reexec_without_password(ctx.password, ctx.command_line)


def run(ctx: Context, args: argparse.Namespace) -> None:
    from saas.core.helpers import parse_address

    _keep_password_out_of_reach(ctx)
    ask = ctx.prompt.interactive and not args.use_defaults

    def value(given: str | None, message: str, default: str, flag: str, check: object = None) -> str:
        if given is not None:
            return given
        if not ask:
            return default
        return ctx.prompt.text(message, name=flag.lstrip("-"), flag=flag, default=default, validate=check)  # type: ignore[arg-type]

    def choice(given: bool | None, message: str, default: bool, flag: str) -> bool:
        if given is not None:
            return given
        if not ask:
            return default
        return ctx.prompt.confirm(message, name=flag.lstrip("-"), flag=flag, default=default)

    datastore = value(args.datastore, "Enter path to datastore:", DEFAULT_DATASTORE, "--datastore")
    rest = value(args.rest_address, "Enter address for REST service:", DEFAULT_REST, "--rest-address", _address)
    p2p = value(args.p2p_address, "Enter address for P2P service:", DEFAULT_P2P, "--p2p-address", _address)
    boot = value(args.boot_node, "Enter address for boot node:", p2p, "--boot-node")
    if args.type is not None:
        node_type = args.type
    elif ask:
        node_type = ctx.prompt.select("Select the type of service:", NODE_TYPES, name="type", flag="--type")
    else:
        node_type = "full"
    retain = choice(args.retain_job_history, "Retain RTI job history?", False, "--retain-job-history")
    bind_all = choice(args.bind_all_address, "Bind service to all network addresses?", False, "--bind-all-address")
    strict = choice(
        None if args.disable_strict_deployment is None else not args.disable_strict_deployment,
        "Strict processor deployment?",
        True,
        "--disable-strict-deployment",
    )
    if args.disable_concurrency is None and ask and node_type != "storage":
        args.disable_concurrency = not ctx.prompt.confirm(
            "Concurrent job processing?", name="disable-concurrency", flag="--disable-concurrency", default=True
        )
    if args.disable_concurrency:  # the original's flag: one job at a time
        if args.max_jobs not in (None, 1):
            raise InvalidInputError("--disable-concurrency runs one job at a time: leave out --max-jobs")
        args.max_jobs = 1
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", args.network_name):
        raise InvalidInputError("--network-name must be 1-64 letters, digits, '_', '.' or '-'")
    if args.job_memory is not None and args.job_memory < 16 * 2**20:
        raise InvalidInputError(
            "--job-memory must be at least 16M (a size such as 512M or 2G; a number alone is bytes)",
            {"job_memory": args.job_memory},
        )
    keystore_path, _ = ctx.select_keystore()
    if ctx.password is None:  # asked: a wrong one is asked again before the node starts
        ctx.open_keystore(keystore_path)
    password = ctx.ask_password()

    from pydantic import ValidationError

    from saas.config import NodeConfig

    try:
        config = NodeConfig(
            datastore=Path(datastore).expanduser(),
            keystore=keystore_path,
            password=password,
            rest_address=parse_address(rest),
            p2p_address=parse_address(p2p),
            boot_node=boot or None,
            node_type=node_type,
            retain_job_history=retain,
            strict_deployment=strict,
            bind_all=bind_all,
            max_object_size=args.max_object_size,
            # storage quotas (DOR)
            **({"storage_quota": args.storage_quota} if hasattr(args, "storage_quota") else {}),
            storage_quota_for=dict(args.storage_quota_for or []),
            max_jobs=args.max_jobs,
            **({"max_remote_jobs": args.max_remote_jobs} if args.max_remote_jobs else {}),
            network_name=args.network_name,
            network_key=args.network_key or None,
            log_level=_node_log_level(args.log_level),
            unsafe_no_sandbox=args.unsafe_no_sandbox,
            job_network=args.job_network,
            sandbox_uid=args.sandbox_uid,
            job_memory=args.job_memory // 2**20 if args.job_memory else None,
            job_pids=args.job_pids or 1024,
            job_cores=args.job_cores,
            **({"job_walltime": args.job_walltime} if args.job_walltime else {}),
            # HTTP limits of the REST service
            **{name: getattr(args, name) for name in _HTTP_LIMITS if getattr(args, name) is not None},
            trusted_proxies=args.trusted_proxy or [],
            # Bulk transfers
            **({} if args.http_sendfile_threads is None else {"http_sendfile_threads": args.http_sendfile_threads}),
            **_quota_settings(args),
            # Git sources (add-gpp, deploy)
            allow_local_git=args.allow_local_git,
            # Dashboard sign-in
            **{name: getattr(args, name) for name in _DASHBOARD if getattr(args, name) is not None},
            # Operating the node (issue 19): log ring, job statistics
            **{name: getattr(args, name) for name in ("log_ring_lines", "health_recent_jobs") if getattr(args, name)},
            # Audit log (issue 19 item 3): retention
            **({"audit_max_entries": args.audit_max_entries} if args.audit_max_entries else {}),
            **({"audit_max_age_days": args.audit_max_age or None} if args.audit_max_age is not None else {}),
            # Faults (issue 15): liveness and the deadline of network-wide lookups
            **{
                name: getattr(args, name)
                for name in ("p2p_offline_after", "network_deadline", "stop_grace")
                if getattr(args, name) is not None
            },
            # the original CLI's service flags (issue 16)
            purge_inactive_jobs=args.purge_inactive_jobs,
            # Resource packages, account levels and offers
            **{name: getattr(args, name) for name in _OFFERS if getattr(args, name, None) is not None},
        )
    except ValidationError as e:  # a flag's value out of range: name the flag, no traceback
        first = e.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "configuration"
        flag = _FLAG_OF.get(field, field.replace("_", "-"))
        raise InvalidInputError(f"--{flag}: {first['msg']}", {field: first.get("input")}) from None
    _serve(ctx, config)


def _quota_settings(args: argparse.Namespace) -> dict[str, object]:
    """Quotas and fairness of the RTI and NodeDB (issue 14, item 7): the flags given (else the node defaults)."""
    names = [
        "max_pending_per_user",
        "max_running_per_user",
        "identity_publish_rate",
        "identity_publish_burst",
        "max_identities",
        "max_nodes",
        "job_message_length",
        "job_messages",
        "job_messages_bytes",
        "max_pending_uploads",
        "pending_upload_lifetime",
    ]
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _node_log_level(cli_level: str) -> str:
    """The node logs its start-up and shutdown at INFO unless the user asked for more (DEBUG) or less."""
    return "INFO" if cli_level == "WARNING" else cli_level


def _serve(ctx: Context, config: NodeConfig) -> None:
    import asyncio

    from saas.node import Node, run_node

    node = Node.from_config(config)

    def started(_: object) -> None:
        rest = "{}:{}".format(*config.rest_address)
        p2p = "{}:{}".format(*config.p2p_address)
        sandbox = node.rti.sandbox if node.rti is not None else None
        isolation = sandbox.describe() if sandbox is not None else "no RTI"
        if sandbox is not None and not sandbox.enabled:
            ctx.out.warning(
                "WARNING: --unsafe-no-sandbox: adapters run as this node's user and can read its datastore, its "
                "keystore and other users' jobs. Do not run adapters you do not trust."
            )
        if config.allow_local_git:
            ctx.out.warning(
                "--allow-local-git: add-gpp and deploy fetch from local paths and private addresses too "
                "(a development node; do not use it on a network others can reach)."
            )
        ctx.out.result(
            {
                "type": config.node_type,
                "rest_address": rest,
                "p2p_address": p2p,
                "iid": node.iid,
                "datastore": str(config.datastore),
                "retain_job_history": config.retain_job_history,
                "max_jobs": config.max_jobs,
                "isolation": isolation,
            },
            f"Created '{config.node_type}' node instance at {rest}/{p2p} "
            f"(keep RTI job history: {_yes_no(config.retain_job_history)})\n"
            f"Isolation: {isolation}\nPress Ctrl+C to stop.",
        )

    asyncio.run(run_node(node, started))
    ctx.out.line("Node stopped.")


def _quota(text: str) -> int | None:
    """A size (`10G`) or `unlimited`."""
    return None if text.strip().lower() in ("unlimited", "none") else parse_size(text)


def _quota_for(text: str) -> tuple[str, int | None]:
    """`IID=SIZE` (SIZE may be `unlimited`)."""
    iid, sep, size = text.partition("=")
    if not sep or not re.fullmatch(r"[0-9a-z]{64}", iid.strip()):
        raise argparse.ArgumentTypeError(f"expected IID=SIZE (e.g. <iid>=50G), not '{text}'")
    return iid.strip(), _quota(size)


def _count(text: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, not '{text}'")
    return int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not '{text}'")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not '{text}'")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, not '{text}'")
    return value


def _audit_entries(text: str) -> int:
    value = _positive_int(text)
    if value < 100:
        raise argparse.ArgumentTypeError(f"must be at least 100, not '{text}'")
    return value


def _header_size(text: str) -> int:
    value = parse_size(text)
    if value < 1024:
        raise argparse.ArgumentTypeError(f"must be at least 1K, not '{text}'")
    return value


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "service",
        help="run a node (DOR and/or RTI) in the foreground",
        description="Run a node until interrupted (SIGINT/SIGTERM stop it gracefully).",
    )
    p.add_argument("--datastore", help=f"datastore folder (default {DEFAULT_DATASTORE})")
    p.add_argument("--rest-address", help=f"host:port of the REST service (default {DEFAULT_REST})")
    p.add_argument("--p2p-address", help=f"host:port of the P2P service (default {DEFAULT_P2P})")
    p.add_argument("--boot-node", help="host:port (or multiaddr) of a node of the network (default: this node)")
    p.add_argument(
        "--network-name",
        default="default",
        help="name of the network to join; nodes of other networks are refused (default 'default')",
    )
    p.add_argument(
        "--network-key",
        default=os.environ.get("SAAS_NETWORK_KEY"),
        help="secret shared by the nodes of a closed network (default $SAAS_NETWORK_KEY; none: open)",
    )
    p.add_argument("--type", choices=["full", "storage", "execution"], help="node type (default full)")
    p.add_argument(
        "--retain-job-history",
        action="store_const",
        const=True,
        default=None,
        help="keep job information after jobs finish",
    )
    p.add_argument(
        "--disable-strict-deployment",
        action="store_const",
        const=True,
        default=None,
        help="let any known identity deploy processors (default: only the node owner)",
    )
    p.add_argument(
        "--bind-all-address",
        action="store_const",
        const=True,
        default=None,
        help="listen on all network addresses (0.0.0.0)",
    )
    p.add_argument("--max-object-size", type=parse_size, help="largest data object accepted, e.g. 10G")
    # storage quotas (DOR)
    p.add_argument(
        "--storage-quota",
        type=_quota,
        default=argparse.SUPPRESS,
        metavar="SIZE",
        help="bytes each identity's data objects may take on this node's DOR, e.g. 50G, or 'unlimited' "
        "(default 10G; the node's own identity is exempt)",
    )
    p.add_argument(
        "--storage-quota-for",
        type=_quota_for,
        action="append",
        metavar="IID=SIZE",
        help="an identity's own storage quota, e.g. <iid>=100G or <iid>=unlimited (repeatable)",
    )
    p.add_argument("--max-jobs", type=_positive_int, help="RTI jobs running at once (default: the CPU count)")
    p.add_argument(
        "--max-remote-jobs",
        type=_positive_int,
        help="RTI jobs running at once on ssh and slurm backends, which use other machines (default: 64)",
    )
    p.add_argument(
        "--unsafe-no-sandbox",
        action="store_true",
        help="run adapters WITHOUT the bubblewrap sandbox, as this node's user (warned about at every start)",
    )
    p.add_argument(
        "--job-network",
        choices=["allow", "deny"],
        default="allow",
        help='may jobs use the network (default allow; a descriptor may also say "network": false)',
    )
    p.add_argument(
        "--sandbox-uid", type=_positive_int, help="node run as root: the uid adapters run as (default nobody)"
    )
    p.add_argument(
        "--job-memory", type=parse_size, help="memory of a job, agent instance or install (default: half the RAM)"
    )
    p.add_argument("--job-pids", type=_positive_int, help="processes and threads of a job at once (default 1024)")
    p.add_argument("--job-cores", type=_positive_float, help="CPU cores of a job (default: all)")
    p.add_argument("--job-walltime", type=_positive_float, help="seconds a job may run (default 7 days)")
    # HTTP limits of the REST service
    p.add_argument(
        "--http-max-header-size", type=_header_size, help="largest request line + headers, e.g. 32K (default 32K; 431)"
    )
    p.add_argument(
        "--http-header-timeout", type=_positive_float, help="seconds a client has to send its headers (default 10)"
    )
    p.add_argument(
        "--http-body-timeout",
        type=_positive_float,
        help="seconds a request body may go without a byte while the node waits for it (default 30)",
    )
    p.add_argument(
        "--http-keepalive-timeout", type=_positive_float, help="seconds an idle connection stays open (default 5)"
    )
    p.add_argument("--http-max-connections", type=_positive_int, help="open HTTP connections (default 1024; 503)")
    p.add_argument(
        "--http-max-connections-per-client",
        type=_positive_int,
        help="open HTTP connections from one address (default 128; 429)",
    )
    p.add_argument(
        "--trusted-proxy",
        action="append",
        metavar="ADDRESS",
        help="a reverse proxy in front of the node (IP address or network, repeatable): its X-Forwarded-For names "
        "the client for rate limits and the audit log, and the per-client connection limit does not apply to it "
        "(default: none; the header is ignored)",
    )
    # Bulk transfers (issue 21)
    p.add_argument(
        "--http-sendfile-threads",
        type=_count,
        help="downloads the kernel sends at once, each from a thread of its own (default 16; 0: none, all go "
        "through the event loop)",
    )
    # Quotas and fairness of the RTI and NodeDB (issue 14, item 7); the node owner is exempt from the job bounds.
    p.add_argument(
        "--max-pending-per-user", type=_positive_int, help="jobs of one user waiting to start (default 100; more: 429)"
    )
    p.add_argument(
        "--max-running-per-user",
        type=_positive_int,
        help="jobs of one user running at once (default: none; free slots go to the user with the fewest running)",
    )
    p.add_argument(
        "--identity-publish-rate",
        type=_positive_float,
        help="identity publications per second per client address (default 1; more: 429)",
    )
    p.add_argument(
        "--identity-publish-burst", type=_positive_int, help="identity publications at once per client (default 30)"
    )
    p.add_argument("--max-identities", type=_positive_int, help="identities NodeDB keeps (default 20000)")
    p.add_argument("--max-nodes", type=_positive_int, help="node records NodeDB keeps (default 1000)")
    p.add_argument(
        "--job-message-length", type=_positive_int, help="characters of a trigger message (default 1000; cut)"
    )
    p.add_argument(
        "--job-messages", type=_positive_int, help="trigger messages kept per job, first and last (default 100)"
    )
    p.add_argument("--job-messages-bytes", type=parse_size, help="bytes of trigger messages kept per job (default 64K)")
    p.add_argument(
        "--max-pending-uploads",
        type=_positive_int,
        help="streamed uploads of one identity waiting for their signed commit (default 4; more: 429)",
    )
    p.add_argument(
        "--pending-upload-lifetime",
        type=_positive_float,
        help="seconds an uncommitted streamed upload is kept (default 600)",
    )
    # Git sources (add-gpp, deploy)
    p.add_argument(
        "--allow-local-git",
        action="store_true",
        help="also fetch adapters from local paths, file://, plain http and loopback/private/link-local addresses "
        "(development; default: https and ssh to public hosts only)",
    )
    # Dashboard sign-in (issue 20)
    p.add_argument(
        "--dashboard-session-lifetime",
        type=_positive_float,
        help="seconds a dashboard session lasts from sign-in (default 28800)",
    )
    p.add_argument(
        "--dashboard-max-sessions", type=_positive_int, help="dashboard sessions one identity holds (default 16)"
    )
    p.add_argument(
        "--dashboard-token-max-lifetime",
        type=_positive_float,
        help="longest lifetime, in seconds, a dashboard login token may claim (default 600)",
    )
    # Operating the node (issue 19): log ring, job statistics
    p.add_argument(
        "--log-ring-lines", type=_positive_int, help="log lines kept in memory for diagnostics (default 500)"
    )
    p.add_argument(
        "--health-recent-jobs",
        type=_positive_int,
        help="most recent finished jobs read for health and diagnostics statistics (default 500)",
    )
    # Audit log (issue 19 item 3): retention
    p.add_argument(
        "--audit-max-entries",
        type=_audit_entries,
        help="audit log entries kept, the oldest removed first (default 500000, about 1.2 KB each; at least 100)",
    )
    p.add_argument(
        "--audit-max-age",
        type=_non_negative_float,
        metavar="DAYS",
        help="days an audit log entry is kept (default 365; 0: no age limit)",
    )
    # Faults (issue 15): liveness and the deadline of network-wide lookups
    p.add_argument(
        "--p2p-offline-after",
        type=_positive_float,
        help="seconds a peer may stay silent before it is shown offline (default 15; pings after a third of it)",
    )
    p.add_argument(
        "--network-deadline",
        type=_positive_float,
        help="seconds a lookup on the other nodes' DORs may take in all (default 3; late nodes are left out)",
    )
    p.add_argument(
        "--stop-grace",
        type=_positive_float,
        help="seconds requests in flight may still take when the node stops (default 2; then 503 'Node is stopping')",
    )
    # the original CLI's service flags (issue 16)
    p.add_argument(
        "--disable-concurrency",
        action="store_const",
        const=True,
        default=None,
        help="run one RTI job at a time (the original's flag; the same as --max-jobs 1)",
    )
    p.add_argument(
        "--purge-inactive-jobs",
        action="store_true",
        help="forget finished jobs (records, logs, working folders) when the node starts",
    )
    # Resource packages, account levels and offers (issue 18)
    p.add_argument(
        "--packages",
        dest="packages_file",
        type=Path,
        help="JSON file of resource packages (name, cores, memory MiB, disk MiB, walltime s, gpus); "
        "default: tiny/small/medium/large scaled to the machine",
    )
    p.add_argument(
        "--default-level",
        choices=["guest", "basic", "extended"],
        help="account level of identities the node owner has not given one (default extended)",
    )
    p.add_argument("--offer-lifetime", type=_positive_float, help="seconds an offer stays valid (default 300)")
    p.add_argument(
        "--offer-veto", type=Path, help="executable given each offer's task as JSON; answers accept or reject"
    )
    p.add_argument("--offer-veto-timeout", type=_positive_float, help="seconds the veto hook may take (default 5)")
    p.add_argument(
        "--booking-grace",
        type=_positive_float,
        help="seconds into a booking after which it expires if no job of its user has started (default 900)",
    )
    p.add_argument(
        "--job-gpus",
        type=_count,
        help="GPUs a job may use on this node; a job or package asking more is refused (default 0)",
    )
    p.add_argument("--use-defaults", action="store_true", help="do not ask: use defaults for missing values")
    p.set_defaults(handler=run)
