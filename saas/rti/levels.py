"""Account levels (issue 18): what the node owner lets an identity ask of this node's RTI.

Levels: `guest` (no jobs), `basic` (packages tiny and small), `extended` (every package of the node), `custom` (tiny,
small and the packages named in the identity's record). The node owner always has every package. An identity the
owner has not given a level has the node's `default_level`.

What callers may rely on:
- a level is set by the node owner only (a signed request) and stored in the RTI's SQLite as a record signed by the
  node (`AccountLevel.signature`); a record whose signature does not verify (changed outside the node) is ignored,
  with a warning, and the identity has the default level.
- `allowed(iid)` is the set of package names the identity may ask for (None: all); it reads memory only."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field

from saas.core.errors import AuthorisationError, InvalidInputError, NotFoundError, RTIError
from saas.core.identity import Identity
from saas.rti.offer_schemas import AccountLevel, Level

if TYPE_CHECKING:
    import sqlite3

    from saas.node import Node
    from saas.sqlite import Database

__all__ = ["SCHEMA", "AccountLevel", "LevelParameters", "LevelStore", "UnknownIdentityError"]

logger = logging.getLogger(__name__)

BASIC = ("tiny", "small")
PackageName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]

SCHEMA = """
CREATE TABLE IF NOT EXISTS levels (iid TEXT PRIMARY KEY, record TEXT NOT NULL);
"""


class UnknownIdentityError(RTIError, NotFoundError):
    pass


class LevelParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Level
    packages: Annotated[list[PackageName], Field(max_length=64)] = Field(
        default_factory=list, description="custom level: the packages made for this identity"
    )


def _rows(conn: sqlite3.Connection) -> list[str]:
    return [r["record"] for r in conn.execute("SELECT record FROM levels")]


def _put(conn: sqlite3.Connection, record: AccountLevel) -> None:
    conn.execute("INSERT OR REPLACE INTO levels (iid, record) VALUES (?, ?)", (record.iid, record.model_dump_json()))


def _delete(conn: sqlite3.Connection, iid: str) -> None:
    conn.execute("DELETE FROM levels WHERE iid = ?", (iid,))


class LevelStore:
    def __init__(self, node: Node, db: Database):
        self._node = node
        self._db = db
        self._levels: dict[str, AccountLevel] = {}

    async def load(self) -> None:
        """Read the stored levels (at start), keeping those whose node signature verifies."""
        rows = await self._db.run(_rows)
        identity = self._node.keystore.identity

        def verified() -> dict[str, AccountLevel]:
            found = {}
            for text in rows:
                record = AccountLevel.model_validate_json(text)
                if record.node_iid == identity.id and identity.verify_signature(
                    record.signed_content(), record.signature
                ):
                    found[record.iid] = record
                else:
                    logger.warning("the stored level of %s is not signed by this node: ignored", record.iid[:8])
            return found

        self._levels = await asyncio.to_thread(verified)

    def get(self, iid: str) -> AccountLevel:
        record = self._levels.get(iid) or AccountLevel(
            iid=iid, level=self._node.config.default_level, node_iid=self._node.iid
        )
        allowed = self.allowed(iid)
        return record.model_copy(update={"allowed": None if allowed is None else sorted(allowed)})

    def allowed(self, iid: str) -> set[str] | None:
        """The package names `iid` may ask for; None: every package."""
        if iid == self._node.iid:
            return None
        record = self._levels.get(iid)
        level = record.level if record is not None else self._node.config.default_level
        if level == "guest":
            return set()
        if level == "basic":
            return set(BASIC)
        if level == "custom":
            return {*BASIC, *(record.packages if record is not None else [])}
        return None

    def _owner(self, caller: Identity) -> None:
        if caller.id != self._node.iid:
            raise AuthorisationError("Only the node owner assigns account levels")

    def show(self, caller: Identity, iid: str) -> AccountLevel:
        """An identity's level: to the node owner, or to that identity."""
        if caller.id not in (iid, self._node.iid):
            raise AuthorisationError("Only the node owner and the identity itself see its account level")
        return self.get(iid)

    def list(self, caller: Identity) -> list[AccountLevel]:
        self._owner(caller)
        return [self.get(iid) for iid in sorted(self._levels)]

    async def set(self, caller: Identity, iid: str, params: LevelParameters, packages: set[str]) -> AccountLevel:
        """Assign a level (node owner only); `packages` are the node's package names."""
        self._owner(caller)
        if self._node.nodedb.get_identity(iid) is None:
            raise UnknownIdentityError(f"Identity {iid} is not known to this node", {"iid": iid})
        unknown = [p for p in params.packages if p not in packages]
        if unknown:
            raise InvalidInputError(f"This node has no package {', '.join(unknown)}", {"packages": unknown})
        if params.packages and params.level != "custom":
            raise InvalidInputError("Only the custom level names packages of its own")
        record = AccountLevel(
            iid=iid,
            level=params.level,
            packages=sorted(set(params.packages)),
            t_assigned=int(time.time() * 1000),
            node_iid=self._node.iid,
        )
        signature = await asyncio.to_thread(self._node.keystore.sign, record.signed_content())
        record = record.model_copy(update={"signature": signature})
        await self._db.run(_put, record)
        self._levels[iid] = record
        return self.get(iid)

    async def reset(self, caller: Identity, iid: str) -> AccountLevel:
        """Forget an identity's level (node owner only): it has the default level again."""
        self._owner(caller)
        await self._db.run(_delete, iid)
        self._levels.pop(iid, None)
        return self.get(iid)
