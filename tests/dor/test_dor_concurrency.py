"""Concurrent adds, deletes and downloads of the same content (DESIGN §6): a content file shared by several records
is removed only when the last record using it goes, so no record ever loses its content."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from saas.dor.proxy import DORProxy

THREADS = 8
OPS = 10  # per thread
CONTENTS = [b"shared content A " * 5000, b"shared content B " * 3000]


def test_concurrent_adds_and_deletes_never_lose_a_used_file(
    node: Any, users: Any, write_file: Callable, files: Callable, catalog: Callable, tmp_path: Path
) -> None:
    sources = [write_file(content) for content in CONTENTS]
    hashes = [hashlib.sha256(c).hexdigest() for c in CONTENTS]
    start = threading.Barrier(THREADS)

    def worker(index: int) -> list[tuple[str, int]]:
        rng = random.Random(index)
        mine: list[tuple[str, int]] = []  # (obj_id, which content)
        with DORProxy(node.address, users.alice) as proxy:
            start.wait()
            for op in range(OPS):
                # Mostly add-then-delete, so the number of records using a content file often drops to zero
                # while other threads are adding the same content.
                if not mine or (op == OPS - 1 and index % 2 == 0):
                    action = "add"
                else:
                    action = rng.choice(["delete", "delete", "download"])
                if action == "add":
                    which = rng.randrange(len(CONTENTS))
                    # A per-thread data type keeps the obj_ids apart while the content (file) is shared.
                    obj = proxy.add_data_object(
                        sources[which], users.alice.identity, False, False, f"Type-{index}", "bin"
                    )
                    assert obj.c_hash == hashes[which]
                    mine.append((obj.obj_id, which))
                elif action == "delete":
                    obj_id, _ = mine.pop(rng.randrange(len(mine)))
                    proxy.delete_data_object(obj_id, users.alice)
                else:
                    obj_id, which = rng.choice(mine)
                    out = proxy.get_content(obj_id, users.alice, tmp_path / "downloads" / f"{index}-{op}")
                    assert out.read_bytes() == CONTENTS[which]
                    out.unlink()
        return mine

    with ThreadPoolExecutor(THREADS) as pool:
        remaining = [item for result in pool.map(worker, range(THREADS)) for item in result]

    assert remaining, "the random schedule should leave some objects"
    assert catalog(node) == {obj_id for obj_id, _ in remaining}
    with DORProxy(node.address, users.bob) as proxy:
        for obj_id, which in remaining:
            out = proxy.get_content(obj_id, users.bob, tmp_path / "final" / obj_id)
            assert out.read_bytes() == CONTENTS[which]
    used = {hashes[which] for _, which in remaining}
    assert {p.name for p in files(node)["content"]} == used
    assert files(node)["tmp"] == []

    # Deleting everything that is left removes every content file.
    with DORProxy(node.address, users.alice) as proxy:
        for obj_id, _ in remaining:
            proxy.delete_data_object(obj_id, users.alice)
    assert catalog(node) == set()
    assert files(node) == {"content": [], "tmp": []}


def test_concurrent_identical_adds_from_many_threads(
    node: Any, users: Any, write_file: Callable, files: Callable, catalog: Callable
) -> None:
    source = write_file(CONTENTS[0])
    start = threading.Barrier(THREADS)

    def worker(index: int) -> str:
        with DORProxy(node.address, users.bob) as proxy:
            start.wait()
            return proxy.add_data_object(source, users.bob.identity, False, False, f"T{index}", "bin").obj_id

    with ThreadPoolExecutor(THREADS) as pool:
        obj_ids = list(pool.map(worker, range(THREADS)))
    assert len(set(obj_ids)) == THREADS
    assert catalog(node) == set(obj_ids)
    assert [p.name for p in files(node)["content"]] == [hashlib.sha256(CONTENTS[0]).hexdigest()]
    assert files(node)["tmp"] == []
