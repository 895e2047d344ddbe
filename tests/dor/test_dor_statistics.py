"""DOR statistics count only what the caller may see."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def test_statistics_hide_restricted_objects(add: Callable[..., Any], dor_as: Callable, users: Any) -> None:
    add(b"open data", data_type="OpenType", data_format="csv")
    secret = add(b"secret data", access_restricted=True, data_type="SecretType", data_format="bin")
    dor_as(users.alice).update_tags(secret.obj_id, users.alice, [secret.Tag(key="project-x", value=1)])

    anonymous = dor_as(None).statistics()
    assert anonymous.data_types == ["OpenType"]
    assert anonymous.data_formats == ["csv"]
    assert anonymous.tag_keys == []
    assert anonymous.objects == 1
    assert anonymous.content_bytes == len(b"open data")

    stranger = dor_as(users.bob).statistics()
    assert stranger.objects == 1 and "SecretType" not in stranger.data_types

    owner = dor_as(users.alice).statistics()
    assert owner.data_types == ["OpenType", "SecretType"]
    assert owner.tag_keys == ["project-x"]
    assert owner.objects == 2
