"""`NodeDBProxy`: the NodeDB of one node over REST (method names as in the original middleware)."""

from __future__ import annotations

from typing import Any

from saas.core.errors import NotFoundError
from saas.core.identity import Identity
from saas.core.signing import Signer
from saas.nodedb.schemas import NodeInfo
from saas.rest.proxy import RESTProxy

__all__ = ["NodeDBProxy"]


class NodeDBProxy(RESTProxy):
    def __init__(self, address: str | tuple[str, int], keystore: Signer | None = None, **kwargs: Any):
        super().__init__(address, keystore, **kwargs)

    def get_node(self) -> NodeInfo:
        return NodeInfo.model_validate(self.get_json("/db/node"))

    def get_network(self) -> list[NodeInfo]:
        return [NodeInfo.model_validate(n) for n in self.get_json("/db/network")]

    def get_identities(self) -> dict[str, Identity]:
        return {i["id"]: Identity.model_validate(i) for i in self.get_json("/db/identity")}

    def get_identity(self, iid: str) -> Identity | None:
        """The identity, or None if the node does not know it."""
        try:
            return Identity.model_validate(self.get_json(f"/db/identity/{iid}"))
        except NotFoundError:
            return None

    def update_identity(self, identity: Identity) -> Identity:
        """Publish a (self-signed) identity record to the node."""
        return Identity.model_validate(self.request("POST", "/db/identity", json_body=identity.model_dump()).json())
