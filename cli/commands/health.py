"""`saas-cli network health` and `saas-cli network diagnose NODE` (issue 19, items 1 and 2).

`health` asks the node at `--address` for the network's health: it asks every node it knows at once under one
deadline and shows, per node, whether it answered and its health (unreachable nodes: their last known health and
since when they do not answer), then the processors of every node.

`diagnose NODE` asks one node (an identity ID, a unique prefix of one, or a REST address `host:port`) for its
diagnostics. With the node owner's keystore in the keystore directory the request is signed, which adds the
failure reasons, job IDs and the node's last log lines; anyone else gets the public part."""

from __future__ import annotations

import argparse
import datetime
from typing import TYPE_CHECKING, Any

from saas.core.errors import InvalidInputError, NotFoundError
from saas_cli.context import Context

if TYPE_CHECKING:
    from saas.ops.health import NetworkHealth, NodeHealth

__all__ = ["register"]

HEALTH_HEADERS = [
    "NODE",
    "NAME",
    "REACHABLE",
    "VERSION",
    "UPTIME",
    "SERVICES",
    "RUN/QUEUE",
    "DONE/FAILED",
    "CPU LOAD",
    "MEM FREE",
    "DISK FREE",
    "LAST ERROR",
]
PROCESSOR_HEADERS = [
    "NODE",
    "PROCESSOR",
    "NAME",
    "STATE",
    "BACKEND",
    "RUNNING",
    "QUEUED",
    "INSTANCES",
    "JOB TIME MIN/MEDIAN/MAX",
]


def _time(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 2**30:.1f} GiB"


def _health_row(entry: NetworkHealth) -> list[Any]:
    h = entry.health
    reachable = "yes" if entry.reachable else f"NO since {_time(entry.unreachable_since)}"
    if h is None:
        return [entry.iid[:16], entry.name, reachable, *["-"] * 9]
    if not entry.reachable:
        reachable += f" (last known {_time(entry.answered)})"
    jobs = h.jobs
    running = sum(jobs.get(s, 0) for s in ("initialising", "running", "postprocessing"))
    error = "-" if h.last_error is None else f"{_time(h.last_error.get('time'))} {h.last_error.get('message', '')}"
    return [
        entry.iid[:16],
        entry.name,
        reachable,
        h.version,
        _duration(h.uptime),
        ",".join(h.services) or "-",
        f"{running}/{h.queue_length}",
        f"{jobs.get('successful', 0)}/{jobs.get('failed', 0)}",
        f"{h.cpu.get('load1', 0)}/{h.cpu.get('count', '?')}",
        _bytes(h.memory.get("available")),
        _bytes(h.disk.get("free")),
        error[:60],
    ]


def _processor_rows(iid: str, health: NodeHealth) -> list[list[Any]]:
    rows = []
    for p in health.processors:
        instances = "-"
        if p.instances is not None:
            instances = ",".join(str(i["state"]) for i in p.instances) or "0"
        times = "-"
        if p.job_time is not None:
            times = "{:.1f}/{:.1f}/{:.1f} s".format(p.job_time["min"], p.job_time["median"], p.job_time["max"])
        rows.append(
            [iid[:16], p.proc_id[:16], p.name or "-", p.state, p.backend, p.running, p.queued, instances, times]
        )
    return rows


def health(ctx: Context, args: argparse.Namespace) -> None:
    from saas.ops.proxy import HealthProxy

    with HealthProxy(ctx.node_address(args.address), timeout=args.deadline + 30) as proxy:
        entries = proxy.get_network_health(args.deadline)
    ctx.out.result([e.model_dump(mode="json") for e in entries])
    ctx.out.table(HEALTH_HEADERS, [_health_row(e) for e in entries])
    processors = [row for e in entries if e.health is not None for row in _processor_rows(e.iid, e.health)]
    if processors and not ctx.out.as_json:
        ctx.out.line()
        ctx.out.table(PROCESSOR_HEADERS, processors)
    for e in entries:
        if not e.reachable:
            ctx.out.warning(f"node {e.iid[:16]} ({e.name}) at {e.rest_address[0]}:{e.rest_address[1]}: {e.reason}")


def _find_node(ctx: Context, args: argparse.Namespace) -> tuple[str, tuple[str, int]]:
    """(identity ID, REST address) of the node NODE names, as the node at --address knows it."""
    from saas.core.helpers import parse_address
    from saas.nodedb.proxy import NodeDBProxy

    with NodeDBProxy(ctx.node_address(args.address)) as proxy:
        network = proxy.get_network()
    wanted = args.node.strip()
    if ":" in wanted:
        address = parse_address(wanted)
        found = [n for n in network if tuple(n.rest_address) == address]
    else:
        found = [n for n in network if n.identity.id.startswith(wanted.lower())]
    if not found:
        raise NotFoundError(f"No node '{wanted}' in the network of the node asked", {"node": wanted})
    if len(found) > 1:
        raise InvalidInputError(f"'{wanted}' names {len(found)} nodes: give more of the identity ID", {"node": wanted})
    return found[0].identity.id, (found[0].rest_address[0], found[0].rest_address[1])


def _owner_keystore(ctx: Context, iid: str) -> Any:
    """The node owner's keystore if it is in the keystore directory (loaded: asks for its password), else None."""
    from saas.core.keystore import Keystore, list_keystores

    for path, identity in list_keystores(ctx.keystore_dir):
        if identity.id == iid:
            return Keystore.load(path, ctx.ask_password())
    return None


def diagnose(ctx: Context, args: argparse.Namespace) -> None:
    from saas.ops.proxy import HealthProxy

    iid, address = _find_node(ctx, args)
    keystore = _owner_keystore(ctx, iid)
    with HealthProxy(address, keystore, node_iid=iid) as proxy:
        report = proxy.get_diagnostics(signed=keystore is not None)
    ctx.out.result(report.model_dump(mode="json"))
    if ctx.out.as_json:
        return
    out = ctx.out
    who = "as the node owner" if report.owner else "public part (the node owner also sees reasons, job IDs and logs)"
    out.line(f"Diagnostics of node {iid} at {address[0]}:{address[1]}, {who}")
    out.line(f"Based on the node's {report.jobs_read} most recent finished jobs.")
    out.line()
    out.line("Warnings:" if report.warnings else "Warnings: none")
    for w in report.warnings:
        out.line(f"  - [{w.kind}] {w.message}")
    if report.failures:
        out.line()
        out.line("Failed jobs:")
        out.table(
            ["PROCESSOR", "REASON", "COUNT", "FIRST SEEN", "LAST SEEN"],
            [
                [f.proc_id[:16], f.reason[:80], f.count, _time(f.first_seen), _time(f.last_seen)]
                for f in report.failures
            ],
        )
    for title, jobs in (("Slowest jobs:", report.slowest), ("Running longer than expected:", report.long_running)):
        if jobs:
            out.line()
            out.line(title)
            out.table(
                ["PROCESSOR", "JOB", "STATE", "SECONDS", "EXPECTED", "SUBMITTED"],
                [
                    [
                        j.proc_id[:16],
                        j.job_id or "-",
                        j.state,
                        f"{j.seconds:.1f}",
                        "-" if j.expected is None else f"{j.expected:.0f}",
                        _time(j.submitted),
                    ]
                    for j in jobs
                ],
            )
    if report.logs is not None:
        out.line()
        out.line(f"Last {len(report.logs)} log lines:")
        for line in report.logs:
            out.line(f"  {line}")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `health` and `diagnose` to the `network` group."""
    p = sub.add_parser("health", help="every node's health, asked at once (unreachable nodes: last known health)")
    p.add_argument(
        "--deadline",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how long to wait for the nodes' answers (default 3)",
    )
    p.set_defaults(handler=health)
    p = sub.add_parser("diagnose", help="a node's failed and slow jobs, warnings and (node owner) its last log lines")
    p.add_argument("node", metavar="NODE", help="identity ID of the node (or a unique prefix), or its REST address")
    p.set_defaults(handler=diagnose)
