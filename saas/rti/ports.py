"""The RTI's narrow view of the rest of the node (DESIGN §12): `LocalDOR`, what it uses of this node's DOR, and
`Network`, what it asks of other nodes. The RTI depends on these protocols, not on `Node`; no module outside
`saas.dor` reads the DOR's SQLite (the DOR answers through the methods below).

- `LocalDOR` is satisfied by `saas.dor.service.DORService` as it is (`local_dor(node)` gives it, or None for a node
  without a DOR).
- `Network` is satisfied by `NodeNetwork`, an adapter over the node's P2P service and its peers' REST services
  (`saas.rti.placement`, `saas.dor.remote`); every method keeps the checks of the function it calls (records are
  checked against their content address, content against the verified c_hash).
- `NodeKeys` is what the job pipeline uses of this node's keystore (`saas.core.keystore.Keystore` as it is): its
  identity, signing recipes and unwrapping the key envelopes of encrypted inputs."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from saas.core.delegation import Delegation
    from saas.core.identity import Identity
    from saas.core.keystore import Keystore
    from saas.dor.schemas import AddCDataObjectParameters, CDataObject, GitProcessorPointer, GPPDataObject
    from saas.dor.service import LocalAdds
    from saas.node import Node
    from saas.nodedb.schemas import NodeInfo
    from saas.rti.placement import InputLocation
    from saas.rti.schemas import Task

__all__ = ["LocalDOR", "Network", "NodeKeys", "NodeNetwork", "local_dor"]


@runtime_checkable
class NodeKeys(Protocol):
    """This node's keys as the job pipeline uses them (blocking: crypto, so called in a worker thread)."""

    @property
    def iid(self) -> str: ...

    @property
    def identity(self) -> Identity: ...

    def sign(self, message: bytes) -> str: ...

    def unwrap_key(self, envelope: bytes) -> bytes: ...


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

    def identity(self, iid: str) -> Identity | None: ...

    def check_target(self, out: Task.Output) -> None: ...

    async def output_target(self, out: Task.Output) -> NodeInfo | None: ...

    async def require_key(self, name: str, location: InputLocation, user_iid: str) -> None: ...

    async def envelope(self, custodian: NodeInfo, obj_id: str) -> str: ...


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
        from saas.rti import outputs

        return await outputs.upload_output(self._node.keystore, self.identity, target, params, path, created, name)

    def identity(self, iid: str) -> Identity | None:
        """The identity `iid` as this node knows it (its NodeDB), None for an unknown one."""
        return self._node.nodedb.get_identity(iid)

    def check_target(self, out: Task.Output) -> None:
        """Raise `InvalidInputError` if an output's target cannot take it (`placement.check_target`)."""
        from saas.rti import placement

        placement.check_target(self._node, out)

    async def output_target(self, out: Task.Output) -> NodeInfo | None:
        """The DOR an output goes to: None for this node's, else another node's record (`placement.output_dor`)."""
        from saas.rti import placement

        return await placement.output_dor(self._node, out)

    async def require_key(self, name: str, location: InputLocation, user_iid: str) -> None:
        """For an encrypted input: whether the job's user holds its key, as its DOR says (`placement.require_key`)."""
        from saas.rti import placement

        await placement.require_key(self._node, name, location, user_iid)

    async def envelope(self, custodian: NodeInfo, obj_id: str) -> str:
        """This node's key envelope (base64) of an encrypted object on another node's DOR, asked over REST signed by
        this node. Raises `SaaSError` when it has none there or the DOR does not answer."""
        from saas.dor.proxy import DORProxy

        keystore: Keystore = self._node.keystore

        def get() -> str:
            with DORProxy(custodian.rest_address, keystore=keystore, node_iid=custodian.identity.id) as proxy:
                return base64.b64encode(proxy.get_envelope(obj_id, keystore)).decode()

        return await asyncio.to_thread(get)


def local_dor(node: Node) -> LocalDOR | None:
    """This node's DOR as a `LocalDOR`, or None for a node without one (an execution node)."""
    return node.dor
