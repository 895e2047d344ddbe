"""Content objects through DORProxy: add, metadata, content, delete, deduplication of content files, statistics,
and the errors of unknown and malformed requests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from saas.core.errors import InvalidInputError, NotFoundError, RemoteError
from saas.core.signing import canonical_json
from saas.dor.proxy import DORProxy
from saas.dor.schemas import CDataObject, DataObjectRecipe

RECIPE: dict[str, Any] = {
    "processor": {
        "source": "https://github.com/example/adapter",
        "commit_id": "a" * 40,
        "proc_path": "proc",
        "proc_config": "default",
        "proc_descriptor": {
            "name": "test-proc",
            "input": [{"name": "a", "data_type": "JSONObject", "data_format": "json"}],
            "output": [{"name": "c", "data_type": "JSONObject", "data_format": "json"}],
            "configurations": ["default"],
        },
    },
    "consumes": {"a": {"c_hash": "b" * 64, "data_type": "JSONObject", "data_format": "json"}},
    "product": {"c_hash": None, "data_type": "JSONObject", "data_format": "json"},
    "name": "c",
}


def test_add_get_meta_get_content_round_trip(
    node: Any, users: Any, add: Callable, dor_as: Callable, tmp_path: Path, catalog: Callable
) -> None:
    content = bytes(range(256)) * 100
    obj = add(content, data_type="Blob", data_format="bin")
    assert isinstance(obj, CDataObject)
    assert obj.c_hash == hashlib.sha256(content).hexdigest()
    assert obj.size == len(content)
    assert obj.owner_iid == users.alice.iid
    assert obj.data_type == "Blob" and obj.data_format == "bin"
    assert obj.access_restricted is False and obj.content_encrypted is False
    assert obj.access == [users.alice.iid]
    assert obj.custodian is not None and obj.custodian.identity.id == node.node.iid
    # obj_id is the hash of the canonical JSON of its stable fields.
    expected_id = hashlib.sha256(
        canonical_json(
            {
                "c_hash": obj.c_hash,
                "data_type": "Blob",
                "data_format": "bin",
                "creators": [users.alice.iid],
                "created": obj.created.timestamp,
            }
        )
    ).hexdigest()
    assert obj.obj_id == expected_id
    assert catalog(node) == {obj.obj_id}

    anonymous = dor_as(None)
    meta = anonymous.get_meta(obj.obj_id)
    assert meta is not None
    assert meta.obj_id == obj.obj_id and meta.c_hash == obj.c_hash and meta.created == obj.created

    target = dor_as(users.bob).get_content(obj.obj_id, users.bob, tmp_path / "out" / "content.bin")
    assert target.read_bytes() == content
    assert list(target.parent.iterdir()) == [target]  # no partial download left next to it


def test_creators_and_license_are_stored(users: Any, add: Callable, dor_as: Callable) -> None:
    obj = add(
        b'{"v": 1}',
        creators=[users.alice.identity, users.carol.identity],  # co-creators named by the owner who signs
        data_type="JSONObject",
        data_format="json",
        license_by=True,
        license_nc=True,
    )
    meta = dor_as(None).get_meta(obj.obj_id)
    assert isinstance(meta, CDataObject)
    assert meta.owner_iid == users.alice.iid
    assert meta.created.creators_iid == [users.alice.iid, users.carol.iid]
    assert meta.license.model_dump() == {"by": True, "sa": False, "nc": True, "nd": False}
    assert meta.recipe is None


def test_recipe_of_a_job_output_is_stored(node: Any, users: Any, add_output: Callable, dor_as: Callable) -> None:
    content = b'{"v": 1}'
    obj = add_output(content, RECIPE, license_by=True)
    meta = dor_as(None).get_meta(obj.obj_id)
    assert isinstance(meta, CDataObject)
    assert meta.owner_iid == users.alice.iid
    assert meta.created.creators_iid == [users.alice.iid]  # the job's user, not the node that stored it
    assert meta.recipe is not None
    assert meta.recipe.consumes == RECIPE["consumes"]
    assert meta.recipe.product["c_hash"] == hashlib.sha256(content).hexdigest()
    assert meta.recipe.model_dump(exclude={"signer_iid", "signature", "product"}) == DataObjectRecipe.model_validate(
        RECIPE
    ).model_dump(exclude={"signer_iid", "signature", "product"})
    assert meta.recipe.signer_iid == node.node.iid
    assert meta.recipe.verify(node.keystore.identity)  # anyone can check who made it


def test_creators_default_to_the_signer(users: Any, add: Callable) -> None:
    obj = add(b"x", owner=users.bob)
    assert obj.owner_iid == users.bob.iid
    assert obj.created.creators_iid == [users.bob.iid]


def test_owner_and_creators_must_be_known(
    node: Any,
    users: Any,
    keystores: Callable,
    dor_as: Callable,
    write_file: Callable,
    catalog: Callable,
    files: Callable,
) -> None:
    stranger = keystores("mallory")  # not published to the node
    proxy = dor_as(users.alice)
    with pytest.raises(InvalidInputError) as error:
        proxy.add_data_object(write_file(b"x"), stranger.identity, False, False, "Text", "txt")
    assert isinstance(error.value, RemoteError) and error.value.status == 400 and "owner" in error.value.reason
    with pytest.raises(InvalidInputError) as error:
        proxy.add_data_object(
            write_file(b"x"), users.alice.identity, False, False, "Text", "txt", creators=[stranger.identity]
        )
    assert isinstance(error.value, RemoteError) and error.value.status == 400 and "creator" in error.value.reason
    assert catalog(node) == set()
    assert files(node) == {"content": [], "tmp": []}


def test_delete_object(
    node: Any, users: Any, add: Callable, dor_as: Callable, files: Callable, catalog: Callable
) -> None:
    obj = add(b"to be deleted")
    deleted = dor_as(users.alice).delete_data_object(obj.obj_id, users.alice)
    assert deleted.obj_id == obj.obj_id
    assert dor_as(None).get_meta(obj.obj_id) is None
    assert catalog(node) == set()
    assert files(node)["content"] == []
    with pytest.raises(NotFoundError):
        dor_as(users.alice).delete_data_object(obj.obj_id, users.alice)


def test_same_content_twice_shares_one_file(
    node: Any, users: Any, add: Callable, dor_as: Callable, files: Callable, tmp_path: Path
) -> None:
    content = b"shared bytes " * 1000
    first = add(content)
    second = add(content, owner=users.bob)
    assert first.obj_id != second.obj_id
    assert first.c_hash == second.c_hash
    stored = files(node)["content"]
    assert len(stored) == 1 and stored[0].name == first.c_hash
    assert stored[0].parent.name == first.c_hash[:2]

    dor_as(users.alice).delete_data_object(first.obj_id, users.alice)
    assert files(node)["content"] == stored  # still used by the second object
    out = dor_as(users.bob).get_content(second.obj_id, users.bob, tmp_path / "second")
    assert out.read_bytes() == content

    dor_as(users.bob).delete_data_object(second.obj_id, users.bob)
    assert files(node)["content"] == []
    assert files(node)["tmp"] == []


def test_unknown_object(users: Any, dor_as: Callable, tmp_path: Path) -> None:
    unknown = "f" * 64
    proxy = dor_as(users.alice)
    assert proxy.get_meta(unknown) is None
    for call in (
        lambda: proxy.get_content(unknown, users.alice, tmp_path / "x"),
        lambda: proxy.delete_data_object(unknown, users.alice),
        lambda: proxy.grant_access(unknown, users.alice, users.bob.identity),
        lambda: proxy.update_tags(unknown, users.alice, [{"key": "k", "value": 1}]),
        lambda: proxy.transfer_ownership(unknown, users.alice, users.bob.identity),
        lambda: proxy.get_provenance(unknown),
    ):
        with pytest.raises(NotFoundError) as error:
            call()
        assert isinstance(error.value, RemoteError) and error.value.status == 404
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/dor/not-an-id/meta"),
        ("GET", "/dor/" + "A" * 64 + "/meta"),
        ("GET", "/dor/" + "0" * 63 + "/content"),
        ("DELETE", "/dor/" + "g" * 64),
        ("GET", "/dor/" + "0" * 65 + "/provenance"),
        ("POST", "/dor/" + "0" * 64 + "/access/UPPERCASE"),
    ],
)
def test_malformed_ids_in_path_are_422(users: Any, send: Callable, method: str, path: str) -> None:
    response = send(users.alice, method, path)
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"reason", "id", "details"}


def test_wrong_types_are_422_without_echo(
    node: Any, users: Any, add: Callable, send: Callable, dor_as: Callable, catalog: Callable
) -> None:
    obj = add(b"typed")
    secret = "echo-me-not-7f3a"
    headers = {"content-type": "application/json"}
    cases = [
        ("PUT", f"/dor/{obj.obj_id}/tags", json.dumps({"key": secret, "value": 1})),  # not a list
        ("PUT", f"/dor/{obj.obj_id}/tags", json.dumps([{"value": secret}])),  # tag without key
        ("PUT", f"/dor/{obj.obj_id}/tags", "[{" + secret),  # not JSON
        ("DELETE", f"/dor/{obj.obj_id}/tags", json.dumps({"keys": secret})),
        ("POST", "/dor/add-gpp", json.dumps({"source": secret})),  # missing fields
        ("POST", "/dor/add-gpp", json.dumps({"source": secret, "commit_id": 7, "proc_path": [], "proc_config": {}})),
        ("POST", f"/dor/{obj.obj_id}/access/{users.bob.iid}", json.dumps({"key_envelope": [secret]})),
    ]
    for method, path, body in cases:
        response = send(users.alice, method, path, body.encode(), headers)
        assert response.status_code == 422, (method, path, response.text)
        assert set(response.json()) == {"reason", "id", "details"}
        assert secret not in response.text
    meta = dor_as(users.alice).get_meta(obj.obj_id)
    assert meta.tags == {} and meta.access == [users.alice.iid]
    assert catalog(node) == {obj.obj_id}


def test_bad_query_parameters_are_422(send: Callable) -> None:
    for query in ("limit=0", "limit=1001", "offset=-1", "limit=ten"):
        response = send(None, "GET", f"/dor?{query}")
        assert response.status_code == 422, query
        assert set(response.json()) == {"reason", "id", "details"}


def test_statistics(users: Any, add: Callable, dor_as: Callable) -> None:
    proxy: DORProxy = dor_as(None)
    empty = proxy.statistics()
    assert (empty.objects, empty.content_bytes, empty.data_types, empty.tag_keys) == (0, 0, [], [])

    a = add(b"12345", data_type="A", data_format="x")
    add(b"1234567890", data_type="B", data_format="y")
    add(b"12345", data_type="A", data_format="z", owner=users.bob)
    dor_as(users.alice).update_tags(a.obj_id, users.alice, [{"key": "colour", "value": "red"}])
    stats = proxy.statistics()
    assert stats.objects == 3
    assert stats.content_bytes == 20
    assert stats.data_types == ["A", "B"]
    assert stats.data_formats == ["x", "y", "z"]
    assert stats.tag_keys == ["colour"]
