"""Importing the SDK pulls in no server code: a script using it needs neither the node's modules nor its web
stack (STYLE habit 2)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import saas.sdk

SERVER_MODULES = (
    "saas.rti.runner",
    "saas.rti.service",
    "saas.dor.service",
    "saas.node",
    "fastapi",
    "uvicorn",
    # issue 18: the node's side of packages, levels, offers and bookings (the SDK has saas.rti.offer_schemas)
    "saas.rti.offers",
    "saas.rti.offers_api",
    "saas.rti.bookings",
    "saas.rti.levels",
    "saas.rti.packages",
    "saas.sqlite",
)


def loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after `statement`."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(result.stdout))


def sdk_imports() -> list[str]:
    """Every module an SDK file imports, at the top or inside a function (imported when that function runs)."""
    names: set[str] = set()
    for path in Path(saas.sdk.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return sorted(names)


def test_sdk_imports_no_server_module() -> None:
    imports = sdk_imports()
    assert "saas.core.triggers" in imports and "saas.rti.proxy" in imports
    modules = loaded_after(f"import saas.sdk, saas.sdk.base, saas.sdk.adapter, {', '.join(imports)}")
    assert "saas.sdk.base" in modules  # the import did happen
    leaked = sorted(m for m in modules if m.split(".")[0] in ("fastapi", "uvicorn") or m in SERVER_MODULES)
    assert leaked == []


def test_offers_and_bookings_need_no_server_module() -> None:
    """Choosing a node, offers and bookings from the SDK: the shared models live in `saas.rti.offer_schemas`."""
    statement = "import saas.rti.choosing, saas.rti.offer_schemas, saas.rti.proxy, saas.sdk.base"
    modules = loaded_after(statement)
    assert "saas.rti.offer_schemas" in modules and "saas.rti.offers_proxy" in modules
    assert sorted(m for m in modules if m.split(".")[0] in ("fastapi", "uvicorn") or m in SERVER_MODULES) == []


def test_adapter_helpers_are_stdlib_only() -> None:
    modules = loaded_after("import saas.sdk.adapter")
    allowed = ("saas._compat", "saas.sdk", "saas.sdk.adapter")  # saas/__init__.py imports saas._compat
    assert sorted(m for m in modules if m.startswith("saas.") and m not in allowed) == []


def test_runner_and_sdk_share_one_trigger_parser() -> None:
    from saas.core.triggers import parse_trigger
    from saas.rti import runner

    assert runner.parse_trigger is parse_trigger
    assert parse_trigger("trigger:output:c\n") == ("output", "c")


def test_base_keeps_every_public_name() -> None:
    import saas.sdk.base as base
    from saas.sdk import jobs, objects

    for name in base.__all__:
        assert getattr(base, name).__name__ == name
    assert base.SDKJob is jobs.SDKJob and base.SDKGPPDataObject is objects.SDKGPPDataObject


def test_sdk_modules_stay_small() -> None:
    """One concept per module (STYLE habit 1): none over 500 lines."""
    sizes = {
        p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in Path(saas.sdk.__file__).parent.glob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > 500} == {}
