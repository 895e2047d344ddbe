"""`AuditProxy`: the audit log of one node over REST (`/audit`), and offline verification of an export.

`get_entries(...)` returns the entries the keystore's identity may see (the node owner: all); `export(path)` saves
the whole log (node owner) as JSON lines; `verify_export(path, ...)` checks such a file — or a node's
`audit.sqlite` — on this machine, trusting nothing the node says but its identity ID."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from saas.audit.chain import AuditEntry, VerifyReport, verify_file
from saas.core.signing import Signer
from saas.rest.proxy import RESTProxy

__all__ = ["AuditProxy", "verify_file"]

_ENTRIES = TypeAdapter(list[AuditEntry])


class AuditProxy(RESTProxy):
    def __init__(self, address: str | tuple[str, int], keystore: Signer | None = None, **kwargs: Any):
        super().__init__(address, keystore, **kwargs)

    def get_entries(
        self,
        obj_id: str | None = None,
        job_id: str | None = None,
        event: str | None = None,
        since: int | None = None,
        until: int | None = None,
        after_seq: int = 0,
        limit: int = 1000,
    ) -> list[AuditEntry]:
        """Entries (in order) about the caller's objects and jobs on the node, or done by the caller."""
        given = {"obj_id": obj_id, "job_id": job_id, "event": event, "since": since, "until": until}
        params = {k: v for k, v in given.items() if v is not None} | {"after_seq": after_seq, "limit": limit}
        return _ENTRIES.validate_python(self.get_json("/audit", params=params, signed=True))

    def export(self, path: Path) -> Path:
        """Save the node's whole log (node owner only) as JSON lines at `path`."""
        response = self.request("GET", "/audit/export", signed=True, stream=True)
        try:
            with open(path, "wb") as f:
                for chunk in response.iter_bytes():
                    f.write(chunk)
        finally:
            response.close()
        return path

    def verify(self, anchor: tuple[int, str] | None = None) -> VerifyReport:
        """The node's own verification of its stored log (node owner only)."""
        params = {"anchor_seq": anchor[0], "anchor_hash": anchor[1]} if anchor else None
        document = self.get_json("/audit/verify", params=params, signed=True)
        report = VerifyReport(**{k: v for k, v in document.items() if k != "ok"})
        return report
