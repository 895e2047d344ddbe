"""Ownership and access (DESIGN §6): restricted objects exist only for their owner and grantees (others get 404 and
do not find them), owner-only changes by others are 403, ownership transfer moves those rights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from saas.core.errors import AuthorisationError, InvalidInputError, NotFoundError, RemoteError


def visible(dor_as: Callable, reader: Any, obj_id: str, tmp_path: Path) -> dict[str, bool]:
    """What `reader` (a keystore, or None: anonymous) can see of an object: metadata, search, content."""
    proxy = dor_as(reader)
    meta = proxy.get_meta(obj_id) is not None
    found = obj_id in [o.obj_id for o in proxy.search()]
    content = False
    if reader is not None:
        try:
            proxy.get_content(obj_id, reader, tmp_path / "download")
            content = True
        except NotFoundError as e:
            assert isinstance(e, RemoteError) and e.status == 404
    return {"meta": meta, "search": found, "content": content}


NOTHING = {"meta": False, "search": False, "content": False}
EVERYTHING = {"meta": True, "search": True, "content": True}


def test_restricted_object_is_invisible_to_others(users: Any, add: Callable, dor_as: Callable, tmp_path: Path) -> None:
    obj = add(b"secret", access_restricted=True)
    assert visible(dor_as, users.alice, obj.obj_id, tmp_path) == EVERYTHING
    assert visible(dor_as, users.bob, obj.obj_id, tmp_path) == NOTHING
    assert visible(dor_as, None, obj.obj_id, tmp_path) == {"meta": False, "search": False, "content": False}
    # Also not through the other read paths.
    with pytest.raises(NotFoundError):
        dor_as(users.bob).get_provenance(obj.obj_id)
    with pytest.raises(NotFoundError):
        dor_as(None).get_provenance(obj.obj_id)
    assert dor_as(users.bob).search(owner_iid=users.alice.iid) == []


def test_grant_and_revoke_access(users: Any, add: Callable, dor_as: Callable, tmp_path: Path) -> None:
    obj = add(b"shared later", access_restricted=True)
    owner = dor_as(users.alice)
    granted = owner.grant_access(obj.obj_id, users.alice, users.bob.identity)
    assert sorted(granted.access) == sorted([users.alice.iid, users.bob.iid])
    assert visible(dor_as, users.bob, obj.obj_id, tmp_path) == EVERYTHING
    assert (tmp_path / "download").read_bytes() == b"shared later"
    assert visible(dor_as, users.carol, obj.obj_id, tmp_path) == NOTHING
    assert visible(dor_as, None, obj.obj_id, tmp_path)["meta"] is False

    revoked = owner.revoke_access(obj.obj_id, users.alice, users.bob.identity)
    assert revoked.access == [users.alice.iid]
    assert visible(dor_as, users.bob, obj.obj_id, tmp_path) == NOTHING
    assert visible(dor_as, users.alice, obj.obj_id, tmp_path) == EVERYTHING


def test_grant_by_iid_and_to_unknown_identity(users: Any, keystores: Callable, add: Callable, dor_as: Callable) -> None:
    obj = add(b"x", access_restricted=True)
    owner = dor_as(users.alice)
    assert users.carol.iid in owner.grant_access(obj.obj_id, users.alice, users.carol.iid).access
    stranger = keystores("mallory")
    with pytest.raises(NotFoundError):
        owner.grant_access(obj.obj_id, users.alice, stranger.iid)
    assert stranger.iid not in owner.get_meta(obj.obj_id).access


def test_owner_access_cannot_be_revoked(users: Any, add: Callable, dor_as: Callable, tmp_path: Path) -> None:
    obj = add(b"mine", access_restricted=True)
    with pytest.raises(InvalidInputError) as error:
        dor_as(users.alice).revoke_access(obj.obj_id, users.alice, users.alice.identity)
    assert isinstance(error.value, RemoteError) and error.value.status == 400
    assert visible(dor_as, users.alice, obj.obj_id, tmp_path) == EVERYTHING


def test_transfer_ownership(
    node: Any, users: Any, add: Callable, dor_as: Callable, tmp_path: Path, catalog: Callable
) -> None:
    obj = add(b"handed over", access_restricted=True)
    transferred = dor_as(users.alice).transfer_ownership(obj.obj_id, users.alice, users.bob.identity)
    assert transferred.owner_iid == users.bob.iid
    assert users.bob.iid in transferred.access
    assert visible(dor_as, users.bob, obj.obj_id, tmp_path) == EVERYTHING

    # The old owner lost the owner's rights.
    with pytest.raises(AuthorisationError) as error:
        dor_as(users.alice).delete_data_object(obj.obj_id, users.alice)
    assert isinstance(error.value, RemoteError) and error.value.status == 403
    with pytest.raises(AuthorisationError):
        dor_as(users.alice).transfer_ownership(obj.obj_id, users.alice, users.alice.identity)
    assert catalog(node) == {obj.obj_id}
    assert dor_as(users.bob).get_meta(obj.obj_id).owner_iid == users.bob.iid

    # The new owner has them, and may take the old owner's access away.
    dor_as(users.bob).revoke_access(obj.obj_id, users.bob, users.alice.identity)
    assert visible(dor_as, users.alice, obj.obj_id, tmp_path) == NOTHING
    dor_as(users.bob).delete_data_object(obj.obj_id, users.bob)
    assert catalog(node) == set()


def test_non_owner_changes_are_403(node: Any, users: Any, add: Callable, dor_as: Callable, catalog: Callable) -> None:
    obj = add(b"public but owned")
    bob = dor_as(users.bob)
    attempts = {
        "delete": lambda: bob.delete_data_object(obj.obj_id, users.bob),
        "grant": lambda: bob.grant_access(obj.obj_id, users.bob, users.carol.identity),
        "revoke": lambda: bob.revoke_access(obj.obj_id, users.bob, users.alice.identity),
        "tag": lambda: bob.update_tags(obj.obj_id, users.bob, [{"key": "k", "value": "v"}]),
        "untag": lambda: bob.remove_tags(obj.obj_id, users.bob, ["k"]),
        "transfer": lambda: bob.transfer_ownership(obj.obj_id, users.bob, users.bob.identity),
    }
    for name, attempt in attempts.items():
        with pytest.raises(RemoteError) as error:
            attempt()
        assert isinstance(error.value, AuthorisationError), name
        assert error.value.status == 403, name
    meta = dor_as(None).get_meta(obj.obj_id)
    assert meta.owner_iid == users.alice.iid
    assert meta.access == [users.alice.iid]
    assert meta.tags == {}
    assert catalog(node) == {obj.obj_id}


def test_restricted_object_changes_by_non_grantee_are_404(users: Any, add: Callable, dor_as: Callable) -> None:
    obj = add(b"hidden", access_restricted=True)
    bob = dor_as(users.bob)
    with pytest.raises(NotFoundError):
        bob.delete_data_object(obj.obj_id, users.bob)
    with pytest.raises(NotFoundError):
        bob.grant_access(obj.obj_id, users.bob, users.bob.identity)
    assert dor_as(users.alice).get_meta(obj.obj_id).access == [users.alice.iid]


def test_grantee_is_not_an_owner(users: Any, add: Callable, dor_as: Callable) -> None:
    obj = add(b"read only", access_restricted=True)
    dor_as(users.alice).grant_access(obj.obj_id, users.alice, users.bob.identity)
    bob = dor_as(users.bob)
    with pytest.raises(AuthorisationError):
        bob.grant_access(obj.obj_id, users.bob, users.carol.identity)
    with pytest.raises(AuthorisationError):
        bob.delete_data_object(obj.obj_id, users.bob)
    assert users.carol.iid not in dor_as(users.alice).get_meta(obj.obj_id).access
