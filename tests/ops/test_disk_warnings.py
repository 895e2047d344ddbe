"""A node whose datastore is on a nearly full disk (a real 64 MiB tmpfs): health shows the disk, diagnostics warn,
and the doctor names the disk with its fix."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from disk_support import small_disk

from saas.ops.proxy import HealthProxy
from tests.cli.cli_support import doctor

pytestmark = pytest.mark.timeout(120)


def test_a_nearly_full_disk_is_reported(node_factory: Callable[..., Any], tmp_path: Path) -> None:
    with small_disk(tmp_path / "small", "64m") as disk:
        node = node_factory("alice", datastore=disk / "datastore")
        try:
            with HealthProxy(node.address) as proxy:
                health = proxy.get_node_health()
                report = proxy.get_diagnostics()
            assert health.disk["total"] <= 64 * 2**20 and 0 < health.disk["free"] <= health.disk["total"]
            warnings = [w for w in report.warnings if w.kind == "disk"]
            assert len(warnings) == 1 and "nearly full" in warnings[0].message

            result = doctor(node, "--json", "--datastore", str(disk / "datastore"))
            assert result.returncode == 1, result.stdout + result.stderr
            checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
            assert not checks["node disk"]["ok"] and "free space" in checks["node disk"]["fix"]
            assert not checks["datastore"]["ok"] and "GiB free" in checks["datastore"]["detail"]
            assert checks["DOR write/read/delete"]["ok"]  # a small object still fits
        finally:
            node.stop()
