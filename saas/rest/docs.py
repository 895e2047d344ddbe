"""The node's API documentation: `/docs` served from the node itself, and `/openapi.json` with the signature headers.

`/docs` is Swagger UI whose script, stylesheet and icon come from the `fastapi-offline` package's static files,
mounted at `/docs/static`: the page works without internet access (FastAPI's default loads them from a CDN).

`/openapi.json` declares the six `saas-*` headers of a signed request (DESIGN §5) as API-key security schemes in
headers, and each operation that needs them (or takes them optionally) requires them together, so a reader and
generated clients see which operations are signed and with what. The operations are found by the markers the
signature dependencies of `saas.rest.auth` declare (whatever FastAPI's route layout)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from saas.core.signing import (
    HEADER_BODY_SHA256,
    HEADER_IID,
    HEADER_NODE,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
)
from saas.rest.auth import OPTIONALLY_SIGNED_SCHEME, SIGNED_SCHEME

__all__ = ["SIGNATURE_HEADERS", "add_docs"]

DOCS_URL = "/docs"
STATIC_URL = "/docs/static"
SIGNATURE_HEADERS: dict[str, str] = {
    HEADER_IID: "the signer's identity ID",
    HEADER_TIMESTAMP: "UTC milliseconds; within the node's request window (120 s by default)",
    HEADER_NONCE: "random, never used twice by the signer within the window",
    HEADER_NODE: "the identity ID of the node the request is for",
    HEADER_BODY_SHA256: "hex SHA-256 of the request body (of the empty body when there is none)",
    HEADER_SIGNATURE: "the signer's signature over: METHOD, path?query, timestamp, nonce, node, body-sha256 "
    "(one per line)",
}


def _static_folder() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {})
    schemes = components.setdefault("securitySchemes", {})
    schemes.pop(SIGNED_SCHEME, None)
    schemes.pop(OPTIONALLY_SIGNED_SCHEME, None)
    schemes.update(
        {
            name: {"type": "apiKey", "in": "header", "name": name, "description": text}
            for name, text in SIGNATURE_HEADERS.items()
        }
    )
    together: dict[str, list[str]] = {name: [] for name in SIGNATURE_HEADERS}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            marks = {name for requirement in operation.get("security", []) for name in requirement}
            if SIGNED_SCHEME in marks:
                operation["security"] = [together]
            elif OPTIONALLY_SIGNED_SCHEME in marks:
                operation["security"] = [{}, together]  # anonymous, or signed
    app.openapi_schema = schema
    return schema


def add_docs(app: FastAPI) -> None:
    """Serve `/docs` from the node's own copy of Swagger UI, and `/openapi.json` with the signature headers.
    The app is created with `docs_url=None` (this replaces FastAPI's CDN page)."""
    app.mount(STATIC_URL, StaticFiles(directory=_static_folder()), name="docs-static")

    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
        )

    app.add_api_route(DOCS_URL, docs, methods=["GET"], include_in_schema=False)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
