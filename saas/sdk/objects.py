"""The SDK's data objects: `SDKDataObject` (access, tags, provenance), `SDKCDataObject` (download, decrypted
with the keystore's content keys) and `SDKGPPDataObject` (deploy on an RTI). Objects are made by an `SDKContext`
(`saas.sdk.base`) and talk to their node through `DORProxy`; errors are those of `saas.core.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saas.core.errors import InvalidInputError, NotFoundError, RTIError
from saas.core.identity import Identity
from saas.dor.proxy import DORProxy
from saas.dor.schemas import CDataObject, DataObject, DataObjectProvenance, GPPDataObject
from saas.nodedb.schemas import NodeInfo

if TYPE_CHECKING:
    from saas.sdk.base import SDKContext
    from saas.sdk.jobs import SDKProcessor

__all__ = ["SDKCDataObject", "SDKDataObject", "SDKGPPDataObject"]

NodeRef = NodeInfo | str | tuple[str, int]


def _address(node: NodeInfo) -> str:
    return "{}:{}".format(*node.rest_address)


# -- data objects -------------------------------------------------------------------------------------------------


class SDKDataObject:
    """A data object and the DOR node that holds it. `meta` is refreshed by every call that changes the object."""

    def __init__(self, meta: DataObject, context: SDKContext, node: NodeInfo):
        if meta.custodian is None:
            meta.custodian = node
        self._meta = meta
        self._context = context
        self._node = node

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._meta.obj_id} {self._meta.data_type}/{self._meta.data_format}>"

    @property
    def meta(self) -> DataObject:
        return self._meta

    @property
    def node(self) -> NodeInfo:
        """The DOR node holding this object."""
        return self._node

    def _dor(self) -> DORProxy:
        return self._context._dor_proxy(self._node)

    def _update(self, meta: DataObject) -> None:
        meta.custodian = self._node
        self._meta = meta

    def delete(self) -> DataObject:
        """Delete the object (owner only); an encrypted object's key leaves the keystore too."""
        from saas.dor.encryption import forget_content_key

        with self._dor() as dor:
            meta = dor.delete_data_object(self._meta.obj_id, self._context.keystore)
        forget_content_key(self._context.keystore, self._meta.obj_id)
        return meta

    def grant_access(self, identity: Identity) -> None:
        """Give `identity` access (for encrypted content whose key the keystore holds, the key is shared too)."""
        with self._dor() as dor:
            self._update(dor.grant_access(self._meta.obj_id, self._context.keystore, identity))

    def revoke_access(self, identity: Identity | str) -> None:
        with self._dor() as dor:
            self._update(dor.revoke_access(self._meta.obj_id, self._context.keystore, identity))

    def transfer_ownership(self, new_owner: Identity | str) -> None:
        with self._dor() as dor:
            self._update(dor.transfer_ownership(self._meta.obj_id, self._context.keystore, new_owner))

    def update_tags(self, tags: Sequence[DataObject.Tag] | Mapping[str, Any]) -> None:
        """Set tags: `DataObject.Tag` items or a mapping of key to (JSON) value."""
        items = (
            [DataObject.Tag(key=k, value=v) for k, v in tags.items()]
            if isinstance(tags, Mapping)
            else [t if isinstance(t, DataObject.Tag) else DataObject.Tag.model_validate(t) for t in tags]
        )
        with self._dor() as dor:
            self._update(dor.update_tags(self._meta.obj_id, self._context.keystore, items))

    def remove_tags(self, keys: Sequence[str]) -> None:
        with self._dor() as dor:
            self._update(dor.remove_tags(self._meta.obj_id, self._context.keystore, list(keys)))

    def get_provenance(self) -> DataObjectProvenance:
        """How the object came to be: its recipe followed across every DOR of the network."""
        with self._dor() as dor:
            return dor.get_provenance(self._meta.obj_id)


class SDKCDataObject(SDKDataObject):
    """A content data object."""

    @property
    def meta(self) -> CDataObject:
        assert isinstance(self._meta, CDataObject)
        return self._meta

    def download(self, download_path: str | Path) -> Path:
        """Download the content to `download_path` (a folder: `<folder>/<obj_id>.<format>`), decrypted if needed.
        The file appears only once complete and checked against the object's c_hash."""
        from saas.dor.encryption import download_content

        target = Path(download_path)
        if target.is_dir():
            target = target / f"{self._meta.obj_id}.{self._meta.data_format}"
        with self._dor() as dor:
            return download_content(dor, self._context.keystore, self._meta, target)


class SDKGPPDataObject(SDKDataObject):
    """A Git-Processor-Pointer: deploy it on an RTI node to get a processor."""

    @property
    def meta(self) -> GPPDataObject:
        assert isinstance(self._meta, GPPDataObject)
        return self._meta

    def deploy(
        self, node: NodeRef, ssh_profile: str | None = None, wait: bool = True, timeout: float = 600.0
    ) -> SDKProcessor:
        """Deploy on the RTI of `node` (a `NodeInfo` such as `context.rti()`, or an address) and, with `wait`,
        block until it is ready; a failed deployment raises `RTIError` with the install log tail. `ssh_profile`
        names SSH credentials in the keystore for nodes that run adapters on a remote host."""
        keystore = self._context.keystore
        info = self._context._node_info(node)
        if not info.rti_service:
            raise InvalidInputError(f"Node {info.identity.id} at {_address(info)} has no RTI service")
        ssh_credentials = None
        if ssh_profile is not None:
            ssh_credentials = keystore.ssh_credentials.get(ssh_profile)
            if ssh_credentials is None:
                raise NotFoundError(f"No SSH credentials '{ssh_profile}' in the keystore", {"profile": ssh_profile})
        github_credentials = keystore.github_credentials.get(self.meta.gpp.source.rstrip("/"))
        custodian = None if self._node.identity.id == info.identity.id else self._node.identity.id
        with self._context._rti_proxy(info) as rti:
            processor = rti.deploy(
                self._meta.obj_id,
                keystore,
                gpp_custodian=custodian,
                ssh_credentials=ssh_credentials,
                github_credentials=github_credentials,
            )
            if wait:
                processor = rti.wait_deployed(self._meta.obj_id, timeout=timeout, authority=keystore)
                if processor.state == "deploying":
                    raise RTIError(f"Processor {self._meta.obj_id} is still deploying after {timeout:g} s")
                if processor.state != "ready":
                    raise RTIError(
                        f"Deploying processor {self._meta.obj_id} failed: {processor.error}",
                        {"proc_id": self._meta.obj_id, "log_tail": processor.log_tail},
                    )
        from saas.sdk.jobs import SDKProcessor

        return SDKProcessor(processor, self._context, info)
