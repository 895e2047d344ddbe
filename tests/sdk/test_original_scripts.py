"""Scripts written for the original middleware's proxies run here with one documented change (the proxy that
uploads gets the keystore that signs, or the owner is given as that Keystore): the original example application's
steps in order, with the original's call shapes and import paths. Also: a job submitted while its processor
deploys is queued, `DORProxy.search` returns every match, and the original SDK's names are accepted."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

import saas.dor.proxy
from saas.core.errors import ConfigError, RemoteError, SaaSError
from saas.core.exceptions import SaaSRuntimeException
from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.dor.schemas import DataObject
from saas.nodedb.proxy import NodeDBProxy
from saas.rest.exceptions import UnsuccessfulRequestError
from saas.rti.proxy import RTIProxy
from saas.rti.schemas import Task
from saas.sdk.base import connect
from tests.conftest import PASSWORD, RunningNode
from tests.rti.rti_support import adapter_repo, git
from tests.sdk.sdk_support import own_copy

SLOW_INSTALL = '#!/bin/bash\nsleep 2\nif [ "$1" == "nscc" ]; then exit 7; fi\necho "installed $1"\n'


def _upload_gpp(node: RunningNode, user: Keystore, repo: Path, commit: str, proc_path: str, config: str) -> str:
    # the original passed `owner=user.identity` to a proxy without a keystore; here the proxy gets the keystore
    dor = DORProxy(node.address, user)
    meta = dor.add_gpp_data_object(str(repo), commit, proc_path, config, user.identity, github_credentials=None)
    return meta.obj_id


def test_the_original_example_application_runs(node: RunningNode, tmp_path: Path) -> None:
    user = own_copy(node.keystore, tmp_path / "keystore")  # the node owner: deploys (strict deployment)
    repo, commit = adapter_repo(tmp_path / "repo", "abc")
    address = node.address

    # (1) identity: publish, then load the keystore again by its file name
    db = NodeDBProxy(address)
    db.update_identity(user.identity)
    assert user.identity.id in db.get_identities()
    user = Keystore.load(user.path, PASSWORD)
    user.sync()

    # (2) GPP and deployment; the job is submitted at once, while the processor may still deploy
    node_info = db.get_node()
    assert node_info.rti_service and node_info.dor_service
    proc_id = _upload_gpp(node, user, repo, commit, "abc", "default")
    rti = RTIProxy(address)
    rti.deploy(proc_id, user, github_credentials=None, ssh_credentials=None)
    assert proc_id in [p.proc_id for p in rti.get_deployed()]

    # (3) inputs: 'a' uploaded (owner given as the Keystore that signs), 'b' by value; the original's user_signature
    a_path = tmp_path / "a.json"
    a_path.write_text(json.dumps({"v": 1}))
    dor = DORProxy(address)
    a_meta = dor.add_data_object(a_path, user, False, False, "JSONObject", "json")
    a_signature = user.sign(f"{db.get_node().identity.id}:{a_meta.obj_id}".encode())
    job_input: list[Task.InputReference | Task.InputValue] = [
        Task.InputReference(name="a", type="reference", obj_id=a_meta.obj_id, user_signature=a_signature),
        Task.InputValue(name="b", type="value", value={"v": 1}),
    ]
    job_output = [Task.Output(name="c", owner_iid=user.identity.id, restricted_access=False, content_encrypted=False)]
    job = rti.submit_job(proc_id, job_input, job_output, user)

    # (4) wait, (5) the result, (6) the logs
    status = rti.wait_for_job(job.id, with_authorisation_by=user, timeout=60)
    assert status.state == "successful", status.errors
    status = rti.get_job_status(job.id, with_authorisation_by=user)
    c_obj_id = status.output["c"].obj_id
    download = tmp_path / "c.json"
    dor.get_content(c_obj_id, with_authorisation_by=user, download_path=download)
    assert json.loads(download.read_text()) == {"v": 2}
    logs = tmp_path / "logs.tar.gz"
    rti.get_job_logs(job.id, user, logs)
    assert tarfile.is_tarfile(logs)

    # (7) tags and search, (8) clean up
    tags = [
        DataObject.Tag(key="description", value="this is my first output data object."),
        DataObject.Tag(key="contact", value={"name": "Foo Bar", "contact": "foo.bar@internet.com"}),
    ]
    DORProxy(address).update_tags(c_obj_id, user, tags)
    assert c_obj_id in [o.obj_id for o in dor.search(patterns=["first output"])]
    rti.undeploy(proc_id, user)
    for obj_id in (a_meta.obj_id, c_obj_id, proc_id):
        dor.delete_data_object(obj_id, with_authorisation_by=user)


def test_the_one_change_is_told_and_errors_keep_their_old_names(node: RunningNode, tmp_path: Path) -> None:
    user = own_copy(node.keystore, tmp_path / "keystore")
    repo, commit = adapter_repo(tmp_path / "repo", "abc")
    with pytest.raises(ConfigError, match="give the proxy a keystore"):  # owner as Identity, proxy without keystore
        DORProxy(node.address).add_gpp_data_object(str(repo), commit, "abc", "default", user.identity)
    with pytest.raises(UnsuccessfulRequestError) as caught:
        RTIProxy(node.address).get_job_status("nosuchjob", with_authorisation_by=user)
    assert isinstance(caught.value, RemoteError) and isinstance(caught.value, SaaSRuntimeException)
    assert SaaSRuntimeException is SaaSError and caught.value.reason and caught.value.id


def test_a_job_waits_for_its_deploying_processor(node: RunningNode, tmp_path: Path) -> None:
    user = own_copy(node.keystore, tmp_path / "keystore")
    repo, commit = adapter_repo(tmp_path / "repo", copies={"slow-install": "abc"})
    (repo / "slow-install" / "install.sh").write_text(SLOW_INSTALL)
    git(repo, "commit", "--quiet", "-am", "slow install")
    commit = git(repo, "rev-parse", "HEAD")
    job_output = [Task.Output(name="c", owner_iid=user.identity.id)]
    with RTIProxy(node.address, user) as rti:
        jobs = {}
        for config in ("default", "nscc"):
            proc_id = _upload_gpp(node, user, repo, commit, "slow-install", config)
            assert rti.deploy(proc_id, user).state == "deploying"
            inputs = [Task.InputValue(name="a", value={"v": 2}), Task.InputValue(name="b", value={"v": 3})]
            jobs[config] = rti.submit_job(proc_id, inputs, job_output, user).id
            assert rti.get_job_status(jobs[config], user).state == "pending"
        done = rti.wait_for_job(jobs["default"], user, timeout=60)
        assert done.state == "successful", done.errors
        failed = rti.wait_for_job(jobs["nscc"], user, timeout=60)
    assert failed.state == "failed"
    assert failed.errors == [f"Processor {failed.job.proc_id} could not be deployed: install.sh exited with code 7"]


def test_search_returns_every_match_page_by_page(node: RunningNode, tmp_path: Path, monkeypatch) -> None:
    user = own_copy(node.keystore, tmp_path / "keystore")
    path = tmp_path / "x.json"
    with DORProxy(node.address, user) as dor:
        for i in range(5):
            path.write_text(json.dumps({"i": i}))
            dor.add_data_object(path, user.identity, False, False, "Page", "json")
        monkeypatch.setattr(saas.dor.proxy, "SEARCH_PAGE", 2)
        assert len(dor.search(data_type="Page")) == 5  # three pages
        assert len(dor.search(data_type="Page", limit=3)) == 3  # a page asked for


def test_the_original_sdk_names(node: RunningNode, tmp_path: Path) -> None:
    user = own_copy(node.keystore, tmp_path / "keystore")
    context = connect("{}:{}".format(*node.address), authority=user)
    assert context.authority is user and context.keystore is user
    repo, commit = adapter_repo(tmp_path / "repo", "abc")
    gpp = context.upload_gpp(str(repo), commit, "abc", "default")
    processor = gpp.deploy(context.rti())
    job = processor.submit({"a": {"v": 1}, "b": {"v": 5}})
    outputs = job.wait(pace=0.5)
    assert json.loads(outputs["c"].download(tmp_path / "c.json").read_text()) == {"v": 6}


def test_a_legacy_user_signature_is_the_users_or_refused(node: RunningNode, tmp_path: Path) -> None:
    user = own_copy(node.keystore, tmp_path / "keystore")
    repo, commit = adapter_repo(tmp_path / "repo", "abc")
    proc_id = _upload_gpp(node, user, repo, commit, "abc", "default")
    a_path = tmp_path / "a.json"
    a_path.write_text(json.dumps({"v": 4}))
    with DORProxy(node.address, user) as dor, RTIProxy(node.address) as rti:
        rti.deploy(proc_id, user)
        a_id = dor.add_data_object(a_path, user.identity, True, False, "JSONObject", "json").obj_id  # restricted
        node_iid = rti.node_iid
        outputs = [Task.Output(name="c", owner_iid=user.identity.id)]

        def submit(signature: str) -> str:
            inputs: list[Task.InputReference | Task.InputValue] = [
                Task.InputReference(name="a", obj_id=a_id, user_signature=signature),
                Task.InputValue(name="b", value={"v": 1}),
            ]
            return rti.submit_job(proc_id, inputs, outputs, user).id

        status = rti.wait_for_job(submit(user.sign(f"{node_iid}:{a_id}".encode())), user, timeout=60)
        assert status.state == "successful", status.errors
        with pytest.raises(RemoteError, match="not a delegation"):  # signed for another object: not the original's
            submit(user.sign(f"{node_iid}:{'0' * 64}".encode()))
