"""Ordinary (non-upload) request bodies are bounded by `max_json_body` (413); uploads have their own limit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy

LIMIT = 2048


@pytest.fixture
def node(node_factory: Callable[..., Any]) -> Any:
    return node_factory(max_json_body=LIMIT)


def test_large_json_body_is_413_and_changes_nothing(
    node: Any, alice: Keystore, send: Callable[..., httpx.Response], tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(b"u" * (4 * LIMIT))  # uploads are not bound by max_json_body
    with DORProxy(node.address, alice) as dor:
        obj = dor.add_data_object(source, alice.identity, False, False, "Text", "txt")
        small = json.dumps([{"key": "k", "value": "v" * 100}]).encode()
        large = json.dumps([{"key": "k", "value": "v" * (2 * LIMIT)}]).encode()

        response = send(alice, "PUT", f"/dor/{obj.obj_id}/tags", large, content_type="application/json")
        assert response.status_code == 413, response.text
        assert set(response.json()) == {"reason", "id", "details"}
        meta = dor.get_meta(obj.obj_id)
        assert meta is not None and meta.tags == {}

        response = send(alice, "PUT", f"/dor/{obj.obj_id}/tags", small, content_type="application/json")
        assert response.status_code == 200, response.text
        meta = dor.get_meta(obj.obj_id)
        assert meta is not None and meta.tags == {"k": "v" * 100}

    # Publishing an identity is an ordinary body too.
    response = httpx.post(
        node.url + "/api/v1/db/identity",
        content=b"[" + b"0," * LIMIT + b"0]",
        headers={"content-type": "application/json"},
        trust_env=False,
    )
    assert response.status_code == 413
