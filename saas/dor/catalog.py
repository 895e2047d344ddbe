"""The DOR catalog: object records, access lists, typed tags and key envelopes in SQLite (WAL).

Functions take a connection and run inside one transaction of `saas.sqlite.Database` (in a worker thread).
Records are assembled into the pydantic models of `saas.dor.schemas`; tags keep their JSON types."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from saas.dor.schemas import CDataObject, DataObject, DataObjectRecipe, GPPDataObject

__all__ = ["SCHEMA", "ObjectRow", "SearchQuery"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    obj_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('c', 'gpp')),
    c_hash TEXT NOT NULL,
    data_type TEXT NOT NULL,
    data_format TEXT NOT NULL,
    owner_iid TEXT NOT NULL,
    access_restricted INTEGER NOT NULL,
    content_encrypted INTEGER NOT NULL,
    created INTEGER NOT NULL,
    last_accessed INTEGER NOT NULL,
    size INTEGER NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_owner ON objects (owner_iid);
CREATE INDEX IF NOT EXISTS objects_type ON objects (data_type);
CREATE INDEX IF NOT EXISTS objects_format ON objects (data_format);
CREATE INDEX IF NOT EXISTS objects_c_hash ON objects (c_hash);
CREATE INDEX IF NOT EXISTS objects_created ON objects (created);
CREATE TABLE IF NOT EXISTS access (
    obj_id TEXT NOT NULL REFERENCES objects (obj_id) ON DELETE CASCADE,
    iid TEXT NOT NULL,
    PRIMARY KEY (obj_id, iid)
);
CREATE INDEX IF NOT EXISTS access_iid ON access (iid);
CREATE TABLE IF NOT EXISTS tags (
    obj_id TEXT NOT NULL REFERENCES objects (obj_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (obj_id, key)
);
CREATE INDEX IF NOT EXISTS tags_key_value ON tags (key, value);
CREATE TABLE IF NOT EXISTS envelopes (
    obj_id TEXT NOT NULL REFERENCES objects (obj_id) ON DELETE CASCADE,
    iid TEXT NOT NULL,
    envelope TEXT NOT NULL,
    PRIMARY KEY (obj_id, iid)
);
"""

_COLUMNS = (
    "obj_id, kind, c_hash, data_type, data_format, owner_iid, access_restricted, content_encrypted, created, "
    "last_accessed, size, details"
)


@dataclass
class ObjectRow:
    """One object as stored; `details` holds creators, license, recipe or gpp."""

    obj_id: str
    kind: str
    c_hash: str
    data_type: str
    data_format: str
    owner_iid: str
    access_restricted: bool
    content_encrypted: bool
    created: int
    last_accessed: int
    size: int
    details: dict[str, Any]
    access: list[str] = field(default_factory=list)
    tags: dict[str, Any] = field(default_factory=dict)

    def may_read(self, iid: str | None) -> bool:
        return not self.access_restricted or (iid is not None and (iid == self.owner_iid or iid in self.access))

    def to_model(self, recipe: DataObjectRecipe | None = None) -> CDataObject | GPPDataObject:
        """The API model; `recipe`: the recipe as a model already (saves validating it again from `details`)."""
        common: dict[str, Any] = {
            "obj_id": self.obj_id,
            "c_hash": self.c_hash,
            "data_type": self.data_type,
            "data_format": self.data_format,
            "created": DataObject.CreationDetails(
                timestamp=self.created, creators_iid=self.details.get("creators_iid", [])
            ),
            "owner_iid": self.owner_iid,
            "access_restricted": self.access_restricted,
            "access": self.access,
            "tags": self.tags,
            "last_accessed": self.last_accessed,
            "size": self.size,
        }
        if self.kind == "gpp":
            return GPPDataObject(**common, gpp=self.details["gpp"])
        return CDataObject(
            **common,
            content_encrypted=self.content_encrypted,
            license=self.details["license"],
            recipe=recipe if recipe is not None else self.details.get("recipe"),
        )


def tag_json(value: Any) -> str:
    """The stored form of a tag value: one text per JSON value (keys sorted, so exact search does not depend on
    key order; non-ASCII kept, so patterns match it)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _row(record: sqlite3.Row) -> ObjectRow:
    return ObjectRow(
        obj_id=record["obj_id"],
        kind=record["kind"],
        c_hash=record["c_hash"],
        data_type=record["data_type"],
        data_format=record["data_format"],
        owner_iid=record["owner_iid"],
        access_restricted=bool(record["access_restricted"]),
        content_encrypted=bool(record["content_encrypted"]),
        created=record["created"],
        last_accessed=record["last_accessed"],
        size=record["size"],
        details=json.loads(record["details"]),
    )


def _attach(conn: sqlite3.Connection, rows: list[ObjectRow]) -> list[ObjectRow]:
    if not rows:
        return rows
    by_id = {r.obj_id: r for r in rows}
    for start in range(0, len(rows), 500):
        ids = [r.obj_id for r in rows[start : start + 500]]
        marks = ",".join("?" * len(ids))
        for rec in conn.execute(f"SELECT obj_id, iid FROM access WHERE obj_id IN ({marks}) ORDER BY iid", ids):
            by_id[rec["obj_id"]].access.append(rec["iid"])
        for rec in conn.execute(f"SELECT obj_id, key, value FROM tags WHERE obj_id IN ({marks}) ORDER BY key", ids):
            by_id[rec["obj_id"]].tags[rec["key"]] = json.loads(rec["value"])
    return rows


def get(conn: sqlite3.Connection, obj_id: str) -> ObjectRow | None:
    record = conn.execute(f"SELECT {_COLUMNS} FROM objects WHERE obj_id = ?", (obj_id,)).fetchone()
    return None if record is None else _attach(conn, [_row(record)])[0]


def get_many(conn: sqlite3.Connection, obj_ids: Sequence[str]) -> list[ObjectRow]:
    rows: list[ObjectRow] = []
    for start in range(0, len(obj_ids), 500):
        ids = list(obj_ids[start : start + 500])
        marks = ",".join("?" * len(ids))
        rows += [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM objects WHERE obj_id IN ({marks})", ids)]
    return _attach(conn, rows)


def insert(conn: sqlite3.Connection, row: ObjectRow, envelopes: dict[str, str]) -> bool:
    """Insert a record with its access list, tags and envelopes; False if the obj_id exists already."""
    cursor = conn.execute(
        f"INSERT OR IGNORE INTO objects ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            row.obj_id,
            row.kind,
            row.c_hash,
            row.data_type,
            row.data_format,
            row.owner_iid,
            int(row.access_restricted),
            int(row.content_encrypted),
            row.created,
            row.last_accessed,
            row.size,
            json.dumps(row.details),
        ),
    )
    if cursor.rowcount == 0:
        return False
    conn.executemany("INSERT OR IGNORE INTO access (obj_id, iid) VALUES (?, ?)", [(row.obj_id, i) for i in row.access])
    conn.executemany(
        "INSERT OR REPLACE INTO tags (obj_id, key, value) VALUES (?, ?, ?)",
        [(row.obj_id, k, tag_json(v)) for k, v in row.tags.items()],
    )
    conn.executemany(
        "INSERT OR REPLACE INTO envelopes (obj_id, iid, envelope) VALUES (?, ?, ?)",
        [(row.obj_id, i, e) for i, e in envelopes.items()],
    )
    return True


def delete(conn: sqlite3.Connection, obj_id: str) -> bool:
    return conn.execute("DELETE FROM objects WHERE obj_id = ?", (obj_id,)).rowcount > 0


def c_hash_in_use(conn: sqlite3.Connection, c_hash: str) -> bool:
    return conn.execute("SELECT 1 FROM objects WHERE c_hash = ? LIMIT 1", (c_hash,)).fetchone() is not None


def identities_in_use(conn: sqlite3.Connection, iids: Sequence[str]) -> set[str]:
    """Which of `iids` own an object here or are granted access to one."""
    marks = ",".join("?" * len(iids))
    owners = conn.execute(f"SELECT DISTINCT owner_iid FROM objects WHERE owner_iid IN ({marks})", list(iids))
    readers = conn.execute(f"SELECT DISTINCT iid FROM access WHERE iid IN ({marks})", list(iids))
    return {r[0] for r in owners} | {r[0] for r in readers}


def all_c_hashes(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT DISTINCT c_hash FROM objects")}


def get_touched(conn: sqlite3.Connection, obj_id: str, reader_iid: str | None, when: int) -> ObjectRow | None:
    """`get`, recording an access when `reader_iid` may read the object."""
    row = get(conn, obj_id)
    if row is not None and row.may_read(reader_iid):
        touch(conn, obj_id, when)
        row.last_accessed = when
    return row


def touch(conn: sqlite3.Connection, obj_id: str, when: int) -> None:
    conn.execute("UPDATE objects SET last_accessed = ? WHERE obj_id = ?", (when, obj_id))


def grant(conn: sqlite3.Connection, obj_id: str, iid: str, envelope: str | None) -> None:
    conn.execute("INSERT OR IGNORE INTO access (obj_id, iid) VALUES (?, ?)", (obj_id, iid))
    if envelope is not None:
        put_envelope(conn, obj_id, iid, envelope)


def revoke(conn: sqlite3.Connection, obj_id: str, iid: str) -> None:
    conn.execute("DELETE FROM access WHERE obj_id = ? AND iid = ?", (obj_id, iid))
    conn.execute("DELETE FROM envelopes WHERE obj_id = ? AND iid = ?", (obj_id, iid))


def set_owner(conn: sqlite3.Connection, obj_id: str, iid: str) -> None:
    conn.execute("UPDATE objects SET owner_iid = ? WHERE obj_id = ?", (iid, obj_id))
    conn.execute("INSERT OR IGNORE INTO access (obj_id, iid) VALUES (?, ?)", (obj_id, iid))


def set_tags(conn: sqlite3.Connection, obj_id: str, tags: dict[str, Any]) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO tags (obj_id, key, value) VALUES (?, ?, ?)",
        [(obj_id, k, tag_json(v)) for k, v in tags.items()],
    )


def remove_tags(conn: sqlite3.Connection, obj_id: str, keys: Sequence[str]) -> None:
    conn.executemany("DELETE FROM tags WHERE obj_id = ? AND key = ?", [(obj_id, k) for k in keys])


def put_envelope(conn: sqlite3.Connection, obj_id: str, iid: str, envelope: str) -> None:
    conn.execute("INSERT OR REPLACE INTO envelopes (obj_id, iid, envelope) VALUES (?, ?, ?)", (obj_id, iid, envelope))


def get_envelope(conn: sqlite3.Connection, obj_id: str, iid: str) -> str | None:
    record = conn.execute("SELECT envelope FROM envelopes WHERE obj_id = ? AND iid = ?", (obj_id, iid)).fetchone()
    return None if record is None else record[0]


def holds_key(conn: sqlite3.Connection, obj_id: str, iid: str) -> bool:
    """Whether `iid` holds the content key of an object: its owner (the key is in the owner's keystore), or an
    identity with a key envelope of its own. False for an unknown object."""
    record = conn.execute(
        "SELECT owner_iid = ? OR EXISTS (SELECT 1 FROM envelopes WHERE obj_id = ? AND iid = ?) FROM objects"
        " WHERE obj_id = ?",
        (iid, obj_id, iid, obj_id),
    ).fetchone()
    return record is not None and bool(record[0])


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


@dataclass
class SearchQuery:
    patterns: list[str] = field(default_factory=list)
    owner_iid: str | None = None
    data_type: str | None = None
    data_format: str | None = None
    c_hashes: list[str] = field(default_factory=list)
    tags: dict[str, Any | None] = field(default_factory=dict)  # key -> required JSON value, or None: has key
    limit: int = 100
    offset: int = 0


def search(conn: sqlite3.Connection, query: SearchQuery, reader_iid: str | None) -> list[ObjectRow]:
    """Objects matching every given filter (any of the patterns), visible to `reader_iid`, newest first."""
    where: list[str] = []
    args: list[Any] = []
    visible, visible_args = _visible(reader_iid)
    where.append(visible)
    args += visible_args
    for column in ("owner_iid", "data_type", "data_format"):
        value = getattr(query, column)
        if value is not None:
            where.append(f"o.{column} = ?")
            args.append(value)
    if query.c_hashes:
        where.append(f"o.c_hash IN ({','.join('?' * len(query.c_hashes))})")
        args += query.c_hashes
    if query.patterns:
        ors = []
        for pattern in query.patterns:
            like = _like(pattern)
            ors.append(
                "o.data_type LIKE ? ESCAPE '\\' OR o.data_format LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM "
                "tags t WHERE t.obj_id = o.obj_id AND (t.key LIKE ? ESCAPE '\\' OR t.value LIKE ? ESCAPE '\\'))"
            )
            args += [like, like, like, like]
        where.append("(" + " OR ".join(ors) + ")")
    for key, value in query.tags.items():
        if value is None:
            where.append("EXISTS (SELECT 1 FROM tags t WHERE t.obj_id = o.obj_id AND t.key = ?)")
            args.append(key)
        else:
            where.append("EXISTS (SELECT 1 FROM tags t WHERE t.obj_id = o.obj_id AND t.key = ? AND t.value = ?)")
            args += [key, tag_json(value)]
    sql = (
        f"SELECT {', '.join('o.' + c.strip() for c in _COLUMNS.split(','))} FROM objects o WHERE "
        f"{' AND '.join(where)} ORDER BY o.created DESC, o.obj_id LIMIT ? OFFSET ?"
    )
    rows = [_row(r) for r in conn.execute(sql, [*args, query.limit, query.offset])]
    return _attach(conn, rows)


def _visible(reader_iid: str | None, alias: str = "o") -> tuple[str, list[Any]]:
    """SQL condition (and its arguments) for objects `reader_iid` may see (unrestricted ones when anonymous)."""
    if reader_iid is None:
        return f"{alias}.access_restricted = 0", []
    return (
        f"({alias}.access_restricted = 0 OR {alias}.owner_iid = ? OR EXISTS "
        f"(SELECT 1 FROM access a WHERE a.obj_id = {alias}.obj_id AND a.iid = ?))",
        [reader_iid, reader_iid],
    )


def statistics(conn: sqlite3.Connection, reader_iid: str | None) -> dict[str, Any]:
    """Counts and distinct values over the objects `reader_iid` may see."""
    visible, args = _visible(reader_iid)

    def column(sql: str) -> list[str]:
        return [r[0] for r in conn.execute(sql, args)]

    count, size = conn.execute(
        f"SELECT COUNT(*), COALESCE(SUM(o.size), 0) FROM objects o WHERE {visible}", args
    ).fetchone()
    return {
        "data_types": column(f"SELECT DISTINCT o.data_type FROM objects o WHERE {visible} ORDER BY 1"),
        "data_formats": column(f"SELECT DISTINCT o.data_format FROM objects o WHERE {visible} ORDER BY 1"),
        "tag_keys": column(
            f"SELECT DISTINCT t.key FROM tags t JOIN objects o ON o.obj_id = t.obj_id WHERE {visible} ORDER BY 1"
        ),
        "objects": count,
        "content_bytes": size,
    }


def find_by_c_hashes(conn: sqlite3.Connection, c_hashes: Sequence[str]) -> list[ObjectRow]:
    """Objects by content hash regardless of access (provenance); callers filter what they show."""
    if not c_hashes:
        return []
    marks = ",".join("?" * len(c_hashes))
    rows = [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM objects WHERE c_hash IN ({marks})", list(c_hashes))]
    return _attach(conn, rows)
