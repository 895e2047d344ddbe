"""`saas-cli network show`: the nodes a node knows, with their services, addresses and whether they are online.

Group flag `--address` (before the sub-command) picks the node to ask."""

from __future__ import annotations

import argparse
import datetime
from typing import TYPE_CHECKING, Any

from saas_cli.commands import health
from saas_cli.context import Context, spread_group_option

if TYPE_CHECKING:
    from saas.nodedb.schemas import NodeInfo

__all__ = ["register"]

HEADERS = ["NODE IDENTITY ID", "DOR?", "RTI?", "REST ADDRESS", "P2P ADDRESS", "LAST SEEN", "ONLINE"]


def _yes_no(value: bool | None) -> str:
    return "Yes" if value else "No"


def _time(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _document(info: NodeInfo) -> dict[str, Any]:
    return {
        "iid": info.identity.id,
        "name": info.identity.name,
        "dor_service": info.dor_service,
        "rti_service": info.rti_service,
        "rest_address": "{}:{}".format(*info.rest_address),
        "p2p_address": "{}:{}".format(*info.p2p_address),
        "peer_id": info.peer_id,
        "multiaddrs": info.multiaddrs,
        "last_seen": info.last_seen,
        "online": info.online,
        "lies": info.lies,
    }


def show(ctx: Context, args: argparse.Namespace) -> None:
    from saas.nodedb.proxy import NodeDBProxy

    with NodeDBProxy(ctx.node_address(args.address)) as proxy:
        nodes = proxy.get_network()
    ctx.out.result([_document(n) for n in nodes])
    ctx.out.table(
        HEADERS,
        [
            [
                n.identity.id,
                _yes_no(n.dor_service),
                _yes_no(n.rti_service),
                "{}:{}".format(*n.rest_address),
                "{}:{}".format(*n.p2p_address),
                _time(n.last_seen),
                _yes_no(n.online),
            ]
            for n in nodes
        ],
    )


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("network", help="the nodes of the network, as one node sees them")
    group.add_argument(
        "--address",
        help="REST address of the node (default $SAAS_ADDRESS or 127.0.0.1:5001; also after the sub-command)",
    )
    group.set_defaults(handler=None, _parser=group)
    sub = group.add_subparsers(title="commands", metavar="COMMAND")
    p = sub.add_parser("show", help="list every known node with its services, addresses and online state")
    p.set_defaults(handler=show)
    health.register(sub)
    spread_group_option(group, "--address", "address")
