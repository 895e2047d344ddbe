"""The node's signed, hash-chained audit log (issue 19 item 3): `chain` (entries and their verification, no server
dependency), `log` (the node's `AuditLog`), `api` (the `/audit` routes) and `proxy` (`AuditProxy`, the SDK side)."""
