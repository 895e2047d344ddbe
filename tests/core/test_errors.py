"""The exception tree: envelopes and the class relationships the REST app, SDK and CLI map from."""

from __future__ import annotations

import json
import re

import pytest

from saas.core import errors
from saas.core.errors import (
    AuthenticationError,
    AuthorisationError,
    ConfigError,
    CryptoError,
    DecryptionError,
    IdentityError,
    InvalidInputError,
    InvalidSignatureError,
    KeystoreCorruptedError,
    KeystoreError,
    KeystoreNotFoundError,
    MissingValueError,
    NotFoundError,
    RemoteError,
    SaaSError,
    UnreachableError,
    WrongPasswordError,
)


def test_envelope_has_reason_id_and_details() -> None:
    error = NotFoundError("No such object", {"obj_id": "abc"})
    envelope = error.to_envelope()
    assert envelope == {"reason": "No such object", "id": error.id, "details": {"obj_id": "abc"}}
    assert re.fullmatch(r"[0-9a-f]{16}", error.id)
    assert str(error) == "No such object"
    assert json.loads(json.dumps(envelope)) == envelope


def test_error_ids_are_unique_unless_given() -> None:
    assert SaaSError("x").id != SaaSError("x").id
    assert SaaSError("x", error_id="quoted-id").to_envelope()["id"] == "quoted-id"


def test_details_default_to_empty_and_are_copied() -> None:
    assert SaaSError("x").to_envelope()["details"] == {}
    details = {"a": 1}
    error = SaaSError("x", details)
    details["a"] = 2
    assert error.details == {"a": 1}


def test_missing_value_error_names_the_flag() -> None:
    error = MissingValueError("password", "--password")
    assert isinstance(error, InvalidInputError)
    assert "password" in error.reason
    assert "--password" in error.reason
    assert error.details == {"name": "password", "flag": "--password"}
    without_flag = MissingValueError("name")
    assert "name" in without_flag.reason
    assert "use" not in without_flag.reason
    assert without_flag.details == {"name": "name", "flag": None}


def test_remote_error_keeps_status_and_id() -> None:
    error = RemoteError("Forbidden", {"a": 1}, "remote-id", status=403)
    assert (error.status, error.id, error.details) == (403, "remote-id", {"a": 1})
    assert RemoteError("boom").status == 500


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (WrongPasswordError, (KeystoreError, AuthenticationError)),
        (KeystoreNotFoundError, (KeystoreError, NotFoundError)),
        (KeystoreCorruptedError, (KeystoreError,)),
        (MissingValueError, (InvalidInputError,)),
        (IdentityError, (InvalidInputError,)),
        (DecryptionError, (CryptoError,)),
        (InvalidSignatureError, (CryptoError,)),
    ],
)
def test_class_relationships(cls: type[SaaSError], bases: tuple[type[SaaSError], ...]) -> None:
    for base in bases:
        assert issubclass(cls, base)


@pytest.mark.parametrize(
    ("cls", "not_bases"),
    [
        (KeystoreCorruptedError, (AuthenticationError, NotFoundError, InvalidInputError, WrongPasswordError)),
        (WrongPasswordError, (NotFoundError, KeystoreCorruptedError)),
        (KeystoreNotFoundError, (AuthenticationError,)),
        (DecryptionError, (InvalidInputError, AuthenticationError)),
        (AuthorisationError, (AuthenticationError,)),
    ],
)
def test_categories_do_not_overlap(cls: type[SaaSError], not_bases: tuple[type[SaaSError], ...]) -> None:
    for base in not_bases:
        assert not issubclass(cls, base)


def test_every_public_error_is_a_saas_error() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), SaaSError), name
    assert {ConfigError, UnreachableError, RemoteError} <= {getattr(errors, n) for n in errors.__all__}
