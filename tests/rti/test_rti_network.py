"""The RTI across the network: the GPP and inputs live on another node's DOR, outputs go to another node's DOR.

Node A runs the job; node B holds the GPP and the inputs and takes the outputs (`target_node_iid`); node C has an
RTI and no DOR, so its outputs go to the nearest DOR. Restricted inputs on B are fetched with the user's
delegation (added by `RTIProxy.submit_job`), encrypted ones with the key envelope the owner granted to node A —
only for a job whose user holds the key too (owner, or an envelope of their own on B), as node B says."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rti_support import adapter_repo, files_holding

from saas.core.delegation import Delegation
from saas.core.errors import AuthorisationError, InvalidInputError
from saas.core.keys import random_key
from saas.core.keystore import Keystore
from saas.dor.proxy import DORProxy
from saas.dor.schemas import CDataObject
from saas.nodedb.proxy import NodeDBProxy
from saas.rti.proxy import RTIProxy
from saas.rti.schemas import Task
from tests.conftest import RunningNode
from tests.p2p.conftest import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@dataclass
class Net:
    a: RunningNode  # full node: runs the jobs
    b: RunningNode  # storage node: holds GPP, inputs, outputs
    c: RunningNode  # execution node without a DOR
    user: Keystore
    files: Path

    def add_json(self, node: RunningNode, value: Any, **kwargs: Any) -> Any:
        path = self.files / f"{os.urandom(4).hex()}.json"
        path.write_text(json.dumps(value))
        settings: dict[str, Any] = {"access_restricted": False, "content_encrypted": False, **kwargs}
        with DORProxy(node.address, self.user) as dor:
            return dor.add_data_object(path, self.user.identity, data_type="JSONObject", data_format="json", **settings)

    def deploy(self, node: RunningNode, proc_id: str) -> None:
        with RTIProxy(node.address, node.keystore) as rti:
            rti.deploy(proc_id, node.keystore)
            assert rti.wait_deployed(proc_id, timeout=60).state == "ready"

    def run(self, node: RunningNode, proc_id: str, inputs: list[Any], **out: Any) -> Any:
        outputs = [Task.Output(name="c", owner_iid=self.user.iid, **out)]
        with RTIProxy(node.address, self.user) as rti:
            job = rti.submit_job(proc_id, inputs, outputs, self.user)
            return rti.wait_for_job(job.id, self.user, timeout=60)


@pytest.fixture
def net(
    node_factory: Callable[..., RunningNode], keystores: Callable[[str], Keystore], tmp_path: Path
) -> Iterator[Net]:
    a = node_factory("alpha")
    boot = "{}:{}".format(*a.node.config.p2p_address)
    b = node_factory("beta", boot_node=boot, node_type="storage")
    c = node_factory("gamma", boot_node=boot, node_type="execution")
    user = keystores("user")
    with NodeDBProxy(b.address) as db:
        db.update_identity(user.identity)
    for n in (a, b, c):
        wait_until(
            lambda n=n: len(n.node.p2p.peers()) == 2 and n.node.nodedb.get_identity(user.iid) is not None,  # type: ignore[misc]  # mypy cannot type a lambda with a default argument
            20,
            "the network to form and the user to be known everywhere",
        )
    files = tmp_path / "files"
    files.mkdir()
    yield Net(a, b, c, user, files)


@pytest.fixture
def gpp_on_b(net: Net, tmp_path: Path) -> str:
    repo, commit = adapter_repo(tmp_path / "repo", "abc")
    with DORProxy(net.b.address, net.user) as dor:
        return dor.add_gpp_data_object(str(repo), commit, "abc", "default", net.user.identity).obj_id


def _content(node: RunningNode, obj_id: str, user: Keystore, tmp: Path) -> Any:
    with DORProxy(node.address, user) as dor:
        return json.loads(dor.get_content(obj_id, user, tmp / f"{obj_id}.json").read_text())


def test_input_on_b_job_on_a_output_on_b(net: Net, gpp_on_b: str, tmp_path: Path) -> None:
    net.deploy(net.a, gpp_on_b)  # the GPP is found on node B
    a = net.add_json(net.b, {"v": 20}, access_restricted=True)  # visible to node A only through a delegation
    status = net.run(
        net.a,
        gpp_on_b,
        [Task.InputReference(name="a", obj_id=a.obj_id), Task.InputValue(name="b", value={"v": 22})],
        target_node_iid=net.b.node.iid,
    )
    assert status.state == "successful", status.errors
    c = status.output["c"]
    with DORProxy(net.a.address) as dor_a:
        assert dor_a.get_meta(c.obj_id) is None  # not on A
    assert _content(net.b, c.obj_id, net.user, tmp_path) == {"v": 42}
    with DORProxy(net.b.address, net.user) as dor_b:
        meta = dor_b.get_meta(c.obj_id)
        assert isinstance(meta, CDataObject) and meta.owner_iid == net.user.iid
        assert meta.recipe is not None and meta.recipe.processor.proc_descriptor.name == "test-proc"
        assert meta.recipe.consumes["a"]["c_hash"] == a.c_hash
        provenance = dor_b.get_provenance(c.obj_id)
    assert {a.c_hash, c.c_hash} <= set(provenance.data_nodes)
    # The recipe is node A's, signed by it: node B stored it only with the user's signed task, anyone can check it.
    assert meta.recipe.signer_iid == net.a.node.iid and meta.recipe.verify(net.a.keystore.identity)
    assert [(s["signer_iid"], s["verified"]) for s in provenance.steps] == [(net.a.node.iid, True)]
    # Node A kept the user's signed submission until the job was final, not longer.
    assert net.a.node.rti is not None
    kept = lambda: net.a.node.rti.db.call(lambda c: c.execute("SELECT count(*) FROM proofs").fetchone()[0])  # noqa: E731
    wait_until(lambda: kept() == 0, 10, "the final job's signed submission to be forgotten")


def test_job_run_in_one_request_stores_its_output_on_another_node(net: Net, gpp_on_b: str) -> None:
    """`run` (POST .../run?wait=..) is a signed submission too: node B accepts the output with it."""
    net.deploy(net.a, gpp_on_b)
    inputs = [Task.InputValue(name="a", value={"v": 1}), Task.InputValue(name="b", value={"v": 2})]
    outputs = [Task.Output(name="c", owner_iid=net.user.iid, target_node_iid=net.b.node.iid)]
    with RTIProxy(net.a.address, net.user) as rti:
        status = rti.run_job(gpp_on_b, inputs, outputs, net.user, timeout=60)
    assert status.state == "successful", status.errors
    assert status.output["c"].custodian is not None and status.output["c"].custodian.identity.id == net.b.node.iid


def test_job_without_the_signed_task_stores_no_output_on_another_node(net: Net, gpp_on_b: str) -> None:
    """A job on a board from before nodes kept the user's signed submission (as after an upgrade): another node's
    DOR would refuse its outputs, so the job fails with the reason instead of storing anything."""
    net.deploy(net.a, gpp_on_b)
    task = Task(
        proc_id=gpp_on_b,
        user_iid=net.user.iid,
        input=[Task.InputValue(name="a", value={"v": 1}), Task.InputValue(name="b", value={"v": 2})],
        output=[Task.Output(name="c", owner_iid=net.user.iid, target_node_iid=net.b.node.iid)],
    )
    assert net.a.node.rti is not None
    job = net.a.call(net.a.node.rti.submit(net.user.identity, gpp_on_b, task))  # as old boards hold it: no proof
    with RTIProxy(net.a.address, net.user) as rti:
        status = rti.wait_for_job(job.id, net.user, timeout=60)
    assert status.state == "failed"
    assert "submitted before nodes kept the user's signed task" in status.errors[-1]
    with DORProxy(net.b.address, net.user) as dor_b:
        assert dor_b.search(owner_iid=net.user.iid, data_type="JSONObject") == []


def test_node_without_dor_stores_outputs_on_the_nearest_dor(net: Net, gpp_on_b: str, tmp_path: Path) -> None:
    net.deploy(net.c, gpp_on_b)
    a = net.add_json(net.a, {"v": 1})
    status = net.run(
        net.c, gpp_on_b, [Task.InputReference(name="a", obj_id=a.obj_id), Task.InputValue(name="b", value={"v": 2})]
    )
    assert status.state == "successful", status.errors
    c = status.output["c"]
    holders = []
    for node in (net.a, net.b):
        with DORProxy(node.address) as dor:
            if dor.get_meta(c.obj_id) is not None:
                holders.append(node)
    assert len(holders) == 1  # stored exactly once, on one of the DORs
    assert _content(holders[0], c.obj_id, net.user, tmp_path) == {"v": 3}


def test_encrypted_input_on_b_with_an_envelope_for_a(net: Net, gpp_on_b: str, tmp_path: Path) -> None:
    net.deploy(net.a, gpp_on_b)
    key = random_key()
    a = net.add_json(net.b, {"v": 5}, access_restricted=True, content_encrypted=True, content_key=key)
    with DORProxy(net.b.address) as dor:
        # the owner grants node A access, with the content key wrapped for node A
        dor.grant_access(a.obj_id, net.user, net.a.keystore.identity, net.a.keystore.identity.wrap_key(key))
    status = net.run(
        net.a,
        gpp_on_b,
        [Task.InputReference(name="a", obj_id=a.obj_id), Task.InputValue(name="b", value={"v": 6})],
        target_node_iid=net.b.node.iid,
    )
    assert status.state == "successful", status.errors
    assert _content(net.b, status.output["c"].obj_id, net.user, tmp_path) == {"v": 11}


def test_encrypted_input_on_b_only_for_users_who_hold_the_key(
    net: Net, gpp_on_b: str, keystores: Any, tmp_path: Path
) -> None:
    """Node A has an envelope for the input on B; a user B merely granted access (no envelope of their own) is
    refused at submission, as node B (asked by node A) says; given an envelope, the same user's job runs."""
    net.deploy(net.a, gpp_on_b)
    grantee = keystores("grantee")
    with NodeDBProxy(net.b.address) as db:
        db.update_identity(grantee.identity)
    wait_until(lambda: net.a.node.nodedb.get_identity(grantee.iid) is not None, 20, "the grantee to be known on A")
    key = random_key()
    secret = 314159
    a = net.add_json(net.b, {"v": secret}, access_restricted=True, content_encrypted=True, content_key=key)
    with DORProxy(net.b.address) as dor:
        dor.grant_access(a.obj_id, net.user, net.a.keystore.identity, net.a.keystore.identity.wrap_key(key))
        dor.grant_access(a.obj_id, net.user, grantee.identity)  # may read the ciphertext, no key
    inputs: list[Task.InputReference | Task.InputValue] = [
        Task.InputReference(name="a", obj_id=a.obj_id),
        Task.InputValue(name="b", value={"v": 1}),
    ]
    outputs = [Task.Output(name="c", owner_iid=grantee.iid, target_node_iid=net.b.node.iid)]
    with RTIProxy(net.a.address, grantee) as rti:
        with pytest.raises(AuthorisationError) as e:
            rti.submit_job(gpp_on_b, inputs, outputs, grantee)
        assert "holds no key" in e.value.reason and e.value.details["obj_id"] == a.obj_id
        assert rti.get_jobs_by_user(grantee) == []
    for node in (net.a, net.b):
        with DORProxy(node.address, grantee) as dor:
            assert dor.search(owner_iid=grantee.iid) == []  # no output anywhere
        assert files_holding(node.node.config.datastore, str(secret).encode()) == []

    with DORProxy(net.b.address) as dor:
        dor.grant_access(a.obj_id, net.user, grantee.identity, grantee.identity.wrap_key(key))
    with RTIProxy(net.a.address, grantee) as rti:
        job = rti.submit_job(gpp_on_b, inputs, outputs, grantee)
        status = rti.wait_for_job(job.id, grantee, timeout=60)
    assert status.state == "successful", status.errors
    assert _content(net.b, status.output["c"].obj_id, grantee, tmp_path) == {"v": secret + 1}


def test_submit_job_delegates_only_what_each_input_needs(net: Net, gpp_on_b: str) -> None:
    """`RTIProxy.submit_job` finds where each input is: restricted on another node, it delegates reading its
    metadata and content to the executing node, from that node only; on the executing node or unrestricted, it
    delegates nothing."""
    net.deploy(net.a, gpp_on_b)
    on_b = net.add_json(net.b, {"v": 1}, access_restricted=True)
    on_a = net.add_json(net.a, {"v": 2}, access_restricted=True)
    open_on_b = net.add_json(net.b, {"v": 3})
    outputs = [Task.Output(name="c", owner_iid=net.user.iid)]
    with RTIProxy(net.a.address, net.user) as rti:
        job = rti.submit_job(
            gpp_on_b,
            [Task.InputReference(name="a", obj_id=on_b.obj_id), Task.InputReference(name="b", obj_id=on_a.obj_id)],
            outputs,
            net.user,
        )
        assert rti.wait_for_job(job.id, net.user, timeout=60).state == "successful"
        second = rti.submit_job(
            gpp_on_b,
            [Task.InputReference(name="a", obj_id=open_on_b.obj_id), Task.InputValue(name="b", value={"v": 4})],
            outputs,
            net.user,
        )
        assert rti.wait_for_job(second.id, net.user, timeout=60).state == "successful"
    signatures = {i.name: getattr(i, "user_signature", None) for i in job.task.input}
    assert signatures["a"] is not None
    delegation = Delegation.from_header(signatures["a"])
    assert delegation.issuer_iid == net.user.iid and delegation.delegate_iid == net.a.node.iid
    assert delegation.servers == (net.b.node.iid,)
    assert set(delegation.scopes) == {"metadata", "content"} and delegation.obj_id == on_b.obj_id
    assert signatures["b"] is None  # on the executing node: read there as the user
    assert [getattr(i, "user_signature", None) for i in second.task.input] == [None, None]  # unrestricted


def test_restricted_input_elsewhere_needs_a_valid_delegation(net: Net, gpp_on_b: str, keystores: Any) -> None:
    net.deploy(net.a, gpp_on_b)
    a = net.add_json(net.b, {"v": 1}, access_restricted=True)
    other = keystores("other")
    b = [net.b.node.iid]
    input_scopes: list[Any] = ["metadata", "content"]
    cases: dict[str, str | Delegation] = {
        "not a delegation": "bm90IGpzb24=",
        "for another node": Delegation.create(net.user, net.c.node.iid, a.obj_id, servers=b, scopes=input_scopes),
        "not issued by the job's user": Delegation.create(
            other, net.a.node.iid, a.obj_id, servers=b, scopes=input_scopes
        ),
        "does not allow reading the object's metadata and content": Delegation.create(
            net.user, net.a.node.iid, a.obj_id, servers=b, scopes=["provenance"]
        ),
        "on a node the delegation names as a server": Delegation.create(
            net.user, net.a.node.iid, a.obj_id, servers=[net.c.node.iid], scopes=input_scopes
        ),
    }
    outputs = [Task.Output(name="c", owner_iid=net.user.iid)]
    with RTIProxy(net.a.address, net.user) as rti:
        for expected, signature in cases.items():
            inputs: list[Task.InputReference | Task.InputValue] = [
                Task.InputReference(
                    name="a",
                    obj_id=a.obj_id,
                    user_signature=signature if isinstance(signature, str) else signature.to_header(),
                ),
                Task.InputValue(name="b", value={"v": 1}),
            ]
            with pytest.raises(InvalidInputError) as e:
                rti.submit_job(gpp_on_b, inputs, outputs, net.user)
            assert expected in e.value.reason


def test_unknown_target_node_is_refused(net: Net, gpp_on_b: str) -> None:
    net.deploy(net.a, gpp_on_b)
    inputs = [Task.InputValue(name="a", value={"v": 1}), Task.InputValue(name="b", value={"v": 1})]
    with RTIProxy(net.a.address, net.user) as rti:
        for target, reason in ((net.c.node.iid, "has no DOR"), ("y" * 64, "not known")):
            outputs = [Task.Output(name="c", owner_iid=net.user.iid, target_node_iid=target)]
            with pytest.raises(InvalidInputError) as e:
                rti.submit_job(gpp_on_b, inputs, outputs, net.user)
            assert reason in e.value.reason
