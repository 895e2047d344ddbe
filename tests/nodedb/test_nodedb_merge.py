"""`NodeDBService.merge_records`: a peer's records stored in one batch — newer ones only, forgeries skipped, a node
record bringing its identity, listeners told of each change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saas.core.keystore import Keystore
from saas.nodedb.schemas import NodeInfo
from saas.nodedb.service import NodeDBService


def record(keystore: Keystore, sequence: int, port: int = 5001) -> NodeInfo:
    info = NodeInfo(
        identity=keystore.identity,
        dor_service=True,
        rti_service=False,
        rest_address=("127.0.0.1", port),
        p2p_address=("127.0.0.1", port + 1000),
        retain_job_history=False,
        strict_deployment=True,
        started=1,
        sequence=sequence,
    )
    return info.model_copy(update={"signature": keystore.sign(info.signed_content())})


def test_merge_stores_newer_valid_records_in_one_batch(tmp_path: Path, keystores: Callable[[str], Keystore]) -> None:
    alice, bob, carol = keystores("alice"), keystores("bob"), keystores("carol")

    async def main() -> None:
        (tmp_path / "ds").mkdir(exist_ok=True)
        db = NodeDBService(tmp_path / "ds")
        await db.start()
        changes: list[tuple[str, Any]] = []
        db.add_listener(lambda kind, r: changes.append((kind, r)))
        try:
            forged = record(bob, 5).model_copy(update={"rest_address": ("10.0.0.1", 1)})  # signature no longer fits
            stored = await db.merge_records([carol.identity], [record(alice, 2), forged])
            assert stored == (1, 2)  # alice's node (+ her identity), carol's identity; bob's forgery skipped
            assert db.get_node(alice.iid) is not None and db.get_node(bob.iid) is None
            assert db.get_identity(alice.iid) == alice.identity and db.get_identity(carol.iid) == carol.identity
            assert sorted(kind for kind, _ in changes) == ["identity", "identity", "node"]

            changes.clear()
            assert await db.merge_records([carol.identity], [record(alice, 1)]) == (0, 0)  # nothing newer
            assert changes == []
            assert await db.merge_records([], [record(alice, 3, port=6001)]) == (1, 0)
            assert tuple(db.get_node(alice.iid).rest_address) == ("127.0.0.1", 6001)  # type: ignore[union-attr]
        finally:
            await db.stop()
        again = NodeDBService(tmp_path / "ds")  # and it was stored, not only held in memory
        await again.start()
        try:
            assert again.get_node(alice.iid) is not None and again.get_identity(carol.iid) is not None
        finally:
            await again.stop()

    asyncio.run(main())
