"""NodeDB records. `NodeInfo` is a node's signed self-description; the fields follow the original middleware."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from saas.core.errors import IdentityError
from saas.core.identity import Identity
from saas.core.signing import canonical_json

__all__ = ["OBSERVED", "NodeInfo"]

# Fields a reader fills in from what it observed (never signed, sent or stored as part of the record).
OBSERVED = frozenset({"last_seen", "online", "lies"})


class NodeInfo(BaseModel):
    """A node record: signed by the node's identity over every field but `signature` and the `OBSERVED` ones:
    `last_seen`, `online` and `lies` (records of this node's DOR that did not verify, counted by the reader) are
    what the reader observed, not what the node claims."""

    model_config = ConfigDict(extra="forbid")

    identity: Identity
    dor_service: bool
    rti_service: bool
    rest_address: tuple[str, int]
    p2p_address: tuple[str, int]
    peer_id: str | None = None
    multiaddrs: list[str] = []
    retain_job_history: bool
    strict_deployment: bool
    started: int  # ms since epoch
    isolation: str | None = None  # how an RTI node runs adapters: "sandbox", or "none" (--unsafe-no-sandbox)
    sequence: int = 0
    signature: str | None = None
    last_seen: int | None = None
    online: bool | None = None
    lies: int | None = None

    def signed_content(self) -> bytes:
        return canonical_json(self.model_dump(mode="json", exclude={"signature", *OBSERVED}))

    def verify(self) -> None:
        """Raises `IdentityError` unless the identity and the node's signature are valid."""
        self.identity.verify()
        if not self.signature or not self.identity.verify_signature(self.signed_content(), self.signature):
            raise IdentityError("Node record signature is invalid", {"iid": self.identity.id})
