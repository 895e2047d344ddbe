"""A deliberately malicious node for the tests (issue 14): a real node whose DOR answers other nodes' P2P lookups
with forged records, and whose REST service serves forged content.

`make_liar(running, attacker)` wraps the real `/saas/dor/1.0.0` handler of a running node (its real P2P host,
real Noise, real peers): the node still answers what it really holds, and adds for every obj_id asked that it
does not hold a forged GPP record (the attacker's GPP — its repository's install.sh leaves a marker file — under
the asked id) and a forged content record (the attacker's object under the asked id), plus a record not asked for
(with a line break in its id, against the log), and for every c_hash of a
provenance lookup a forged record with a recipe it invented. `corrupt(running, c_hash, forged)` makes the node
serve other bytes for content it really holds (its record stays correct: the lie is in the content)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.p2p.protocols import DOR
from tests.conftest import RunningNode
from tests.rti.rti_support import adapter_repo

MARKER = "ATTACKER_INSTALL_RAN"

__all__ = ["MARKER", "Attacker", "attacker_repo", "copy_to", "corrupt", "make_liar", "markers"]


def attacker_repo(root: Path) -> tuple[Path, str]:
    """A git repository with the `abc` adapter whose install.sh leaves `MARKER` in its folder (and, when it can
    reach it, in `root`'s parent): the attacker's code, recognisable wherever it ran. Returns (path, commit)."""
    script = f"#!/bin/bash\ntouch {MARKER}\ntouch {root.parent / MARKER} 2>/dev/null\nexit 0\n"
    return adapter_repo(root, "abc", extra={"abc/install.sh": script})


def markers(*roots: Path) -> list[Path]:
    """Every marker file the attacker's install.sh left under `roots`."""
    return [p for root in roots for p in root.rglob(MARKER)]


@dataclass
class Attacker:
    """What the liar forges with: records of objects it really holds (so they parse), put under other ids."""

    gpp: dict[str, Any]  # the record of the attacker's own GPP data object
    obj: dict[str, Any]  # the record of an attacker's content object
    asked: list[dict[str, Any]]  # every DOR request the liar was sent (type and ids)


def _record(running: RunningNode, obj_id: str) -> dict[str, Any]:
    with DORProxy(running.address, running.keystore) as dor:
        meta = dor.get_meta(obj_id)
    assert meta is not None
    return meta.model_dump(mode="json", exclude={"custodian"})


def make_liar(running: RunningNode, files: Path) -> Attacker:
    """Turn `running` into a liar: add the attacker's GPP and object to its own DOR, then wrap its DOR handler."""
    repo, commit = attacker_repo(files / "attacker-repo")
    owner = running.keystore
    with DORProxy(running.address, owner) as dor:
        gpp = dor.add_gpp_data_object(str(repo), commit, "abc", "default", owner.identity)
        path = files / "attacker-object.json"
        path.write_text('{"v": 666}')
        obj = dor.add_data_object(path, owner.identity, False, False, "JSONObject", "json")
    attacker = Attacker(_record(running, gpp.obj_id), _record(running, obj.obj_id), [])
    assert running.node.p2p is not None
    real: Callable[[str, dict[str, Any]], Any] = running.node.p2p._handle_dor

    async def lying(peer_id: str, message: dict[str, Any]) -> dict[str, Any] | None:
        answer = await real(peer_id, message)
        if not isinstance(answer, dict) or not isinstance(answer.get("objects"), list):
            return answer
        kind = message.get("type")
        attacker.asked.append({"type": kind, "ids": message.get("obj_ids") or message.get("c_hashes") or []})
        objects = list(answer["objects"])
        held = {o["obj_id"] for o in objects}
        if kind == "lookup":
            objects.append({**attacker.obj, "obj_id": "not asked for\nwith a forged log line"})
            for obj_id in message.get("obj_ids") or []:
                if obj_id not in held:
                    objects.insert(0, {**attacker.gpp, "obj_id": obj_id, "c_hash": obj_id})
                    objects.insert(0, {**attacker.obj, "obj_id": obj_id})
        elif kind == "provenance":
            invented = {
                "processor": attacker.gpp["gpp"],
                "consumes": {},
                "product": {"data_type": "JSONObject", "data_format": "json"},
                "name": "c",
            }
            for c_hash in message.get("c_hashes") or []:
                objects.insert(0, {**attacker.obj, "c_hash": c_hash, "recipe": invented})
        return {"objects": objects}

    running.node.p2p.host.set_handler(DOR, lying)
    return attacker


def corrupt(running: RunningNode, c_hash: str, forged: bytes) -> None:
    """Make `running` serve `forged` as the content of every object it holds with `c_hash`."""
    assert running.node.dor is not None
    running.node.dor.store.path(c_hash).write_bytes(forged)


def copy_to(running: RunningNode, user: Keystore, source: Path, original: Any) -> Any:
    """Store the same object (same content, type, format, creators and creation time: the same obj_id) on
    `running` as `user`; returns its record there."""
    with DORProxy(running.address, user) as dor:
        copy = dor.add_data_object(
            source,
            user.identity,
            original.access_restricted,
            False,
            original.data_type,
            original.data_format,
            created=original.created.timestamp,
        )
    assert copy.obj_id == original.obj_id
    return copy
