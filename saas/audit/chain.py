"""The audit log's entries and their verification: pure code, no server dependency (the CLI verifies offline).

An entry is `{seq, time, event, actor, owner, obj_id, job_id, proc_id, details, prev}` plus its `hash` (SHA-256
of the canonical JSON of those fields) and `signature` (the node's ECDSA signature over `entry_message(hash)`).
`prev` is the hash of the entry before it (`GENESIS` for the first), so changing, removing or reordering any
entry breaks the chain. The log's **head** — its last entry's seq and hash — is signed too (`head_message`, a
different message from any entry's), so entries cut from the end are told apart from a log that never had them.

Retention removes the oldest entries and appends an `audit.pruned` entry naming the first seq it kept: a chain
must start at seq 1 (prev `GENESIS`) or at the `first_kept` of its newest `audit.pruned` entry; anything else
means entries were removed from its start.

Sources: the node's SQLite file (`read_database`) or an export (`read_export`: a header line
`{"audit_log": 1, "node": <identity record>, "head": {...}}`, then one entry per line)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from saas.core.errors import SaaSError
from saas.core.identity import Identity
from saas.core.signing import canonical_json

__all__ = [
    "EXPORT_VERSION",
    "GENESIS",
    "AuditEntry",
    "AuditHead",
    "AuditTamperedError",
    "VerifyReport",
    "entry_hash",
    "entry_message",
    "head_message",
    "read_database",
    "read_export",
    "verify",
]

GENESIS = "0" * 64
EXPORT_VERSION = 1
HASHED = ("seq", "time", "event", "actor", "owner", "obj_id", "job_id", "proc_id", "details", "prev")
MAX_PROBLEMS = 20  # problems listed in a report (the count is exact)


class AuditTamperedError(SaaSError):
    """An audit log does not verify: an entry was changed, removed or added, or a signature is not the node's."""


class AuditEntry(BaseModel):
    seq: int
    time: int  # ms since the epoch (UTC)
    event: str
    actor: str | None = None  # the identity that acted (authenticated), None for the node itself
    owner: str | None = None  # the identity whose object or job it concerns
    obj_id: str | None = None
    job_id: str | None = None
    proc_id: str | None = None
    details: dict[str, Any] = {}
    prev: str
    hash: str
    signature: str


class AuditHead(BaseModel):
    seq: int
    hash: str
    signature: str


def entry_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json({k: fields.get(k) for k in HASHED})).hexdigest()


def entry_message(hash_hex: str) -> bytes:
    return b"saas-audit-entry\n" + hash_hex.encode("ascii")


def head_message(seq: int, hash_hex: str) -> bytes:
    return f"saas-audit-head\n{seq}\n{hash_hex}".encode("ascii")


@dataclass
class VerifyReport:
    node_iid: str | None = None
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    anchor_checked: bool = False

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "node_iid": self.node_iid,
            "entries": self.entries,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "last_hash": self.last_hash,
            "problems": self.problems,
            "problem_count": self.problem_count,
            "anchor_checked": self.anchor_checked,
        }


def verify(
    node: Identity | None,
    entries: Iterable[AuditEntry],
    head: AuditHead | None,
    expected_iid: str | None = None,
    anchor: tuple[int, str] | None = None,
) -> VerifyReport:
    """Check every entry's hash, signature and link, where the chain starts, and that it ends at its signed head.
    `expected_iid`: the node the log must be signed by; `anchor` (seq, hash): an entry seen earlier that the log
    must still hold (unless retention pruned it)."""
    report = VerifyReport(node_iid=node.id if node is not None else None)
    if node is None:
        report.problem("the log names no node identity: nothing to verify its signatures with")
        return report
    try:
        node.verify()  # self-certifying: the ID belongs to the key
    except SaaSError as e:
        report.problem(f"the node identity of the log is invalid: {e.reason}")
        return report
    if expected_iid is not None and node.id != expected_iid:
        report.problem(f"the log is signed by node {node.id}, not by {expected_iid}")
        return report
    previous: AuditEntry | None = None
    first_kept = 1
    for entry in entries:
        report.entries += 1
        fields = entry.model_dump()
        if entry_hash(fields) != entry.hash:
            report.problem(f"entry {entry.seq} was altered (its content does not match its hash)")
        elif not node.verify_signature(entry_message(entry.hash), entry.signature):
            report.problem(f"entry {entry.seq} is not signed by node {node.id}")
        if previous is None:
            report.first_seq = entry.seq
            if entry.seq == 1 and entry.prev != GENESIS:
                report.problem("entry 1 does not start the chain")
        elif entry.seq != previous.seq + 1:
            report.problem(f"entries {previous.seq + 1}..{entry.seq - 1} are missing")
        elif entry.prev != previous.hash:
            report.problem(f"entry {entry.seq} does not follow entry {previous.seq} (the chain is broken)")
        if entry.event == "audit.pruned" and isinstance(entry.details.get("first_kept"), int):
            first_kept = max(first_kept, entry.details["first_kept"])
        if anchor is not None and entry.seq == anchor[0]:
            report.anchor_checked = True
            if entry.hash != anchor[1]:
                report.problem(f"entry {entry.seq} is not the one seen before (its hash changed)")
        previous = entry
    if previous is not None:
        report.last_seq, report.last_hash = previous.seq, previous.hash
    _check_start(report, first_kept)
    _check_head(report, node, head)
    if anchor is not None and not report.anchor_checked:
        pruned = report.first_seq is not None and anchor[0] < report.first_seq <= first_kept
        if not pruned:
            report.problem(f"entry {anchor[0]} seen before is no longer in the log")
    return report


def _check_start(report: VerifyReport, first_kept: int) -> None:
    if report.first_seq is None or report.first_seq == 1 or report.first_seq == first_kept:
        return
    if report.first_seq > first_kept:  # (fewer: entries retention removed are still there, which is harmless)
        report.problem(f"entries {first_kept}..{report.first_seq - 1} were removed from the start of the log")


def _check_head(report: VerifyReport, node: Identity, head: AuditHead | None) -> None:
    if head is None:
        if report.entries:
            report.problem("the log has no signed head: entries may have been removed from its end")
        return
    if not node.verify_signature(head_message(head.seq, head.hash), head.signature):
        report.problem("the log's head is not signed by its node")
    elif report.last_seq != head.seq or report.last_hash != head.hash:
        last = report.last_seq if report.last_seq is not None else "none"
        report.problem(f"the log ends at entry {last} but its signed head is entry {head.seq}: entries were removed")


# -- sources ------------------------------------------------------------------------------------------------------


def entry_from_row(row: sqlite3.Row | tuple[Any, ...]) -> AuditEntry:
    values = dict(zip(COLUMNS, row, strict=True))
    values["details"] = json.loads(values["details"])
    return AuditEntry.model_validate(values)


COLUMNS = (*HASHED, "hash", "signature")
SELECT = f"SELECT {', '.join(COLUMNS)} FROM entries"


def read_database(
    conn: sqlite3.Connection,
) -> tuple[Identity | None, AuditHead | None, Iterator[AuditEntry]]:
    """The node identity, head and entries of an audit database, read in the transaction the caller opened."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'node'").fetchone()
    node = Identity.model_validate_json(row[0]) if row else None
    row = conn.execute("SELECT seq, hash, signature FROM head WHERE id = 1").fetchone()
    head = AuditHead(seq=row[0], hash=row[1], signature=row[2]) if row else None
    rows = conn.execute(SELECT + " ORDER BY seq")
    return node, head, (entry_from_row(r) for r in rows)


def verify_database(path: Path, expected_iid: str | None = None, anchor: tuple[int, str] | None = None) -> VerifyReport:
    """Verify an audit database file (blocking). An unreadable or damaged file is a report with that problem."""
    report = VerifyReport()
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as e:
        report.problem(f"cannot open the audit database: {e}")
        return report
    try:
        conn.execute("BEGIN")  # one snapshot: head and entries agree
        node, head, entries = read_database(conn)
        return verify(node, entries, head, expected_iid, anchor)
    except (sqlite3.Error, ValueError) as e:
        report.problem(f"cannot read the audit database (damaged or truncated): {e}")
        return report
    finally:
        conn.close()


def read_export(lines: Iterable[str]) -> tuple[Identity | None, AuditHead | None, Iterator[AuditEntry]]:
    """The node identity, head and entries of an export (JSON lines). Raises `ValueError` for a malformed one."""
    iterator = iter(lines)
    header = json.loads(next(iterator, "{}") or "{}")
    if not isinstance(header, dict) or header.get("audit_log") != EXPORT_VERSION:
        raise ValueError("not an audit log export (its first line is not the export header)")
    node = Identity.model_validate(header["node"]) if header.get("node") else None
    head = AuditHead.model_validate(header["head"]) if header.get("head") else None
    return node, head, (AuditEntry.model_validate_json(line) for line in iterator if line.strip())


def verify_file(path: Path, expected_iid: str | None = None, anchor: tuple[int, str] | None = None) -> VerifyReport:
    """Verify an export or an audit database file (blocking)."""
    with open(path, "rb") as f:
        is_sqlite = f.read(16) == b"SQLite format 3\x00"
    if is_sqlite:
        return verify_database(path, expected_iid, anchor)
    report = VerifyReport()
    try:
        with open(path, encoding="utf-8") as f:
            node, head, entries = read_export(f)
            return verify(node, entries, head, expected_iid, anchor)
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        report.problem(f"cannot read the export (damaged or not an audit log): {str(e)[:200]}")
        return report
