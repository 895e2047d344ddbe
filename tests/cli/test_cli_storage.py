"""`saas-cli` when the node has no room: a full disk (a real 4 MiB tmpfs datastore) and a used-up storage quota
answer with one line naming the reason and exit code 8 (README's table), never "could not be reached"; `saas-cli
dor usage` shows the usage and the quota."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from disk_support import small_disk

from tests.cli.cli_support import assert_clean_error

STORAGE_EXIT = 8


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", "4m") as path:
        yield path


def dor(cli: Callable, keystore: Any, node: Any, *args: Any, json_output: bool = False) -> Any:
    address = "{}:{}".format(*node.address)
    return cli(*keystore.args(), *(["--json"] if json_output else []), "dor", "--address", address, *args)


def test_full_disk_is_exit_8(cli, shared_keystore, publish, disk: Path, node_factory, tmp_path: Path) -> None:
    node = node_factory(datastore=disk / "datastore", node_type="storage")
    publish(node.address, shared_keystore)
    big = tmp_path / "big.bin"
    big.write_bytes(b"\1" * (6 * 1024 * 1024))

    result = dor(cli, shared_keystore, node, "add", "--assume-creator", "--data-type", "B", "--data-format", "bin", big)
    assert_clean_error(result, STORAGE_EXIT, "The node's storage is full")
    assert "could not be reached" not in result.stderr
    assert list((disk / "datastore" / "dor" / "tmp").iterdir()) == []


def test_quota_is_exit_8_and_usage_shows_it(cli, shared_keystore, publish, node_factory, tmp_path: Path) -> None:
    node = node_factory(storage_quota=10_000)
    publish(node.address, shared_keystore)
    file = tmp_path / "a.bin"
    file.write_bytes(b"\2" * 6000)
    add = ("add", "--assume-creator", "--data-type", "B", "--data-format", "bin", file)

    assert dor(cli, shared_keystore, node, *add).returncode == 0
    file.write_bytes(b"\3" * 6000)
    result = dor(cli, shared_keystore, node, *add)
    assert_clean_error(result, STORAGE_EXIT, "storage quota", "5.9 KiB of 9.8 KiB used", "--storage-quota")

    result = dor(cli, shared_keystore, node, "usage")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "Your data objects on the node at {}:{}: 5.9 KiB (1 object); storage quota: 9.8 KiB".format(*node.address)
    )
    result = dor(cli, shared_keystore, node, "usage", json_output=True)
    assert json.loads(result.stdout) == {"iid": shared_keystore.iid, "bytes": 6000, "objects": 1, "quota": 10_000}
