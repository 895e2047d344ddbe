"""Provenance (DESIGN §6): the graph behind an object is assembled from recipes at query time; inputs by reference
link to the objects holding that content, inputs by value are nodes of their own, and an ancestor this DOR does not
hold is reported as missing (never an upload error)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

PROCESSOR: dict[str, Any] = {
    "source": "https://github.com/example/adapter",
    "commit_id": "c" * 40,
    "proc_path": "proc",
    "proc_config": "default",
    "proc_descriptor": {
        "name": "test-proc",
        "input": [
            {"name": "a", "data_type": "JSONObject", "data_format": "json"},
            {"name": "b", "data_type": "JSONObject", "data_format": "json"},
        ],
        "output": [{"name": "c", "data_type": "JSONObject", "data_format": "json"}],
        "configurations": ["default"],
    },
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def by_reference(c_hash: str) -> dict[str, Any]:
    return {"c_hash": c_hash, "data_type": "JSONObject", "data_format": "json"}


def by_value(value: Any) -> dict[str, Any]:
    return {
        "c_hash": sha(json.dumps(value).encode()),
        "data_type": "JSONObject",
        "data_format": "json",
        "content": value,
    }


def recipe(consumes: dict[str, dict[str, Any]], job_id: str | None = None) -> dict[str, Any]:
    return {
        "processor": PROCESSOR,
        "consumes": consumes,
        "product": {"data_type": "JSONObject", "data_format": "json"},
        "name": "c",
        "job_id": job_id,
    }


def add_json(add: Callable, value: Any, **kwargs: Any) -> Any:
    return add(json.dumps(value).encode(), data_type="JSONObject", data_format="json", **kwargs)


def output_json(add_output: Callable, value: Any, made_by: dict[str, Any], **kwargs: Any) -> Any:
    """A job output of the node's RTI (recipe signed by the node, with the user's signed task)."""
    return add_output(json.dumps(value).encode(), made_by, **kwargs)


def test_object_without_recipe(users: Any, add: Callable, dor_as: Callable) -> None:
    obj = add_json(add, {"v": 1})
    provenance = dor_as(None).get_provenance(obj.obj_id)
    assert provenance.steps == []
    assert provenance.missing == []
    assert provenance.proc_nodes == {}
    assert provenance.data_nodes == {
        obj.c_hash: {"c_hash": obj.c_hash, "data_type": "JSONObject", "data_format": "json", "obj_id": obj.obj_id}
    }


def test_provenance_links_inputs_by_reference_and_by_value(
    node: Any, users: Any, add: Callable, add_output: Callable, dor_as: Callable
) -> None:
    a = add_json(add, {"v": 1})
    b_value = {"v": 2}
    b = by_value(b_value)
    c = output_json(add_output, {"v": 3}, recipe({"a": by_reference(a.c_hash), "b": b}, job_id="job-1"))
    absent = sha(b"content this DOR never saw")
    d = output_json(add_output, {"v": 4}, recipe({"a": by_reference(c.c_hash), "b": by_reference(absent)}))

    provenance = dor_as(users.bob).get_provenance(d.obj_id)
    assert provenance.missing == [absent]
    assert set(provenance.data_nodes) == {a.c_hash, b["c_hash"], c.c_hash, d.c_hash}
    assert provenance.data_nodes[a.c_hash]["obj_id"] == a.obj_id
    assert provenance.data_nodes[c.c_hash]["obj_id"] == c.obj_id
    assert provenance.data_nodes[d.c_hash]["obj_id"] == d.obj_id
    assert provenance.data_nodes[b["c_hash"]]["content"] == b_value
    assert "obj_id" not in provenance.data_nodes[b["c_hash"]]
    assert absent not in provenance.data_nodes

    assert len(provenance.proc_nodes) == 1  # one processor made both steps
    (proc_key,) = provenance.proc_nodes
    assert provenance.proc_nodes[proc_key]["name"] == "test-proc"
    assert provenance.proc_nodes[proc_key]["commit_id"] == PROCESSOR["commit_id"]
    assert provenance.proc_nodes[proc_key]["source"] == PROCESSOR["source"]

    steps = sorted(provenance.steps, key=lambda s: next(iter(s["produces"].values())) != d.c_hash)
    signed_by = {"signer_iid": node.node.iid, "verified": True}  # the recipes, as anyone can check
    assert steps == [
        {
            "processor": proc_key,
            "consumes": {"a": c.c_hash, "b": absent},
            "produces": {"c": d.c_hash},
            "job_id": None,
            **signed_by,
        },
        {
            "processor": proc_key,
            "consumes": {"a": a.c_hash, "b": b["c_hash"]},
            "produces": {"c": c.c_hash},
            "job_id": "job-1",
            **signed_by,
        },
    ]

    # From the middle of the chain only the part behind it is shown.
    middle = dor_as(None).get_provenance(c.obj_id)
    assert set(middle.data_nodes) == {a.c_hash, b["c_hash"], c.c_hash}
    assert middle.missing == []
    assert len(middle.steps) == 1


def test_missing_ancestor_appears_once_ancestry_is_uploaded(
    users: Any, add: Callable, add_output: Callable, dor_as: Callable
) -> None:
    ancestor_content = json.dumps({"v": "later"}).encode()
    child = output_json(add_output, {"v": 5}, recipe({"a": by_reference(sha(ancestor_content)), "b": by_value(1)}))
    assert dor_as(None).get_provenance(child.obj_id).missing == [sha(ancestor_content)]
    ancestor = add(ancestor_content, data_type="JSONObject", data_format="json")
    provenance = dor_as(None).get_provenance(child.obj_id)
    assert provenance.missing == []
    assert provenance.data_nodes[ancestor.c_hash]["obj_id"] == ancestor.obj_id


def test_self_referencing_recipe_terminates(users: Any, add_output: Callable, dor_as: Callable) -> None:
    content = json.dumps({"v": "loop"}).encode()
    obj = add_output(content, recipe({"a": by_reference(sha(content))}))
    provenance = dor_as(None).get_provenance(obj.obj_id)
    assert len(provenance.steps) == 1
    assert set(provenance.data_nodes) == {obj.c_hash}
    assert provenance.missing == []


def test_restricted_ancestor_is_not_revealed(users: Any, add_output: Callable, dor_as: Callable) -> None:
    hidden_content = json.dumps({"v": "secret input"}).encode()
    hidden = add_output(hidden_content, recipe({"a": by_value({"v": "secret grandparent"})}), access_restricted=True)
    child = output_json(add_output, {"v": "public result"}, recipe({"a": by_reference(hidden.c_hash)}))

    for reader in (None, users.bob):
        provenance = dor_as(reader).get_provenance(child.obj_id)
        assert hidden.obj_id not in json.dumps(provenance.model_dump())
        assert "secret grandparent" not in json.dumps(provenance.model_dump())
        assert provenance.missing == [hidden.c_hash]
        assert len(provenance.steps) == 1

    owner_view = dor_as(users.alice).get_provenance(child.obj_id)
    assert owner_view.data_nodes[hidden.c_hash]["obj_id"] == hidden.obj_id
    assert owner_view.missing == []
    assert len(owner_view.steps) == 2
