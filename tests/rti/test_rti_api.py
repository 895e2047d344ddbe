"""The RTI routes the SDK uses exist in the node's OpenAPI document with the methods it uses; processors are
listed anonymously, job routes are signed."""

from __future__ import annotations

import httpx
from rti_support import RTIEnv

EXPECTED = {
    "/api/v1/rti": {"get"},
    "/api/v1/rti/proc/{proc_id}": {"get", "post", "delete"},
    "/api/v1/rti/proc/{proc_id}/jobs": {"post"},
    "/api/v1/rti/proc/{proc_id}/run": {"post"},
    "/api/v1/rti/job": {"get"},
    "/api/v1/rti/job/{job_id}/status": {"get"},
    "/api/v1/rti/job/{job_id}/logs": {"get"},
    "/api/v1/rti/job/{job_id}": {"delete"},
}


def test_openapi_has_the_sdk_routes(env: RTIEnv) -> None:
    document = httpx.get(env.node.url + "/openapi.json", trust_env=False).json()
    for path, methods in EXPECTED.items():
        assert methods <= set(document["paths"][path]), path


def test_job_routes_need_a_signature(env: RTIEnv) -> None:
    with httpx.Client(base_url=env.node.url + "/api/v1", trust_env=False) as client:
        assert client.get("/rti").status_code == 200
        assert client.get("/rti/job").status_code == 401
        assert client.get("/rti/job/abcdefgh1234/status").status_code == 401
        assert client.delete("/rti/job/abcdefgh1234").status_code == 401
        assert client.post(f"/rti/proc/{'a' * 64}/jobs", json={}).status_code in (401, 422)
        assert client.post(f"/rti/proc/{'a' * 64}/run", json={}).status_code in (401, 422)
        assert client.get("/rti/job/../status").status_code == 404
