"""`saas-cli doctor`: check a node and its surroundings and say what is wrong and how to fix it (issue 19, item 4).

Exit code 0 only if every check passed; 1 if any failed (the report is printed either way, `--json` too)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from saas_cli.context import Context

__all__ = ["register"]

DEFAULT_DATASTORE = "~/.datastore"


def doctor(ctx: Context, args: argparse.Namespace) -> None:
    from saas.ops.doctor import Doctor
    from saas_cli.commands.credentials import check_ssh_login

    datastore = Path(args.datastore).expanduser() if args.datastore else None
    if datastore is None and (default := Path(DEFAULT_DATASTORE).expanduser()).exists():
        datastore = default  # else not on this machine: the node's disk is still checked
    temp = ctx.temp_directory()
    checks = Doctor(
        ctx.node_address(args.address),
        ctx.load_keystore,
        datastore,
        boot_node=args.boot_node,
        temp_dir=temp,
        check_ssh=lambda credentials: check_ssh_login(credentials, temp),
    ).run()
    failed = [c for c in checks if not c.ok]
    ctx.out.result({"ok": not failed, "checks": [c.document() for c in checks]})
    ctx.out.table(["RESULT", "CHECK", "DETAIL"], [["ok" if c.ok else "FAILED", c.name, c.detail] for c in checks])
    if failed:
        ctx.out.line()
        ctx.out.line("How to fix:")
        for c in failed:
            ctx.out.line(f"  - {c.name}: {c.fix}")
        ctx.out.error(f"{len(failed)} of {len(checks)} checks failed: {', '.join(c.name for c in failed)}")
        sys.exit(1)
    ctx.out.line(f"All {len(checks)} checks passed.")


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "doctor",
        help="check the keystore, the node, its datastore, DOR, P2P, sandbox and backends; say how to fix problems",
    )
    p.add_argument("--address", help="REST address of the node (default $SAAS_ADDRESS or 127.0.0.1:5001)")
    p.add_argument(
        "--datastore",
        metavar="PATH",
        help=f"the node's datastore folder to check (default {DEFAULT_DATASTORE}, if it exists here)",
    )
    p.add_argument("--boot-node", metavar="HOST:PORT", help="also check that this boot node is reachable")
    p.set_defaults(handler=doctor)
