"""The RTI's narrow view of the rest of the node (DESIGN §12): `LocalDOR`, what it uses of this node's DOR, and
`Network`, what it asks of other nodes. The RTI depends on these protocols, not on `Node`; no module outside
`saas.dor` reads the DOR's SQLite (the DOR answers through the methods below).

- `LocalDOR` is satisfied by `saas.dor.service.DORService` as it is (`local_dor(node)` gives it, or None for a node
  without a DOR).
- `Network` is satisfied by `NodeNetwork`, an adapter over the node's P2P service and its peers' REST services
  (`saas.rti.placement`, `saas.dor.remote`); every method keeps the checks of the function it calls (records are
  checked against their content address, content against the verified c_hash)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from saas.core.delegation import Delegation
    from saas.core.identity import Identity
    from saas.dor.schemas import AddCDataObjectParameters, CDataObject, GitProcessorPointer, GPPDataObject
    from saas.dor.service import LocalAdds
    from saas.node import Node
    from saas.nodedb.schemas import NodeInfo
    from saas.rti.placement import InputLocation
    from saas.rti.schemas import Task

__all__ = ["LocalDOR", "Network", "NodeNetwork", "local_dor"]


@runtime_checkable
class LocalDOR(Protocol):
    """This node's DOR as the RTI uses it: metadata (as a reader, or records as stored), local adds of outputs, key
    envelopes and key holders, content files and quotas."""

    async def get_meta(
        self, obj_id: str, reader: Identity | None, touch: bool = False
    ) -> CDataObject | GPPDataObject: ...

    async def records(self, obj_ids: Sequence[str]) -> dict[str, CDataObject | GPPDataObject]: ...

    async def envelope_for(self, obj_id: str, iid: str) -> str | None: ...

    async def holds_key(self, obj_id: str, iid: str, caller: Identity | None = None) -> bool: ...

    def local_adds(self) -> contextlib.AbstractAsyncContextManager[LocalAdds]: ...

    def touch_later(self, obj_id: str) -> None: ...

    def content_path(self, c_hash: str) -> Path: ...

    async def room_for(self, owner_iid: str, size: int) -> int | None: ...


@runtime_checkable
class Network(Protocol):
    """Other nodes as the RTI uses them: where an input or a GPP is, and moving content from and to their DORs."""

    async def find_input(
        self, item: Task.InputReference, user_iid: str, touch: bool = False, skip: str | None = None
    ) -> InputLocation: ...

    async def find_gpp(self, proc_id: str, custodian_iid: str | None = None) -> GitProcessorPointer: ...

    async def fetch(
        self,
        obj_id: str,
        custodian: NodeInfo,
        destination: Path,
        delegation: Delegation | None = None,
        *,
        expected_c_hash: str,
    ) -> Path: ...

    async def upload(
        self, target: NodeInfo, params: AddCDataObjectParameters, path: Path, created: int, name: str
    ) -> CDataObject: ...


class NodeNetwork:
    """`Network` over a node: its DOR first where the function it calls says so (inputs and GPPs are looked for on
    this node before the network), then its peers over P2P and REST, signed by this node."""

    def __init__(self, node: Node):
        self._node = node

    async def find_input(
        self, item: Task.InputReference, user_iid: str, touch: bool = False, skip: str | None = None
    ) -> InputLocation:
        from saas.rti import placement

        return await placement.find_input(self._node, item, user_iid, touch, skip)

    async def find_gpp(self, proc_id: str, custodian_iid: str | None = None) -> GitProcessorPointer:
        from saas.rti import placement

        return await placement.find_gpp(self._node, proc_id, custodian_iid)

    async def fetch(
        self,
        obj_id: str,
        custodian: NodeInfo,
        destination: Path,
        delegation: Delegation | None = None,
        *,
        expected_c_hash: str,
    ) -> Path:
        from saas.dor import remote

        return await remote.fetch_remote(
            self._node, obj_id, custodian, destination, delegation, expected_c_hash=expected_c_hash
        )

    async def upload(
        self, target: NodeInfo, params: AddCDataObjectParameters, path: Path, created: int, name: str
    ) -> CDataObject:
        from saas.rti import runner

        return await runner.upload_output(self._node, target, params, path, created, name)


def local_dor(node: Node) -> LocalDOR | None:
    """This node's DOR as a `LocalDOR`, or None for a node without one (an execution node)."""
    return node.dor
