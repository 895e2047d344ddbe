"""Property-based tests of the whole REST API from the running node's own `/openapi.json` (schemathesis v4, over
real HTTP): whatever is sent, anonymously or signed by a known identity, valid or invalid, the node never answers
with a server error (DESIGN §5: "500 means a bug"); the only check is schemathesis' `not_a_server_error`.

schemathesis' pytest integration for schemas loaded from a fixture (`schemathesis.pytest.from_fixture`) does not
run under pytest 9 (it sets `Function._nodeid`), so the same per-operation tests it would build (examples, coverage
and fuzzing phases, via `schemathesis.pytest.lazy.get_all_tests`) run here as pytest subtests.

Random object IDs only ever reach "not found", so most generated requests on an object are pointed at real objects
(fresh for every operation, since an earlier operation may have deleted them): public and restricted ones of the
signer, an encrypted one, and one of another identity."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.pytest.lazy import get_all_tests

from saas.core.keys import random_key
from saas.core.keystore import Keystore
from saas.core.signing import sign_request
from saas.dor.proxy import DORProxy
from saas.nodedb.proxy import NodeDBProxy

FUZZ_SETTINGS = settings(
    max_examples=20,  # per operation, for the fuzzing phase (the coverage phase is bounded by the schema)
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
# Adding a GPP makes the node clone the generated `source`, which could be any host: it is fuzzed only anonymously,
# where authentication refuses it before the body is used.
SIGNED_EXCLUDED = {
    ("POST", "/api/v1/dor/add-gpp"),
    ("POST", "/api/v1/dashboard/login"),  # authenticated by its login token, never by a request signature
}


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.trust_env = False  # no proxies: traffic stays on 127.0.0.1
        yield s


@pytest.fixture
def api_schema(node: Any) -> Any:
    return schemathesis.openapi.from_url(node.url + "/openapi.json")


class Targets:
    """Real objects and identities for generated requests; `retarget(case)` points most cases at them."""

    def __init__(self, node: Any, alice: Keystore, bob: Keystore, folder: Path):
        self.node, self.alice, self.bob = node, alice, bob
        self.source = folder / "content.txt"
        self.source.write_bytes(b"fuzz me")
        self.objects: list[str] = []
        self._turn = itertools.count()

    def refresh(self) -> None:
        alice, bob = self.alice, self.bob
        with DORProxy(self.node.address, alice) as dor:
            made = [
                dor.add_data_object(self.source, alice.identity, False, False, "Text", "txt"),
                dor.add_data_object(self.source, alice.identity, True, False, "Text", "txt"),
                dor.add_data_object(self.source, alice.identity, True, True, "Text", "txt", content_key=random_key()),
            ]
        with DORProxy(self.node.address, bob) as dor:  # an upload is signed by its owner
            made.append(dor.add_data_object(self.source, bob.identity, False, False, "Text", "txt"))
        self.objects = [o.obj_id for o in made]

    def retarget(self, case: Any) -> None:
        parameters = case.path_parameters or {}
        if "obj_id" not in parameters:
            return
        turn = next(self._turn) % (len(self.objects) + 1)
        if turn == len(self.objects):
            return  # keep what was generated
        parameters = {**parameters, "obj_id": self.objects[turn]}
        if "iid" in parameters and turn % 2 == 0:
            parameters["iid"] = self.bob.iid
        case.path_parameters = parameters


@pytest.fixture
def targets(node: Any, keystores: Callable[[str], Keystore], tmp_path: Path) -> Targets:
    alice, bob = keystores("alice"), keystores("bob")
    with NodeDBProxy(node.address) as db:
        db.update_identity(alice.identity)
        db.update_identity(bob.identity)
    return Targets(node, alice, bob, tmp_path)


def run_all(api_schema: Any, subtests: Any, targets: Targets, call: Callable[[Any], None], signed: bool) -> int:
    """Run `call(case)` on the cases schemathesis makes for each operation, one subtest per operation."""

    def test(case: Any) -> None:
        targets.retarget(case)
        call(case)

    operations = 0
    for result in get_all_tests(schema=api_schema, test_func=test, settings=FUZZ_SETTINGS, given_kwargs={}):
        assert isinstance(result, Ok), result
        operation, operation_test = result.ok()
        if signed and (operation.method.upper(), operation.path) in SIGNED_EXCLUDED:
            continue
        operations += 1
        targets.refresh()
        with subtests.test(msg=f"{operation.method.upper()} {operation.path}"):
            operation_test()
    return operations


def test_anonymous_requests_never_cause_server_errors(
    api_schema: Any, subtests: Any, session: requests.Session, targets: Targets
) -> None:
    def call(case: Any) -> None:
        case.call_and_validate(session=session, checks=[not_a_server_error], timeout=30)

    assert run_all(api_schema, subtests, targets, call, signed=False) >= 19


def test_signed_requests_never_cause_server_errors(
    api_schema: Any, subtests: Any, session: requests.Session, targets: Targets, node: Any
) -> None:
    def call(case: Any) -> None:
        prepared = requests.Request(**case.as_transport_kwargs(base_url=node.url)).prepare()
        body = prepared.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        digest = hashlib.sha256(body).hexdigest()
        assert prepared.method is not None
        prepared.headers.update(sign_request(targets.alice, prepared.method, prepared.path_url, node.node.iid, digest))
        response = session.send(prepared, timeout=30)
        assert response.status_code != 401, f"the signature was not accepted: {response.text}"
        case.validate_response(response, checks=[not_a_server_error])

    assert run_all(api_schema, subtests, targets, call, signed=True) >= 18
