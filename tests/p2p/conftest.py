"""Helpers for the P2P tests: waiting for a condition with an explicit deadline, a small network of in-process
nodes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests import waiting

if TYPE_CHECKING:
    from saas.core.keystore import Keystore
    from tests.conftest import RunningNode


def wait_until(condition: Callable[[], Any], timeout: float, message: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds (the shared
    `tests.waiting.wait_until`, with this module's argument names)."""
    return waiting.wait_until(condition, timeout, what=message)


def start_network(
    root: Path, keystores: Callable[[str], Keystore], names: Sequence[str], users: Sequence[Keystore], **config: Any
) -> list[RunningNode]:
    """In-process full nodes on 127.0.0.1, one per keystore name (the first is the boot node), datastores under
    `root`, `config` for every `NodeConfig`; `users` published and known on every node once each node sees all the
    others as DOR peers. If a node fails to start or the network does not form, those started are stopped."""
    from saas.config import NodeConfig
    from saas.node import Node
    from saas.nodedb.proxy import NodeDBProxy
    from tests.conftest import PASSWORD, RunningNode, free_port

    nodes: list[RunningNode] = []
    boot = None
    try:
        for name in names:
            keystore = keystores(name)
            p2p = ("127.0.0.1", free_port())
            settings: dict[str, Any] = {"log_level": "WARNING", "allow_local_git": True, **config}
            node_config = NodeConfig(
                datastore=root / name,
                keystore=keystore.path,
                password=PASSWORD,
                rest_address=("127.0.0.1", free_port()),
                p2p_address=p2p,
                boot_node=boot,
                **settings,
            )
            boot = boot or "{}:{}".format(*p2p)
            running = RunningNode(Node(node_config, keystore))
            nodes.append(running)
            running.start()
        with NodeDBProxy(nodes[0].address) as db:
            for user in users:
                db.update_identity(user.identity)
        for n in nodes:
            wait_until(
                lambda n=n: (  # type: ignore[misc]  # mypy cannot type a lambda with a default argument
                    len(n.node.p2p.dor_peers()) == len(nodes) - 1
                    and all(n.node.nodedb.get_identity(user.iid) is not None for user in users)
                ),
                15,
                "the network to form and the users to be known everywhere",
            )
        return nodes
    except BaseException:
        stop_all(nodes)
        raise


def stop_all(nodes: Sequence[RunningNode]) -> None:
    for running in reversed(nodes):
        running.stop()
