"""The three error tables agree: the REST app's class → status map (`saas.rest.app.STATUS_BY_ERROR`), the proxy's
status → class map (`saas.rest.proxy`), and the CLI's class → exit code map (`saas_cli.main.EXIT_CODES`). An error
raised on a node reaches a client as the same category, and the CLI exits with the same code whether the error
was raised locally or came back from a node. The README's exit code table lists exactly the codes the CLI uses."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from saas.core import errors
from saas.rest.app import STATUS_BY_ERROR
from saas.rest.proxy import error_from_response
from saas_cli.main import EXIT_CODES, _exit_code

README = Path(__file__).resolve().parents[1] / "README.md"
CLIENT_ERRORS = [(cls, status) for cls, status in STATUS_BY_ERROR if 400 <= status < 500 or status == 507]


def remote(status: int) -> errors.RemoteError:
    envelope = {"reason": "refused", "id": "e1", "details": {}}
    return error_from_response(httpx.Response(status, json=envelope))


@pytest.mark.parametrize(("cls", "status"), CLIENT_ERRORS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_a_remote_error_keeps_its_category(cls: type[errors.SaaSError], status: int) -> None:
    error = remote(status)
    assert error.status == status
    category = next(c for c, s in STATUS_BY_ERROR if s == status and issubclass(cls, c))
    # the client-side class is an instance of the category the node chose the status by (or of its parent)
    assert isinstance(error, errors.RemoteError)
    assert any(isinstance(error, c) for c in category.__mro__ if c not in (errors.SaaSError, Exception))


@pytest.mark.parametrize(("cls", "status"), CLIENT_ERRORS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_the_cli_exits_alike_for_local_and_remote_errors(cls: type[errors.SaaSError], status: int) -> None:
    local = cls.__new__(cls)
    errors.SaaSError.__init__(local, "refused")
    assert _exit_code(local) == _exit_code(remote(status)), cls.__name__
    assert _exit_code(local) != 1, f"{cls.__name__} (HTTP {status}) has no exit code of its own"


def test_validation_errors_of_the_api_are_usage_errors() -> None:
    assert _exit_code(remote(422)) == _exit_code(errors.InvalidInputError("bad")) == 2


def test_unknown_statuses_are_remote_failures() -> None:
    for status in (408, 431, 500, 502, 503):
        assert _exit_code(remote(status)) == 6, status


def test_every_exit_code_is_documented() -> None:
    text = README.read_text()
    table = text[text.index("Exit codes:") :].split("\n\n")[1]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    used = {code for _, code in EXIT_CODES} | {0, 1, 130}
    assert documented == used
