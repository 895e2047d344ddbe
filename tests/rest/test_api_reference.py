"""README.md lists every REST route, generated from the node's routers: this fails when it is stale or misses one."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute

from saas.rest.app import routers
from saas_cli.api_reference import END, START, render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_api_reference_is_current() -> None:
    text = README.read_text(encoding="utf-8")
    assert START in text and END in text, "README.md lost its api-reference markers"
    current = text[text.index(START) + len(START) : text.index(END)].strip("\n")
    assert current == render().strip("\n"), (
        "README.md's REST API reference is out of date with the routes: run scripts/api-reference and commit README.md"
    )


def test_every_route_is_listed_with_a_description() -> None:
    rows = render().splitlines()[2:]
    routes = [(r, p) for router, p in routers(dor=True, rti=True) for r in router.routes if isinstance(r, APIRoute)]
    assert len(rows) == len(routes)
    for row in rows:
        method, path, caller, what = (cell.strip() for cell in row.strip("|").split(" | ", 3))
        assert caller in {"signed", "either", "anyone"}, row
        assert what, f"{method} {path} has no docstring: say what the route does in its handler's docstring"


def test_callers_follow_the_signature_dependencies() -> None:
    table = {row.split(" | ")[1].strip("`"): row.split(" | ")[2] for row in render().splitlines()[2:]}
    assert table["/api/v1/dor/add-c"] == "signed"
    assert table["/api/v1/dor"] == "either"
    assert table["/api/v1/db/node"] == "anyone"
    assert table["/api/v1/rti/job/{job_id}/events"] == "signed"
