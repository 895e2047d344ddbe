"""`saas-cli rti offers`, `rti packages` and `rti level ...` (issue 18): ask a node "can I do this?", list its
resource packages, and (node owner) assign account levels."""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas.core.errors import InvalidInputError, MissingValueError
from saas_cli.context import Context

if TYPE_CHECKING:
    from saas.rti.offer_schemas import Offer
    from saas.rti.proxy import RTIProxy

__all__ = ["add_rank_arguments", "offer_request", "register_offers", "submit_anywhere"]


def _proxy(ctx: Context, args: argparse.Namespace, keystore: Any = None) -> RTIProxy:
    from saas.rti.proxy import RTIProxy

    return RTIProxy(ctx.node_address(args.address), keystore=keystore)


def _deadline(text: str) -> int:
    """An ISO date and time (UTC unless it says otherwise) as UTC milliseconds."""
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"--deadline must be an ISO date and time (e.g. 2026-12-24T18:00), not '{text}'"
        ) from None
    from saas.rti.booking_time import utc_ms

    return utc_ms(when)


def offer_request(args: argparse.Namespace) -> dict[str, Any]:
    """What to ask the nodes: from the job descriptor (`--job`) or `--proc-id`, with `--package` and `--deadline`."""
    request: dict[str, Any] = {}
    if args.job:
        try:
            task = json.loads(Path(args.job).expanduser().read_text(encoding="utf-8"))
        except OSError as e:
            raise InvalidInputError(f"Cannot read job descriptor '{args.job}': {e.strerror}") from None
        except ValueError as e:
            raise InvalidInputError(f"Job descriptor '{args.job}' is not valid JSON: {e}") from None
        if not isinstance(task, dict) or "proc_id" not in task:
            raise InvalidInputError("A job descriptor is a JSON object with proc_id, user_iid, input and output")
        request["proc_id"] = task["proc_id"]
        inputs = task.get("input") or []
        request["input"] = [i["obj_id"] for i in inputs if isinstance(i, dict) and i.get("type") == "reference"]
        for key in ("package", "resources"):
            if task.get(key) is not None:
                request[key] = task[key]
    if args.proc_id:
        request["proc_id"] = args.proc_id
    if "proc_id" not in request:
        raise MissingValueError("Give the job descriptor (--job FILE) or the processor (--proc-id ID)")
    if args.package:
        request["package"] = args.package
    if args.deadline:
        request["deadline"] = _deadline(args.deadline)
    return request


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:g} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} TB"


def offer_rows(offers: list[tuple[str, Offer]]) -> list[list[Any]]:
    rows = []
    for node, o in offers:
        package = f"{o.package.name} ({o.package.cores}c/{o.package.memory}M)" if o.package else "-"
        rows.append(
            [
                node,
                "yes" if o.can else "no",
                package,
                "yes" if o.deployed else "no",
                _size(o.locality.held_bytes),
                _size(o.locality.fetch_bytes),
                f"{o.queue.wait:.0f} s",
                "; ".join(o.reasons),
            ]
        )
    return rows


OFFER_HEADERS = ["NODE", "CAN", "PACKAGE", "DEPLOYED", "HELD", "TO FETCH", "WAIT", "REASONS"]


def offers(ctx: Context, args: argparse.Namespace) -> None:
    """Ask every RTI node of the network at once (one deadline) and show the offers ranked; with a job descriptor,
    submit it to the chosen node (`--choose N`, or asked when a TTY is present)."""
    from saas.rti.choosing import find_offers, submit_with_offer

    request = offer_request(args)
    keystore = ctx.load_keystore()
    found = find_offers(ctx.node_address(args.address), request, keystore, args.rank, args.timeout)
    rows = [("{}:{}".format(*n.rest_address), o) for n, o in found]
    ctx.out.table(["#", *OFFER_HEADERS], [[i + 1, *row] for i, row in enumerate(offer_rows(rows))])
    for missing in found.unanswered:
        ctx.out.warning(f"No offer from {missing}")
    chosen = _choose(ctx, args, rows)
    submitted = None
    if chosen is not None:
        from saas_cli.commands.dor import ensure_published
        from saas_cli.commands.rti_jobs import _read_task

        ensure_published(ctx, args, keystore)
        node, offer = found[chosen]
        job = submit_with_offer(node, offer, _read_task(args.job, keystore), keystore)
        submitted = {**job.model_dump(mode="json"), "node": rows[chosen][0], "offer_id": offer.offer_id}
        ctx.out.line(
            f"Job ID: {job.id}\nJob submitted to {rows[chosen][0]} (offer {chosen + 1}); follow it with: "
            f"saas-cli rti job --address {rows[chosen][0]} wait {job.id}"
        )
    ctx.out.result(
        {
            "offers": [o.model_dump(mode="json") for _, o in found],
            "unanswered": [{"iid": u.node.identity.id, "reason": u.reason} for u in found.unanswered],
            **({"submitted": submitted} if submitted is not None else {}),
        }
    )


def _choose(ctx: Context, args: argparse.Namespace, rows: list[tuple[str, Offer]]) -> int | None:
    """The offer (index) to submit the job to: `--choose N` (the N-th of the table), or asked when a TTY is
    present and a job descriptor was given; None: only show the offers."""
    if args.choose is not None:
        if not args.job:
            raise MissingValueError("the job descriptor to submit", "--job")
        if not 1 <= args.choose <= len(rows):
            raise InvalidInputError(f"--choose must be between 1 and {len(rows)} (the offers shown)")
        if not rows[args.choose - 1][1].can:
            raise InvalidInputError(f"Offer {args.choose} says its node cannot run the job: choose another")
        return args.choose - 1
    able = [(i, node, o) for i, (node, o) in enumerate(rows) if o.can]
    if not args.job or not able or not ctx.prompt.interactive or ctx.out.as_json:
        return None
    choices: list[tuple[str, int | None]] = [
        (f"{i + 1}. {node}: package {o.package.name if o.package else '-'}, wait {o.queue.wait:.0f} s", i)
        for i, node, o in able
    ]
    choices.append(("Do not submit", None))
    return ctx.prompt.select("Submit the job to:", choices, name="the offer to take", flag="--choose")


def submit_anywhere(ctx: Context, args: argparse.Namespace, task: dict[str, Any], keystore: Any) -> None:
    """`rti job submit --anywhere`: to the node with the best offer."""
    from saas.rti.choosing import submit_anywhere as submit

    node, offer, job = submit(ctx.node_address(args.address), task, keystore, args.rank, args.timeout)
    host, port = node.rest_address
    ctx.out.created(
        "Job ID",
        job.id,
        [
            f"Job submitted to {host}:{port} (package {offer.package.name if offer.package else '-'}); follow it "
            f"with: saas-cli rti job --address {host}:{port} wait {job.id}"
        ],
        {**job.model_dump(mode="json"), "node": f"{host}:{port}", "offer_id": offer.offer_id},
    )


def packages(ctx: Context, args: argparse.Namespace) -> None:
    with _proxy(ctx, args) as rti:
        found = rti.get_packages()
    ctx.out.result([p.model_dump(mode="json") for p in found])
    ctx.out.table(
        ["PACKAGE", "CORES", "MEMORY (MiB)", "DISK (MiB)", "WALLTIME (s)", "GPUS"],
        [[p.name, p.cores, p.memory, p.disk or "-", p.walltime, p.gpus] for p in found],
    )


def _level_text(level: Any) -> str:
    allowed = "all" if level.allowed is None else ", ".join(level.allowed) or "none"
    assigned = "assigned by the node owner" if level.signature else "the node's default"
    return f"{level.iid}: {level.level} ({assigned}); packages: {allowed}"


def level_show(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    with _proxy(ctx, args, keystore) as rti:
        level = rti.get_level(args.iid or keystore.iid, keystore)
    ctx.out.result(level.model_dump(mode="json"), _level_text(level))


def level_set(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    names = [p for p in (args.packages or "").split(",") if p]
    with _proxy(ctx, args, keystore) as rti:
        level = rti.set_level(args.iid, args.level, keystore, packages=names)
    ctx.out.result(level.model_dump(mode="json"), _level_text(level))


def level_reset(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    with _proxy(ctx, args, keystore) as rti:
        level = rti.reset_level(args.iid, keystore)
    ctx.out.result(level.model_dump(mode="json"), _level_text(level))


def level_list(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    with _proxy(ctx, args, keystore) as rti:
        found = rti.get_levels(keystore)
    ctx.out.result([level.model_dump(mode="json") for level in found])
    ctx.out.table(
        ["IDENTITY", "LEVEL", "PACKAGES"],
        [[x.iid, x.level, "all" if x.allowed is None else ", ".join(x.allowed)] for x in found],
    )


def add_rank_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rank",
        default="wait",
        help="order of the offers: wait, locality or an expression over wait, duration, held, fetch, cores, memory "
        "(lowest first; default wait)",
    )
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the nodes' offers (default 3)")


def add_offer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job", help="the job descriptor (JSON) to ask about")
    p.add_argument("--proc-id", help="the processor (instead of, or overriding, the job descriptor's)")
    p.add_argument("--package", help="the resource package to ask for (default: what the job asks)")
    p.add_argument("--deadline", help="when the job should be done (ISO date and time, UTC unless given)")
    add_rank_arguments(p)


def register_offers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("offers", help='ask every RTI node "can I do this?" (signed, expiring offers, ranked)')
    add_offer_arguments(p)
    p.add_argument(
        "--choose",
        type=int,
        metavar="N",
        help="submit the job (--job) to the node of offer N of the table (asked when a TTY is present)",
    )
    p.set_defaults(handler=offers)
    p = sub.add_parser("packages", help="the node's resource packages")
    p.set_defaults(handler=packages)
    level = sub.add_parser("level", help="account levels (assigned by the node owner)")
    level.set_defaults(handler=None, _parser=level)
    level_sub = level.add_subparsers(title="commands", metavar="COMMAND")
    p = level_sub.add_parser("show", help="an identity's level and the packages it may ask for (default: yours)")
    p.add_argument("iid", nargs="?", help="identity ID (default: the keystore's)")
    p.set_defaults(handler=level_show)
    p = level_sub.add_parser("set", help="assign a level (node owner)")
    p.add_argument("iid", help="identity ID")
    p.add_argument("--level", required=True, choices=["guest", "basic", "extended", "custom"])
    p.add_argument("--packages", help="custom level: the packages made for this identity (comma-separated)")
    p.set_defaults(handler=level_set)
    p = level_sub.add_parser("reset", help="forget an identity's level: the node's default applies (node owner)")
    p.add_argument("iid", help="identity ID")
    p.set_defaults(handler=level_reset)
    p = level_sub.add_parser("list", help="the levels the node owner assigned (node owner)")
    p.set_defaults(handler=level_list)
    register_bookings(sub)


_MARKS = {"free": "---", "taken": "===", "yours": "###"}


def _when(text: str | None, hourly: bool) -> int | None:
    """`--from` (ISO date or date and time, UTC unless given) as UTC ms on the hour (on the day without --hours)."""
    from saas.rti.booking_time import slot_start

    return None if text is None else slot_start(_deadline(text), hourly)


def availability(ctx: Context, args: argparse.Namespace) -> None:
    names = [p for p in (args.packages or "").split(",") if p] or None
    keystore = ctx.load_keystore() if ctx.keystore_id or ctx.password else None  # signed: "yours" shown
    with _proxy(ctx, args, keystore) as rti:
        grid = rti.get_availability(_when(args.start, bool(args.hours)), args.days, args.hours, names, keystore)
    ctx.out.result(grid.model_dump(mode="json"))
    if ctx.out.as_json:
        return
    step = grid.slot_hours * 3600
    fmt = "%H:00" if grid.slot_hours == 1 else "%a"
    labels = [time.strftime(fmt, time.gmtime(grid.start / 1000 + i * step)) for i in range(grid.slots)]
    width = max(len(n) for n in grid.grid)
    first = time.strftime("%Y-%m-%d", time.gmtime(grid.start / 1000))
    ctx.out.line(f"From {first} UTC (--- free, === taken, ### yours)")
    for name in reversed(list(grid.grid)):
        ctx.out.line(f"{name:>{width}}  " + " ".join(f"{_MARKS[x]:<5}"[: max(3, len(lab))] for x, lab in
                                                     zip(grid.grid[name], labels, strict=True)))  # fmt: skip
    ctx.out.line(" " * (width + 2) + " ".join(labels))


def book(ctx: Context, args: argparse.Namespace) -> None:
    if not args.days and not args.hours:
        raise MissingValueError("Give the length of the booking: --days N or --hours N")
    start = _when(args.start, bool(args.hours))
    assert start is not None  # --from is required
    hours = args.hours or args.days * 24
    keystore = ctx.load_keystore()
    with _proxy(ctx, args, keystore) as rti:
        booking = rti.book(args.package, start, hours, keystore)
    begin = time.strftime("%Y-%m-%d %H:00", time.gmtime(booking.start / 1000))
    end = time.strftime("%Y-%m-%d %H:00", time.gmtime(booking.end / 1000))
    ctx.out.result(booking.model_dump(mode="json"), f"Booked {booking.package} from {begin} to {end} UTC: {booking.id}")


def bookings(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    with _proxy(ctx, args, keystore) as rti:
        found = rti.get_bookings(keystore)
    ctx.out.result([b.model_dump(mode="json") for b in found])
    stamp = lambda ms: time.strftime("%Y-%m-%d %H:00", time.gmtime(ms / 1000))  # noqa: E731
    ctx.out.table(
        ["BOOKING", "PACKAGE", "FROM (UTC)", "TO (UTC)"],
        [[b.id, b.package, stamp(b.start), stamp(b.end)] for b in found],
    )


def unbook(ctx: Context, args: argparse.Namespace) -> None:
    keystore = ctx.load_keystore()
    with _proxy(ctx, args, keystore) as rti:
        booking = rti.unbook(args.booking_id, keystore)
    ctx.out.result(booking.model_dump(mode="json"), f"Booking {booking.id} cancelled")


def register_bookings(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("availability", help="which packages are free per day (or hour) on the node")
    p.add_argument("--packages", help="comma-separated package names (default: all)")
    p.add_argument("--from", dest="start", help="first day (ISO date, UTC; default today)")
    p.add_argument("--days", type=int, help="days to show (default 7)")
    p.add_argument("--hours", type=int, help="hours to show instead of days")
    p.set_defaults(handler=availability)
    p = sub.add_parser("book", help="book a package on the node for whole days or hours")
    p.add_argument("--package", required=True)
    p.add_argument("--from", dest="start", required=True, help="start (ISO date or date and time, UTC unless given)")
    p.add_argument("--days", type=int)
    p.add_argument("--hours", type=int)
    p.set_defaults(handler=book)
    p = sub.add_parser("bookings", help="your bookings on the node")
    p.set_defaults(handler=bookings)
    p = sub.add_parser("unbook", help="cancel a booking")
    p.add_argument("booking_id", metavar="BOOKING_ID")
    p.set_defaults(handler=unbook)
