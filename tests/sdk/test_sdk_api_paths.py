"""The SDK and the API cannot drift: every path the proxies request exists in the node's OpenAPI document with the
same method, and importing the SDK stays light (no server dependencies)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import RunningNode

ROOT = Path(__file__).resolve().parents[2]
PROXIES = [
    "saas/rest/proxy.py",
    "saas/nodedb/proxy.py",
    "saas/dor/proxy.py",
    "saas/rti/proxy.py",
    "saas/sdk/base.py",
    "saas/ops/proxy.py",
    "saas/audit/proxy.py",
]


def _path_text(node: ast.expr) -> str | None:
    """A path literal or f-string with every placeholder as `{}`; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(p.value if isinstance(p, ast.Constant) else "{}" for p in node.values)  # type: ignore[misc]
    return None


def proxy_requests() -> set[tuple[str, str]]:
    """(method, path) of every `request(...)` / `get_json(...)` call in the proxies and the SDK."""
    found: set[tuple[str, str]] = set()
    for relative in PROXIES:
        for call in ast.walk(ast.parse((ROOT / relative).read_text())):
            if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
                continue
            if call.func.attr == "get_json" and call.args:
                method, path = "GET", _path_text(call.args[0])
            elif call.func.attr == "request" and len(call.args) >= 2 and isinstance(call.args[0], ast.Constant):
                method, path = str(call.args[0].value), _path_text(call.args[1])
            else:
                continue
            if path is not None and path.startswith("/"):
                found.add((method, path))
    return found


def test_every_proxy_path_is_in_the_openapi_document(node: RunningNode) -> None:
    document = httpx.get(node.url + "/openapi.json", timeout=10).json()
    served = {
        (method.upper(), re.sub(r"\{[^}]+\}", "{}", path.removeprefix("/api/v1")))
        for path, operations in document["paths"].items()
        for method in operations
    }
    requested = proxy_requests()
    assert len(requested) >= 20  # the scan found the proxies' calls
    assert requested - served == set(), f"proxy paths the node does not serve: {sorted(requested - served)}"


def test_importing_the_sdk_loads_no_server_dependency() -> None:
    code = (
        "import sys\nimport saas.sdk.base\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'uvicorn', 'libp2p', 'starlette', 'trio'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT / "tests"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_public_surface_of_the_sdk() -> None:
    import saas.sdk.base

    assert sorted(saas.sdk.base.__all__) == [
        "SDKCDataObject",
        "SDKContext",
        "SDKDataObject",
        "SDKGPPDataObject",
        "SDKJob",
        "SDKProcessor",
        "SDKProductSpecification",
        "connect",
        "publish_identity",
    ]
