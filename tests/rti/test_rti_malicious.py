"""Honest nodes deploy and compute only what the user asked for, with a deliberately malicious node in the network
(issue 14, items 1 and 2; tests/malicious_support.py).

Node A is a full node (the boot node), M a real full node whose DOR lookups answer forged GPPs (the attacker's
repository, whose install.sh leaves a marker file), forged object records and forged content, B an honest storage
node holding the GPPs and inputs, C an execution node without a DOR that runs the jobs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rti_support import adapter_repo

from saas.core.errors import InvalidInputError, NotFoundError
from saas.core.keystore import Keystore
from saas.dor import remote
from saas.dor.proxy import DORProxy
from saas.nodedb.proxy import NodeDBProxy
from saas.rti import placement, runner
from saas.rti.proxy import RTIProxy
from saas.rti.schemas import Task
from tests.conftest import RunningNode
from tests.malicious_support import Attacker, copy_to, corrupt, make_liar, markers
from tests.p2p.conftest import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@dataclass
class Net:
    a: RunningNode  # full node
    m: RunningNode  # the liar
    b: RunningNode  # honest storage node: GPPs, inputs, outputs
    c: RunningNode  # execution node without a DOR
    attacker: Attacker
    user: Keystore
    root: Path
    repo: Path
    commit: str
    count: int = 0

    def add(self, node: RunningNode, value: Any, **kwargs: Any) -> tuple[Any, Path]:
        self.count += 1
        path = self.root / "files" / f"f{self.count}.json"
        path.write_text(json.dumps(value))
        with DORProxy(node.address, self.user) as dor:
            obj = dor.add_data_object(path, self.user.identity, False, False, "JSONObject", "json", **kwargs)
        return obj, path

    def gpp(self, config: str = "default") -> str:
        with DORProxy(self.b.address, self.user) as dor:
            return dor.add_gpp_data_object(str(self.repo), self.commit, "abc", config, self.user.identity).obj_id

    def deploy(self, proc_id: str, custodian: str | None = None) -> Any:
        with RTIProxy(self.c.address, self.c.keystore) as rti:
            rti.deploy(proc_id, self.c.keystore, gpp_custodian=custodian)
            return rti.wait_deployed(proc_id, timeout=60)

    def submit(self, proc_id: str, inputs: list[Any], **out: Any) -> Any:
        outputs = [Task.Output(name="c", owner_iid=self.user.iid, **out)]
        with RTIProxy(self.c.address, self.user) as rti:
            return rti.submit_job(proc_id, inputs, outputs, self.user)

    def run(self, proc_id: str, inputs: list[Any], **out: Any) -> Any:
        job = self.submit(proc_id, inputs, **out)
        with RTIProxy(self.c.address, self.user) as rti:
            return rti.wait_for_job(job.id, self.user, timeout=60)

    def lies(self) -> int:
        return self.c.node.nodedb.lies(self.m.node.iid)


@pytest.fixture
def net(
    node_factory: Callable[..., RunningNode], keystores: Callable[[str], Keystore], tmp_path: Path
) -> Iterator[Net]:
    (tmp_path / "files").mkdir()
    a = node_factory("alpha")
    boot = "{}:{}".format(*a.node.config.p2p_address)
    m = node_factory("mallory", boot_node=boot)
    attacker = make_liar(m, tmp_path / "files")
    b = node_factory("beta", boot_node=boot, node_type="storage")
    c = node_factory("gamma", boot_node=boot, node_type="execution")
    user = keystores("user")
    with NodeDBProxy(b.address) as db:
        db.update_identity(user.identity)
    for n in (a, m, b, c):
        wait_until(
            lambda n=n: len(n.node.p2p.peers()) == 3 and n.node.nodedb.get_identity(user.iid) is not None,  # type: ignore[misc]  # mypy cannot type a lambda with a default argument
            20,
            "the network to form and the user to be known everywhere",
        )
    repo, commit = adapter_repo(tmp_path / "honest-repo", "abc")
    yield Net(a, m, b, c, attacker, user, tmp_path, repo, commit)


def test_execution_node_deploys_only_the_gpp_asked_for(net: Net) -> None:
    proc_id = net.gpp()
    status = net.deploy(proc_id)  # C has no DOR: it asks the network, and the liar answers a forged GPP
    assert status.state == "ready", status
    assert status.gpp.source == str(net.repo) and status.gpp.commit_id == net.commit
    assert any(proc_id in asked["ids"] for asked in net.attacker.asked)
    assert net.lies() >= 1
    assert markers(net.root) == []

    other = net.gpp("nscc")  # gpp_custodian names the only node the GPP is taken from
    with pytest.raises(NotFoundError, match="gpp_custodian"):
        net.deploy(other, custodian=net.m.node.iid)
    with pytest.raises(NotFoundError, match="this node's DOR"):  # C itself: it has no DOR, the network is not asked
        net.deploy(other, custodian=net.c.node.iid)
    assert net.deploy(other, custodian=net.b.node.iid).gpp.source == str(net.repo)
    assert markers(net.root) == []

    # the marker works: the attacker's own GPP, deployed on purpose, does run its install.sh
    own = net.attacker.gpp["obj_id"]
    assert net.deploy(own, custodian=net.m.node.iid).state == "ready"
    assert markers(net.root)


def test_forged_inputs_are_taken_from_the_honest_node_or_fail_with_the_reason(net: Net, tmp_path: Path) -> None:
    proc_id = net.gpp()
    assert net.deploy(proc_id).state == "ready"
    on_both, path = net.add(net.b, {"v": 40})
    copy_to(net.m, net.user, path, on_both)  # the liar holds the same object and serves other bytes for it
    corrupt(net.m, on_both.c_hash, b'{"v": 666}')
    status = net.run(
        proc_id,
        [Task.InputReference(name="a", obj_id=on_both.obj_id), Task.InputValue(name="b", value={"v": 2})],
        target_node_iid=net.b.node.iid,
    )
    assert status.state == "successful", status.errors
    with DORProxy(net.b.address, net.user) as dor:
        out = dor.get_content(status.output["c"].obj_id, net.user, tmp_path / "out.json")
    assert json.loads(out.read_text()) == {"v": 42}

    # fetched from the liar first (deterministically, as a job that found the liar's record would): its content
    # does not match the verified c_hash, so the input is looked up again without it and taken from node B
    item = Task.InputReference(name="a", obj_id=on_both.obj_id)
    meta = net.c.call(remote.lookup(net.c.node, [on_both.obj_id], only=net.m.node.iid))[on_both.obj_id]
    before = net.lies()
    wd = tmp_path / "wd"
    wd.mkdir()
    net.c.call(runner.fetch_input(net.c.node, item, placement.InputLocation(meta, meta.custodian), wd, net.user.iid))
    assert json.loads((wd / "a").read_text()) == {"v": 40}
    assert net.lies() == before + 1

    only_on_m, path = net.add(net.m, {"v": 7})  # the liar alone holds it, and serves other bytes
    corrupt(net.m, only_on_m.c_hash, b'{"v": 666}')
    status = net.run(
        proc_id,
        [Task.InputReference(name="a", obj_id=only_on_m.obj_id), Task.InputValue(name="b", value={"v": 2})],
        target_node_iid=net.b.node.iid,
    )
    assert status.state == "failed"
    assert any("does not match its c_hash" in e and "no other node holds it" in e for e in status.errors), status

    # an obj_id only the liar "holds" (forged records): nothing verifies, the submission is refused
    with pytest.raises(InvalidInputError, match="not found"):
        net.submit(
            proc_id,
            [Task.InputReference(name="a", obj_id="0" * 64), Task.InputValue(name="b", value={"v": 2})],
            target_node_iid=net.b.node.iid,
        )


def test_restricted_outputs_never_reach_the_malicious_dor(net: Net) -> None:
    proc_id = net.gpp()
    assert net.deploy(proc_id).state == "ready"
    inputs = [Task.InputValue(name="a", value={"v": 1}), Task.InputValue(name="b", value={"v": 2})]
    for flags in ({"restricted_access": True}, {"content_encrypted": True}):
        with pytest.raises(InvalidInputError, match="target_node_iid"):
            net.submit(proc_id, inputs, **flags)  # no DOR here, no target: refused, never the nearest DOR

    status = net.run(proc_id, inputs, restricted_access=True, target_node_iid=net.b.node.iid)
    assert status.state == "successful", status.errors
    restricted = status.output["c"]
    with DORProxy(net.b.address, net.user) as dor:
        assert dor.get_meta(restricted.obj_id) is not None
    with DORProxy(net.m.address, net.user) as dor:
        assert dor.search(owner_iid=net.user.iid) == []

    assert net.lies() >= 1  # C caught the liar (the GPP lookup): open outputs never go to it as the nearest DOR
    for _ in range(10):
        nearest = net.c.call(placement.nearest_dor(net.c.node))
        assert nearest is not None and nearest.identity.id in (net.a.node.iid, net.b.node.iid)
    for _ in range(3):
        status = net.run(proc_id, inputs)
        assert status.state == "successful", status.errors
        with DORProxy(net.m.address, net.user) as dor:
            assert dor.get_meta(status.output["c"].obj_id) is None
    with DORProxy(net.m.address, net.user) as dor:
        assert dor.search(owner_iid=net.user.iid) == []
