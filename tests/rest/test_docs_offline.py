"""`/docs` loads everything from the node itself (no CDN), and `/openapi.json` declares the signature headers
(issue 16, item 7)."""

from __future__ import annotations

import re

import httpx

SIGNATURE_HEADERS = ["saas-iid", "saas-timestamp", "saas-nonce", "saas-node", "saas-body-sha256", "saas-signature"]


def test_docs_page_and_its_assets_come_from_the_node(node) -> None:
    with httpx.Client(base_url=node.url, trust_env=False) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "swagger" in page.text.lower()
        assert "cdn" not in page.text.lower()
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        assert len(assets) >= 3, page.text  # script, stylesheet, icon
        assert "/openapi.json" in page.text
        for asset in assets:
            assert asset.startswith("/docs/static/"), asset  # on this node, no other host
            answer = client.get(asset)
            assert answer.status_code == 200 and len(answer.content) > 1000, asset
        kinds = {a.rsplit(".", 1)[1] for a in assets}
        assert {"js", "css"} <= kinds
        assert client.get("/docs/static/nope.js").status_code == 404


def test_openapi_declares_the_signature_headers(node) -> None:
    with httpx.Client(base_url=node.url, trust_env=False) as client:
        schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert sorted(schemes) == sorted(SIGNATURE_HEADERS)
    for name in SIGNATURE_HEADERS:
        assert schemes[name]["type"] == "apiKey" and schemes[name]["in"] == "header" and schemes[name]["name"] == name
        assert schemes[name]["description"]
    together: dict[str, list[str]] = {name: [] for name in SIGNATURE_HEADERS}
    paths = schema["paths"]
    assert paths["/api/v1/rti/job"]["get"]["security"] == [together]  # signed: all six headers at once
    assert paths["/api/v1/dor/{obj_id}"]["delete"]["security"] == [together]
    assert paths["/api/v1/dor/add-c"]["post"]["security"] == [together]  # a streamed upload too
    assert paths["/api/v1/dor/{obj_id}/meta"]["get"]["security"] == [{}, together]  # anonymous, or signed
    assert "security" not in paths["/api/v1/db/node"]["get"]  # anonymous
    assert "/docs" not in paths and not any(p.startswith("/docs/static") for p in paths)
