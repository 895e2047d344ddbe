"""`saas-cli dashboard` (the real script): prints a login URL for one node whose token opens one session;
publishes the identity when the node lacks it (as the dor commands do); refuses a lifetime beyond the limit
(exit 2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from saas.core.keystore import Keystore
from saas.rest.sessions import HEADER_CSRF
from tests.dashboard.dashboard_support import dashboard_cli as dashboard


def test_the_printed_url_signs_in_once(node: Any, keystores: Callable[[str], Keystore], tmp_path: Path) -> None:
    alice = keystores("alice")
    assert node.node.nodedb.get_identity(alice.iid) is None
    result = dashboard(alice, node, tmp_path, "--lifetime", "30")
    assert result.returncode == 0, result.stderr
    assert f"Identity {alice.iid} published" in result.stderr  # the node needs it to check the token
    document = json.loads(result.stdout)
    assert document["iid"] == alice.iid and document["node_iid"] == node.node.iid
    token = document["url"].split("#login=", 1)[1]
    with httpx.Client(base_url=node.url, timeout=30, trust_env=False) as client:
        first = client.post("/api/v1/dashboard/login", json={"token": token}, headers={HEADER_CSRF: "x"})
        assert first.status_code == 200 and first.json()["iid"] == alice.iid
        again = client.post("/api/v1/dashboard/login", json={"token": token}, headers={HEADER_CSRF: "x"})
        assert again.status_code == 401


def test_a_lifetime_beyond_the_limit_is_a_usage_error(
    node: Any, keystores: Callable[[str], Keystore], tmp_path: Path
) -> None:
    result = dashboard(keystores("alice"), node, tmp_path, "--lifetime", "3600")
    assert result.returncode == 2
    assert "at most 600 seconds" in result.stderr
