"""Storage quotas per identity (DESIGN §12): how many bytes each owner's data objects may take on this DOR.

Accounting: every object counts its full `size` for its owner, GPPs included, also when other objects share its
content file (same c_hash): usage never depends on what others store, so it cannot tell anyone that someone else
holds the same bytes, and it does not change when someone else deletes. Ownership transfer moves the object's
bytes to the new owner. The catalog keeps a per-owner sum in the table `usage`, maintained by SQLite triggers in
the same transaction as every insert, delete and owner change (so the check costs one indexed read).

Enforcement: an add is checked early (`Quotas.check`, with the size announced or known) and finally inside the
transaction that inserts the record (`insert_within`), so concurrent adds cannot together pass the quota. The
node's own identity is exempt. The functions taking a connection run inside a `saas.sqlite.Database` transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from saas.core.errors import DORError, InsufficientStorageError
from saas.core.helpers import human_size  # kept here for callers of `saas.dor.quota.human_size`
from saas.dor import catalog
from saas.dor.catalog import ObjectRow

__all__ = ["SCHEMA", "QuotaExceededError", "Quotas", "human_size", "insert_within", "rebuild", "set_owner_within"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    iid TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL,
    objects INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS usage_insert AFTER INSERT ON objects BEGIN
    INSERT INTO usage (iid, bytes, objects) VALUES (NEW.owner_iid, NEW.size, 1)
        ON CONFLICT (iid) DO UPDATE SET bytes = bytes + NEW.size, objects = objects + 1;
END;
CREATE TRIGGER IF NOT EXISTS usage_delete AFTER DELETE ON objects BEGIN
    UPDATE usage SET bytes = bytes - OLD.size, objects = objects - 1 WHERE iid = OLD.owner_iid;
END;
CREATE TRIGGER IF NOT EXISTS usage_owner AFTER UPDATE OF owner_iid ON objects
WHEN NEW.owner_iid != OLD.owner_iid BEGIN
    UPDATE usage SET bytes = bytes - OLD.size, objects = objects - 1 WHERE iid = OLD.owner_iid;
    INSERT INTO usage (iid, bytes, objects) VALUES (NEW.owner_iid, NEW.size, 1)
        ON CONFLICT (iid) DO UPDATE SET bytes = bytes + NEW.size, objects = objects + 1;
END;
"""


class QuotaExceededError(DORError, InsufficientStorageError):
    """Storing this would take an owner past their storage quota on this node (507)."""


def rebuild(conn: sqlite3.Connection) -> None:
    """Recount every owner's usage from the records (at start-up: also fills `usage` in an older catalog)."""
    conn.execute("DELETE FROM usage")
    conn.execute(
        "INSERT INTO usage (iid, bytes, objects) SELECT owner_iid, SUM(size), COUNT(*) FROM objects GROUP BY owner_iid"
    )


def used(conn: sqlite3.Connection, iid: str) -> tuple[int, int]:
    """(bytes, objects) owned by `iid`."""
    record = conn.execute("SELECT bytes, objects FROM usage WHERE iid = ?", (iid,)).fetchone()
    return (0, 0) if record is None else (int(record[0]), int(record[1]))


class Quotas:
    """The quota of each identity: `default` (None: unlimited), `overrides` per identity, none for `exempt`."""

    def __init__(self, default: int | None, overrides: Mapping[str, int | None], exempt: str):
        self.default = default
        self.overrides = dict(overrides)
        self.exempt = exempt

    def limit(self, iid: str) -> int | None:
        if iid == self.exempt:
            return None
        return self.overrides.get(iid, self.default)

    def check(self, iid: str, used_bytes: int, adding: int, transfer: bool = False) -> None:
        """Raise `QuotaExceededError` if `adding` more bytes take `iid` past their quota."""
        limit = self.limit(iid)
        if limit is None or used_bytes + adding <= limit:
            return
        what = "Taking over" if transfer else "Storing"
        free = human_size(max(limit - used_bytes, 0))
        raise QuotaExceededError(
            f"{what} {human_size(adding)} would exceed the storage quota of {iid} on this node: "
            f"{human_size(used_bytes)} of {human_size(limit)} used, {free} free. Delete data objects no longer "
            "needed (saas-cli dor remove), or ask the node's operator for a larger quota (saas-cli service "
            "--storage-quota / --storage-quota-for)",
            {"owner_iid": iid, "quota": limit, "used": used_bytes, "adding": adding},
        )


def insert_within(conn: sqlite3.Connection, row: ObjectRow, envelopes: dict[str, str], quotas: Quotas) -> bool:
    """`catalog.insert`, refused (and rolled back with the transaction) if it takes the owner past their quota."""
    inserted = catalog.insert(conn, row, envelopes)
    if inserted:
        after, _ = used(conn, row.owner_iid)
        quotas.check(row.owner_iid, after - row.size, row.size)
    return inserted


def set_owner_within(conn: sqlite3.Connection, obj_id: str, iid: str, size: int, quotas: Quotas) -> None:
    """`catalog.set_owner`, refused if the object's `size` takes the new owner past their quota."""
    before, _ = used(conn, iid)
    catalog.set_owner(conn, obj_id, iid)
    after, _ = used(conn, iid)
    if after != before:  # not already theirs
        quotas.check(iid, before, size, transfer=True)
