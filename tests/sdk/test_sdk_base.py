"""The high-level SDK (`saas.sdk.base`) against real nodes: data objects (plain and encrypted), GPP deploy, jobs that
succeed, fail and are cancelled, callbacks, how fast `wait` notices the end, and finding things across two nodes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from saas.core.errors import InvalidInputError, JobError, NotFoundError, UnreachableError
from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.dor.schemas import DataObject
from saas.nodedb.proxy import NodeDBProxy
from saas.sdk.base import SDKCDataObject, SDKGPPDataObject, connect, publish_identity
from tests.conftest import RunningNode, free_port
from tests.p2p.conftest import wait_until
from tests.sdk.sdk_support import SDKEnv, own_copy

pytestmark = pytest.mark.timeout(120)


def status_requests(sdk: SDKEnv) -> float:
    """How many job status requests the node has answered (its /metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(sdk.node.url + "/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "saas_http_request_duration_seconds_count"
        and sample.labels["route"] == "/rti/job/{job_id}/status"
    )


def test_connect_refuses_bad_and_unreachable_addresses(keystores: Callable[[str], Keystore]) -> None:
    user = keystores("alice")
    with pytest.raises(InvalidInputError, match="expected host:port"):
        connect("not-an-address", user)
    port = free_port()
    with pytest.raises(UnreachableError, match=f"no SaaS node answers at 127.0.0.1:{port}"):
        connect(f"127.0.0.1:{port}", user, timeout=2)


def test_connect_publishes_identity_and_learns_the_node(
    node: RunningNode, keystores: Callable[[str], Keystore]
) -> None:
    alice, bob = keystores("alice"), keystores("bob")
    publish_identity(node.address, bob.identity)
    context = connect(node.address, alice)
    with NodeDBProxy(node.address) as db:
        assert db.get_identity(alice.iid) is not None and db.get_identity(bob.iid) is not None
    assert context.dor().identity.id == node.node.iid
    assert context.rti().identity.id == node.node.iid
    with pytest.raises(NotFoundError):
        context.dor(preferred_iid="0" * 64)


def test_upload_download_tags_access_and_delete(sdk: SDKEnv, keystores: Callable[[str], Keystore]) -> None:
    path = sdk.json_file("a.json", {"v": 16})
    obj = sdk.context.upload_content(path, "JSONObject", "json", access_restricted=True)
    assert isinstance(obj, SDKCDataObject)
    assert obj.meta.owner_iid == sdk.keystore.iid and obj.meta.access_restricted
    assert json.loads(obj.download(sdk.files / "copy.json").read_text()) == {"v": 16}
    assert obj.download(sdk.files).name == f"{obj.meta.obj_id}.json"  # a folder: named after the object

    obj.update_tags([DataObject.Tag(key="project", value="demo")])
    obj.update_tags({"run": 3})
    assert obj.meta.tags == {"project": "demo", "run": 3}
    assert [o.meta.obj_id for o in sdk.context.find_data_objects(["demo"])] == [obj.meta.obj_id]
    obj.remove_tags(["run"])
    assert obj.meta.tags == {"project": "demo"}

    bob = keystores("bob")
    sdk.context.publish_identity(bob.identity)
    obj.grant_access(bob.identity)
    assert bob.iid in obj.meta.access
    obj.revoke_access(bob.identity)
    assert bob.iid not in obj.meta.access

    found = sdk.context.find_data_object(obj.meta.obj_id)
    assert found is not None and found.meta.obj_id == obj.meta.obj_id
    assert obj.get_provenance().data_nodes  # at least the object itself
    obj.delete()
    assert sdk.context.find_data_object(obj.meta.obj_id) is None


def test_encrypted_content_is_encrypted_on_the_node_and_decrypted_on_download(sdk: SDKEnv) -> None:
    path = sdk.json_file("secret.json", {"v": 42})
    obj = sdk.context.upload_content(path, "JSONObject", "json", access_restricted=True, content_encrypted=True)
    assert obj.meta.content_encrypted
    assert sdk.keystore.content_keys.get(obj.meta.obj_id)  # the key stays with the owner
    with DORProxy(sdk.node.address, sdk.keystore) as dor:  # what the node stores: not the plain text
        raw = dor.get_content(obj.meta.obj_id, sdk.keystore, sdk.files / "raw")
    assert b"42" not in raw.read_bytes()
    assert json.loads(obj.download(sdk.files / "plain.json").read_text()) == {"v": 42}
    obj.delete()
    assert sdk.keystore.content_keys.get(obj.meta.obj_id) is None


def test_deploy_submit_and_wait_with_callbacks(sdk: SDKEnv) -> None:
    gpp = sdk.gpp("abc")
    assert isinstance(gpp, SDKGPPDataObject) and gpp.meta.gpp.proc_descriptor.name == "test-proc"
    proc = gpp.deploy(sdk.context.rti())
    assert proc.descriptor.proc_id == gpp.meta.obj_id
    assert proc.status().state == "ready"
    assert sdk.context.find_processor_by_id(proc.proc_id) is not None
    assert sdk.context.find_processor_by_name("test-proc") is not None
    assert [p.proc_id for p in sdk.context.find_processors("test")] == [proc.proc_id]
    assert sdk.context.find_processors("nothing-like-this") == []

    a = sdk.context.upload_content(sdk.json_file("a.json", {"v": 1}), "JSONObject", "json", False)
    progress: list[int] = []
    messages: list[tuple[str, str]] = []
    output = proc.submit_and_wait(
        {"a": a, "b": {"v": 2}},
        callback_progress=progress.append,
        callback_message=lambda severity, text: messages.append((severity, text)),
    )
    assert set(output) == {"c"}
    assert json.loads(output["c"].download(sdk.files / "c.json").read_text()) == {"v": 3}
    assert progress == [50, 100]  # every trigger the adapter printed, in order
    assert messages == [("info", "1 + 2 = 3")]
    provenance = output["c"].get_provenance()
    assert provenance.steps

    job = proc.submit({"a": {"v": 5}, "b": {"v": 6}}, name="by value")
    assert job.wait()["c"].meta.data_type == "JSONObject"
    assert job.id in [j.id for j in sdk.context.find_all_jobs_with_status()]
    statuses = status_requests(sdk)
    assert {j.id: j.state for j in sdk.context.find_jobs()}[job.id] == "successful"
    assert status_requests(sdk) == statuses  # the states came with the list: no status request per job
    found = sdk.context.find_job(job.id)
    assert found is not None and found.status.state == "successful"
    assert found.processor is not None and found.processor.proc_id == proc.proc_id

    def broken(percent: int) -> None:
        raise RuntimeError(f"bug in a callback at {percent}%")

    with pytest.raises(RuntimeError, match="bug in a callback at 50%"):  # not swallowed by the helper thread
        proc.submit_and_wait({"a": {"v": 1}, "b": {"v": 1}}, callback_progress=broken)

    with pytest.raises(InvalidInputError, match="Missing input"):
        proc.submit({"a": {"v": 1}})
    with pytest.raises(InvalidInputError, match="Unknown input"):
        proc.submit({"a": {"v": 1}, "b": {"v": 1}, "z": 1})
    proc.undeploy()
    assert sdk.context.find_processor_by_id(proc.proc_id) is None


def test_encrypted_input_and_output(sdk: SDKEnv) -> None:
    proc = sdk.gpp("abc").deploy(sdk.context.rti())
    a = sdk.context.upload_content(sdk.json_file("a.json", {"v": 7}), "JSONObject", "json", True, True)
    output = proc.submit_and_wait(
        {"a": a, "b": {"v": 1}}, product_specs={"c": {"restricted_access": True, "content_encrypted": True}}
    )
    c = output["c"]
    assert c.meta.content_encrypted and c.meta.access_restricted
    assert json.loads(c.download(sdk.files / "c.json").read_text()) == {"v": 8}  # decrypted with the envelope


def test_failed_job_raises_with_reason_and_log_tail(sdk: SDKEnv) -> None:
    proc = sdk.gpp("fail").deploy(sdk.context.rti())
    with pytest.raises(JobError) as caught:
        proc.submit_and_wait({"a": {"v": 1}, "b": {"v": 2}})
    error = caught.value
    assert error.details["state"] == "failed"
    assert "exited with code 3" in error.reason
    assert "something went badly wrong" in error.details["log_tail"]
    assert "Log tail" in str(error)


def test_cancelled_job_raises(sdk: SDKEnv) -> None:
    proc = sdk.gpp("slow").deploy(sdk.context.rti())
    job = proc.submit({"a": {"v": 30}, "b": {"v": 1}})
    wait_until(lambda: job.refresh_status().state == "running", 20, "the job to run")
    job.cancel()
    with pytest.raises(JobError, match="cancelled"):
        job.wait(timeout=20)
    assert job.status.state == "cancelled"


def test_wait_times_out_with_an_error(sdk: SDKEnv) -> None:
    proc = sdk.gpp("slow").deploy(sdk.context.rti())
    job = proc.submit({"a": {"v": 30}, "b": {"v": 1}})
    started = time.monotonic()
    with pytest.raises(JobError, match="still"):
        job.wait(timeout=0.5)
    assert time.monotonic() - started < 5
    job.cancel()


def test_wait_notices_the_end_at_once(sdk: SDKEnv) -> None:
    proc = sdk.gpp("slow").deploy(sdk.context.rti())
    job = proc.submit({"a": {"v": 1.0}, "b": {"v": 1}})
    job.wait(timeout=30)
    noticed = time.time()
    final = job.status.timeline[-1]
    assert final["state"] == "successful"
    # the node's timestamp of the final state vs. the moment wait returned (same clock: one machine)
    print(f"wait returned {1000 * (noticed - final['time'] / 1000):.1f} ms after the job ended")
    assert noticed - final["time"] / 1000 < 0.25, noticed - final["time"] / 1000


def test_find_across_two_nodes(node_factory: Callable[..., RunningNode], tmp_path: Path) -> None:
    first = node_factory("node")
    second = node_factory("second", boot_node="{}:{}".format(*first.node.config.p2p_address))
    wait_until(lambda: len(first.node.nodedb.network()) >= 2, 15, "the nodes to know each other")
    user = own_copy(first.keystore, tmp_path / "user")
    context = connect(first.address, user)
    wait_until(lambda: second.node.nodedb.get_identity(user.iid) is not None, 15, "the identity on the second node")
    assert {n.identity.id for n in context.nodes()} == {first.node.iid, second.node.iid}
    files = tmp_path / "files"
    files.mkdir()
    (files / "x.json").write_text('{"v": 1}')
    on_first = context.upload_content(files / "x.json", "JSONObject", "json", False)
    on_second = context.upload_content(files / "x.json", "Other", "json", False, preferred_dor_iid=second.node.iid)
    assert on_second.node.identity.id == second.node.iid
    found = {o.meta.obj_id: o.node.identity.id for o in context.find_data_objects(owner_iid=user.iid)}
    assert found == {on_first.meta.obj_id: first.node.iid, on_second.meta.obj_id: second.node.iid}
    located = context.find_data_object(on_second.meta.obj_id)
    assert located is not None and located.node.identity.id == second.node.iid
    assert json.loads(located.download(files / "back.json").read_text()) == {"v": 1}  # type: ignore[union-attr]
