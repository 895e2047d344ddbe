"""`HealthProxy`: a node's health, the network's health and a node's diagnostics over REST (the SDK side of
`saas.ops.api`)."""

from __future__ import annotations

from typing import Any

from saas.core.signing import Signer
from saas.ops.diagnostics import Diagnostics
from saas.ops.health import NetworkHealth, NodeHealth
from saas.rest.proxy import RESTProxy

__all__ = ["HealthProxy"]


class HealthProxy(RESTProxy):
    def __init__(self, address: str | tuple[str, int], keystore: Signer | None = None, **kwargs: Any):
        super().__init__(address, keystore, **kwargs)

    def get_node_health(self) -> NodeHealth:
        return NodeHealth.model_validate(self.get_json("/db/node/health"))

    def get_network_health(self, deadline: float | None = None) -> list[NetworkHealth]:
        """Every node the asked node knows, asked at once under `deadline` seconds (the node's default if None)."""
        params = {} if deadline is None else {"deadline": deadline}
        return [NetworkHealth.model_validate(d) for d in self.get_json("/db/health", params=params)]

    def get_diagnostics(self, signed: bool = False) -> Diagnostics:
        """The node's diagnostics; `signed` (with the node owner's keystore) adds reasons, job IDs and log lines."""
        return Diagnostics.model_validate(self.get_json("/db/node/diagnostics", signed=signed))
