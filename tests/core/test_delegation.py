"""Scoped delegations (issue 14 item 3): a delegation names what it allows, the node that may present it and the
nodes that may serve it, and is refused for anything else."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import ValidationError

from saas.core.delegation import MAX_SERVERS, Delegation
from saas.core.errors import AuthenticationError, AuthorisationError
from saas.core.keystore import Keystore
from saas.core.signing import canonical_json

DELEGATE = "d" * 64
SERVER = "s" * 64
OTHER = "o" * 64
OBJ = "f" * 64


def test_a_delegation_checks_out_only_for_its_delegate_server_scope_and_object(alice: Keystore) -> None:
    delegation = Delegation.create(alice, DELEGATE, OBJ, servers=[SERVER], scopes=["metadata", "content"])
    assert delegation.check(alice.identity, DELEGATE, SERVER, "content", OBJ).id == alice.iid
    assert delegation.check(alice.identity, DELEGATE, SERVER, "metadata").id == alice.iid
    refused = {
        "for another node": (OTHER, SERVER, "content", OBJ),
        "served by other nodes": (DELEGATE, OTHER, "content", OBJ),
        "does not allow reading provenance": (DELEGATE, SERVER, "provenance", OBJ),
        "for another data object": (DELEGATE, SERVER, "content", "0" * 64),
    }
    for reason, (delegate, server, scope, obj_id) in refused.items():
        with pytest.raises(AuthorisationError, match=reason):
            delegation.check(alice.identity, delegate, server, scope, obj_id)  # type: ignore[arg-type]


def test_a_provenance_delegation_never_reads_content(alice: Keystore) -> None:
    provenance = Delegation.create(alice, DELEGATE, servers=[SERVER], scopes=["provenance"])
    assert provenance.check(alice.identity, DELEGATE, SERVER, "provenance").id == alice.iid
    for scope in ("content", "metadata"):
        with pytest.raises(AuthorisationError, match=f"does not allow reading {scope}"):
            provenance.check(alice.identity, DELEGATE, SERVER, scope, OBJ)


def test_a_content_delegation_names_its_object(alice: Keystore) -> None:
    with pytest.raises(ValidationError, match="must name its data object"):
        Delegation.create(alice, DELEGATE, servers=[SERVER], scopes=["content"])


def test_servers_and_scopes_are_required_and_bounded(alice: Keystore) -> None:
    for servers, scopes in (([], ["metadata"]), ([SERVER], []), (["not an identity"], ["metadata"])):
        with pytest.raises(ValidationError):
            Delegation.create(alice, DELEGATE, OBJ, servers=servers, scopes=scopes)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Delegation.create(
            alice, DELEGATE, OBJ, servers=[f"{i:064d}" for i in range(MAX_SERVERS + 1)], scopes=["content"]
        )
    with pytest.raises(ValidationError):
        Delegation.create(alice, DELEGATE, OBJ, servers=[SERVER], scopes=["everything"])  # type: ignore[list-item]


def test_the_signature_covers_servers_and_scopes(alice: Keystore, bob: Keystore) -> None:
    delegation = Delegation.create(alice, DELEGATE, OBJ, servers=[SERVER], scopes=["metadata"])
    for change in ({"servers": (SERVER, OTHER)}, {"scopes": ("metadata", "content")}):
        widened = delegation.model_copy(update=change)
        with pytest.raises(AuthenticationError, match="Invalid delegation signature"):
            widened.check(alice.identity, DELEGATE, OTHER, "metadata", OBJ)
    with pytest.raises(AuthenticationError, match="not known"):
        delegation.check(bob.identity, DELEGATE, SERVER, "metadata", OBJ)


def test_the_presenting_node_checks_without_a_server(alice: Keystore) -> None:
    delegation = Delegation.create(alice, DELEGATE, servers=[SERVER], scopes=["provenance"])
    assert delegation.check(alice.identity, DELEGATE, None, "provenance").id == alice.iid
    with pytest.raises(AuthorisationError):
        delegation.check(alice.identity, OTHER, None, "provenance")


def test_header_round_trip_and_unscoped_delegations_are_malformed(alice: Keystore) -> None:
    delegation = Delegation.create(alice, DELEGATE, OBJ, servers=[SERVER, OTHER], scopes=["metadata", "content"])
    assert Delegation.from_header(delegation.to_header()) == delegation
    # A delegation as made before scopes existed (a bearer token for everything): refused as malformed.
    old = {"issuer_iid": alice.iid, "delegate_iid": DELEGATE, "obj_id": None, "expires": delegation.expires}
    old["signature"] = alice.sign(canonical_json(old))
    with pytest.raises(AuthenticationError, match="malformed"):
        Delegation.from_header(base64.b64encode(json.dumps(old).encode()).decode())
    assert Delegation.from_message(old) is None


def test_the_largest_job_input_delegation_fits_user_signature(alice: Keystore) -> None:
    from saas.rti.schemas import Task

    servers = [f"{i:064d}" for i in range(MAX_SERVERS)]
    delegation = Delegation.create(alice, DELEGATE, OBJ, servers=servers, scopes=["metadata", "content", "provenance"])
    Task.InputReference(name="a", obj_id=OBJ, user_signature=delegation.to_header())  # within max_length
