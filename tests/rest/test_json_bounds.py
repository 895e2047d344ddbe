"""JSON values users store (tag values, by-value job inputs, descriptors, recipes) are bounded in depth and size when
they come in (saas.core.bounded_json), so no stored value can break a listing later.

The attack: one user tags an object with a value nested 300 deep; until this was checked, the tag was stored and
every search on the node (anyone's) answered 500, because pydantic cannot serialise such a value."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from saas.core.bounded_json import MAX_JSON_DEPTH, check_json, json_depth
from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.dor.schemas import MAX_INPUT_VALUE_SIZE, MAX_TAG_SIZE, DataObjectRecipe, ProcessorDescriptor

JSON = "application/json"


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.fixture
def obj(node: Any, alice: Keystore, tmp_path: Path) -> Any:
    source = tmp_path / "data.txt"
    source.write_bytes(b"some content")
    with DORProxy(node.address, alice) as dor:
        return dor.add_data_object(source, alice.identity, False, False, "Text", "txt")


def put_tags(send: Callable[..., httpx.Response], alice: Keystore, obj: Any, tags: list[dict[str, Any]]) -> Any:
    return send(alice, "PUT", f"/dor/{obj.obj_id}/tags", json.dumps(tags).encode(), content_type=JSON)


def test_deeply_nested_tag_is_refused_and_search_keeps_working(
    node: Any, alice: Keystore, obj: Any, send: Callable[..., httpx.Response], http: httpx.Client
) -> None:
    response = put_tags(send, alice, obj, [{"key": "fine", "value": 1}, {"key": "deep", "value": nested(300)}])
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"reason", "id", "details"}
    assert f"nested more than {MAX_JSON_DEPTH} levels deep" in body["reason"]
    assert "[[[" not in response.text  # the value is not echoed

    # Nothing was stored (not even the fine tag of the same request), and every listing answers.
    for path in ("/api/v1/dor", "/api/v1/dor?tag=deep", "/api/v1/dor/statistics", f"/api/v1/dor/{obj.obj_id}/meta"):
        listing = http.get(path)
        assert listing.status_code == 200, (path, listing.text)
    assert http.get(f"/api/v1/dor/{obj.obj_id}/meta").json()["tags"] == {}

    # The deepest value allowed is stored and listed as it is.
    deepest = nested(MAX_JSON_DEPTH)
    response = put_tags(send, alice, obj, [{"key": "deepest", "value": deepest}])
    assert response.status_code == 200, response.text
    found = http.get("/api/v1/dor").json()
    assert [o["tags"] for o in found] == [{"deepest": deepest}]
    assert put_tags(send, alice, obj, [{"key": "x", "value": nested(MAX_JSON_DEPTH + 1)}]).status_code == 422


def test_large_tag_value_is_refused_with_the_limit(
    alice: Keystore, obj: Any, send: Callable[..., httpx.Response], http: httpx.Client
) -> None:
    response = put_tags(send, alice, obj, [{"key": "big", "value": "v" * MAX_TAG_SIZE}])
    assert response.status_code == 422, response.text
    assert f"larger than {MAX_TAG_SIZE} bytes" in response.json()["reason"]
    assert http.get(f"/api/v1/dor/{obj.obj_id}/meta").json()["tags"] == {}
    response = put_tags(send, alice, obj, [{"key": "big", "value": "v" * (MAX_TAG_SIZE - 2)}])  # the quotes count
    assert response.status_code == 200, response.text


def test_hostile_json_never_answers_500(
    alice: Keystore, obj: Any, send: Callable[..., httpx.Response], http: httpx.Client
) -> None:
    # A body nested 100,000 deep (the JSON parser gives up) is a client error, not a crash.
    deep_body = b'[{"key":"k","value":' + b"[" * 100_000 + b"]" * 100_000 + b"}]"
    response = send(alice, "PUT", f"/dor/{obj.obj_id}/tags", deep_body, content_type=JSON)
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"reason", "id", "details"}
    # A search for a deeply nested value is a search for that text (it can match nothing stored).
    response = http.get("/api/v1/dor", params={"tag": "k=" + "[" * 5000 + "]" * 5000})
    assert response.status_code == 200, response.text
    assert response.json() == []


def test_deep_by_value_job_input_is_refused_at_submission(
    node: Any, alice: Keystore, send: Callable[..., httpx.Response], http: httpx.Client
) -> None:
    proc_id = "ab" * 32
    task = {
        "proc_id": proc_id,
        "user_iid": alice.identity.id,
        "input": [{"name": "a", "type": "value", "value": nested(300)}],
        "output": [{"name": "c", "owner_iid": alice.identity.id}],
    }
    response = send(alice, "POST", f"/rti/proc/{proc_id}/jobs", json.dumps(task).encode(), content_type=JSON)
    assert response.status_code == 422, response.text
    assert "nested more than" in response.json()["reason"]
    task["input"] = [{"name": "a", "type": "value", "value": "v" * MAX_INPUT_VALUE_SIZE}]
    response = send(alice, "POST", f"/rti/proc/{proc_id}/jobs", json.dumps(task).encode(), content_type=JSON)
    assert response.status_code == 422, response.text
    assert f"larger than {MAX_INPUT_VALUE_SIZE} bytes" in response.json()["reason"]
    assert send(alice, "GET", "/rti/job").status_code == 200


DESCRIPTOR: dict[str, Any] = {
    "name": "proc",
    "input": [{"name": "a", "data_type": "JSONObject", "data_format": "json"}],
    "output": [{"name": "c", "data_type": "JSONObject", "data_format": "json"}],
    "configurations": ["default"],
}


def test_descriptors_and_recipes_are_bounded() -> None:
    ProcessorDescriptor.model_validate({**DESCRIPTOR, "x-extra": nested(MAX_JSON_DEPTH - 1)})
    with pytest.raises(ValueError, match="nested more than"):
        ProcessorDescriptor.model_validate({**DESCRIPTOR, "x-extra": nested(300)})
    with pytest.raises(ValueError, match="larger than"):
        ProcessorDescriptor.model_validate({**DESCRIPTOR, "x-extra": "d" * (256 * 1024)})
    gpp = {"source": "s", "commit_id": "c", "proc_path": "p", "proc_config": "default", "proc_descriptor": DESCRIPTOR}
    recipe = {"processor": gpp, "product": {}, "name": "c"}
    consumed = {"c_hash": "0" * 64, "data_type": "JSONObject", "data_format": "json"}
    DataObjectRecipe.model_validate({**recipe, "consumes": {"a": {**consumed, "content": nested(MAX_JSON_DEPTH)}}})
    with pytest.raises(ValueError, match="nested more than"):
        DataObjectRecipe.model_validate({**recipe, "consumes": {"a": {**consumed, "content": nested(300)}}})


def test_the_check_walks_without_recursion() -> None:
    value: Any = []
    for _ in range(200_000):  # far beyond Python's recursion limit
        value = [value]
    assert json_depth(value, MAX_JSON_DEPTH) == MAX_JSON_DEPTH + 1  # counted only up to the limit
    with pytest.raises(ValueError, match="nested more than"):
        check_json(value, 1 << 20)
    loop: list[Any] = []
    loop.append(loop)  # a Python value that is no JSON at all
    with pytest.raises(ValueError, match="nested more than"):
        check_json(loop, 1 << 20)
    assert check_json({"a": [1, "b", None]}, 100) == {"a": [1, "b", None]}
