"""`saas-cli audit`: a node's signed audit log — `show` (the events about your objects and jobs), `export` (the
whole log, node owner) and `verify` (checked on this machine: a node's log, an export, or a node's audit.sqlite).

Group flag `--address` (before the sub-command) picks the node. A log that fails verification exits with 11."""

from __future__ import annotations

import argparse
import datetime
import json
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from saas.core.errors import InvalidInputError
from saas_cli.context import Context

if TYPE_CHECKING:
    from saas.audit.chain import AuditEntry, VerifyReport

__all__ = ["parse_when", "register"]

HEADERS = ["SEQ", "TIME", "EVENT", "ACTOR", "OBJECT / JOB / PROCESSOR", "DETAILS"]
PAGE = 1000
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, now: datetime.datetime | None = None) -> int:
    """`30m`, `24h`, `7d`, `2w` (that long ago) or an ISO date / date and time (local time unless it names its
    zone) as ms since the epoch."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match:
        return int((now.timestamp() - float(match.group(1)) * _UNITS[match.group(2)]) * 1000)
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(f"'{text}' is not a time: use e.g. 24h, 7d or 2026-12-01T08:00") from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time
    return int(when.timestamp() * 1000)


def _short(iid: str | None) -> str:
    return "-" if not iid else iid[:8]


def _time(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _details(entry: AuditEntry) -> str:
    return " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in entry.details.items())


def _subject(entry: AuditEntry) -> str:
    parts = [f"obj {entry.obj_id[:12]}" if entry.obj_id else "", f"job {entry.job_id}" if entry.job_id else ""]
    if entry.proc_id and not entry.job_id:
        parts.append(f"proc {entry.proc_id[:12]}")
    return " ".join(p for p in parts if p) or "-"


def show(ctx: Context, args: argparse.Namespace) -> None:
    from saas.audit.proxy import AuditProxy

    keystore = ctx.load_keystore()
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    entries: list[AuditEntry] = []
    with AuditProxy(ctx.node_address(args.address), keystore) as proxy:
        after = 0
        while len(entries) < args.limit:
            page = proxy.get_entries(
                obj_id=args.object,
                job_id=args.job,
                event=args.event,
                since=since,
                until=until,
                after_seq=after,
                limit=min(PAGE, args.limit - len(entries)),
            )
            entries += page
            if len(page) < PAGE:
                break
            after = page[-1].seq
    ctx.out.result([e.model_dump() for e in entries])
    if not entries:
        ctx.out.line("No audit entries about your objects or jobs match on this node.")
        return
    ctx.out.table(
        HEADERS,
        [[e.seq, _time(e.time), e.event, _short(e.actor), _subject(e), _details(e)] for e in entries],
    )


def export(ctx: Context, args: argparse.Namespace) -> None:
    from saas.audit.proxy import AuditProxy

    keystore = ctx.load_keystore()
    target = Path(args.file).expanduser()
    with AuditProxy(ctx.node_address(args.address), keystore) as proxy:
        proxy.export(target)
    ctx.out.result({"file": str(target)}, f"Audit log exported to {target} (check it with 'saas-cli audit verify').")


def _anchor(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    match = re.fullmatch(r"(\d+):([0-9a-f]{64})", text.strip())
    if not match:
        raise InvalidInputError("--anchor must be SEQ:HASH, as printed by an earlier 'audit verify'")
    return int(match.group(1)), match.group(2)


def verify(ctx: Context, args: argparse.Namespace) -> None:
    from saas.audit.chain import AuditTamperedError, verify_file

    anchor = _anchor(args.anchor)
    expected = args.node
    if args.file is not None:
        path = Path(args.file).expanduser()
        if not path.is_file():
            raise InvalidInputError(f"No file '{path}'", {"path": str(path)})
        report = verify_file(path, expected, anchor)
    else:
        from saas.audit.proxy import AuditProxy

        keystore = ctx.load_keystore()
        with (
            AuditProxy(ctx.node_address(args.address), keystore) as proxy,
            tempfile.TemporaryDirectory(dir=ctx.temp_dir) as folder,
        ):
            expected = expected or proxy.node_iid
            report = verify_file(proxy.export(Path(folder) / "audit.jsonl"), expected, anchor)
    _print_report(ctx, report)
    if not report.ok:
        raise AuditTamperedError(
            f"The audit log failed verification: {report.problems[0]}", {"problems": report.problem_count}
        )


def _print_report(ctx: Context, report: VerifyReport) -> None:
    ctx.out.result(report.to_dict())
    node = report.node_iid or "an unknown node"
    span = f" (seq {report.first_seq}..{report.last_seq})" if report.entries else ""
    if report.ok:
        ctx.out.line(f"Audit log of node {node}: {report.entries} entries{span}, chain and signatures verified.")
        if report.last_seq is not None:
            ctx.out.line(f"Head: {report.last_seq}:{report.last_hash} (check later with --anchor)")
        return
    ctx.out.line(f"Audit log of node {node}: {report.entries} entries{span}, {report.problem_count} problem(s):")
    for problem in report.problems:
        ctx.out.line(f"  - {problem}")


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("audit", help="a node's signed audit log: who did what to your objects and jobs")
    group.add_argument("--address", help="REST address of the node (default $SAAS_ADDRESS or 127.0.0.1:5001)")
    group.set_defaults(handler=None, _parser=group)
    sub = group.add_subparsers(title="commands", metavar="COMMAND")
    p = sub.add_parser("show", help="the events about your objects and jobs on the node (node owner: all)")
    p.add_argument("--object", metavar="OBJ_ID", help="only the events about this data object")
    p.add_argument("--job", metavar="JOB_ID", help="only the events about this job")
    p.add_argument("--event", help="only this kind of event, e.g. object.read")
    p.add_argument("--since", metavar="WHEN", help="from this time on: 24h, 7d or 2026-12-01T08:00")
    p.add_argument("--until", metavar="WHEN", help="before this time (same forms as --since)")
    p.add_argument("--limit", type=int, default=1000, help="entries at most (default 1000)")
    p.set_defaults(handler=show)
    p = sub.add_parser("export", help="save the node's whole audit log to a file (node owner)")
    p.add_argument("file", metavar="FILE", help="where to write it (JSON lines)")
    p.set_defaults(handler=export)
    p = sub.add_parser(
        "verify",
        help="check an audit log's chain, signatures and head on this machine (exit 11 if it fails)",
    )
    p.add_argument(
        "--file", metavar="PATH", help="an export or a node's audit.sqlite (offline); default: the node's log"
    )
    p.add_argument("--node", metavar="IID", help="the node that must have signed the log")
    p.add_argument("--anchor", metavar="SEQ:HASH", help="an entry seen before that the log must still hold")
    p.set_defaults(handler=verify)
