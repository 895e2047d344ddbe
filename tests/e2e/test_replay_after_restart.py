"""No replay across restarts (issue 14 item 5, DESIGN §5): a signed request captured within the 120 s window is
refused after the node restarts on the same datastore — gracefully or killed with SIGKILL right after it acted —
because the (iid, nonce) pairs the node accepted are persisted (`saas.rest.replay.SeenRequests`)."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import httpx
import pytest
from e2e_support import NodeProcess

from saas.core.keystore import Keystore
from saas.core.signing import sign_request
from saas.dor.schemas import DataObject

pytestmark = pytest.mark.slow

API = "/api/v1"


def captured_grant(
    node: NodeProcess, owner: Keystore, obj_id: str, grantee: Keystore
) -> tuple[str, bytes, dict[str, str]]:
    """A grant of access as the owner's client signs it (path, body, headers): what an eavesdropper keeps."""
    path = f"{API}/dor/{obj_id}/access/{grantee.iid}"
    body = json.dumps({"key_envelope": None}).encode()
    headers = sign_request(owner, "POST", path, node.keystore.iid, hashlib.sha256(body).hexdigest())
    return path, body, {**headers, "content-type": "application/json"}


def send(node: NodeProcess, request: tuple[str, bytes, dict[str, str]]) -> httpx.Response:
    path, body, headers = request
    with httpx.Client(base_url=node.url, timeout=30, trust_env=False) as http:
        return http.post(path, content=body, headers=headers)


def restricted_object(node: NodeProcess, owner: Keystore, path: Path) -> DataObject:
    path.write_text('{"secret": 1}')
    return node.dor(owner).add_data_object(path, owner.identity, True, False, "JSONObject", "json")


@pytest.mark.parametrize("how", ["graceful", "sigkill"])
def test_a_captured_grant_is_refused_after_a_restart(
    node_process: NodeProcess, user: Keystore, other: Keystore, tmp_path: Path, how: str
) -> None:
    node = node_process
    node.publish(user, other)
    obj = restricted_object(node, user, tmp_path / "secret.json")
    grant = captured_grant(node, user, obj.obj_id, other)
    assert send(node, grant).status_code == 200
    assert other.iid in node.dor(other).get_meta(obj.obj_id).access  # type: ignore[union-attr]
    node.dor(user).revoke_access(obj.obj_id, user, other.identity)
    assert node.dor(other).get_meta(obj.obj_id) is None

    if how == "graceful":
        assert node.stop(signal.SIGTERM) == 0
    else:
        node.kill(only_the_node=True)
    node.restart()

    replayed = send(node, grant)
    assert replayed.status_code == 401, replayed.text
    body = replayed.json()
    assert set(body) == {"reason", "id", "details"} and "Replayed request" in body["reason"]
    assert grant[2]["saas-signature"] not in replayed.text
    assert node.dor(other).get_meta(obj.obj_id) is None  # the grant did not happen again
    # The owner's fresh requests are accepted as before.
    assert other.iid in node.dor(user).grant_access(obj.obj_id, user, other.identity).access
