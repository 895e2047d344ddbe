"""Records from peers are verified against their address (issue 14, item 1), against a deliberately malicious node.

Node A asks; node B is honest; node M is a real node whose DOR lookups answer forged GPPs, forged object records
and forged provenance, and whose REST service serves forged content for an object it holds
(tests/malicious_support.py). A only ever uses records that reproduce the id asked for, and content that matches
the verified c_hash; M's lies are logged, skipped and counted (`lies` in the network listing)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from saas.core.keystore import Keystore
from saas.dor import remote
from saas.dor.proxy import ContentMismatchError, DORProxy
from saas.dor.schemas import CDataObject, GPPDataObject
from saas.dor.verify import gpp_id, record_problem
from saas.nodedb.proxy import NodeDBProxy
from tests.claims_support import job_output
from tests.conftest import RunningNode
from tests.malicious_support import Attacker, copy_to, corrupt, make_liar
from tests.p2p.conftest import start_network, stop_all
from tests.rti.rti_support import adapter_repo

pytestmark = pytest.mark.timeout(120)


@dataclass
class Net:
    a: RunningNode  # asks
    b: RunningNode  # honest
    m: RunningNode  # the liar
    attacker: Attacker
    user: Keystore
    files: Path
    count: int = 0

    def add(self, node: RunningNode, value: Any, **kwargs: Any) -> tuple[CDataObject, Path]:
        self.count += 1
        path = self.files / f"f{self.count}.json"
        path.write_text(json.dumps(value))
        signer = self.user
        if kwargs.get("recipe") is not None:  # a job output: stored by the node's RTI (tests/claims_support.py)
            kwargs.update(job_output(node.keystore, self.user, kwargs.pop("recipe"), path.read_bytes()))
            signer = node.keystore
        with DORProxy(node.address, signer) as dor:
            obj = dor.add_data_object(path, self.user.identity, False, False, "JSONObject", "json", **kwargs)
        return obj, path

    def lies(self, node: RunningNode) -> int:
        return self.a.node.nodedb.lies(node.node.iid)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, keystores: Callable[[str], Keystore]) -> Iterator[Net]:
    root = tmp_path_factory.mktemp("peer-records")
    user = keystores("dave")
    nodes = start_network(root, keystores, ("alice", "mallory", "bob"), [user])
    try:
        a, m, b = nodes
        files = root / "files"
        files.mkdir()
        yield Net(a, b, m, make_liar(m, files), user, files)
    finally:
        stop_all(nodes)


def test_honest_records_verify(net: Net, tmp_path: Path) -> None:
    obj, _ = net.add(net.b, {"v": 1})
    assert record_problem(obj) is None
    repo, commit = adapter_repo(tmp_path / "repo", "abc")
    with DORProxy(net.b.address, net.user) as dor:
        gpp = dor.add_gpp_data_object(str(repo), commit, "abc", "default", net.user.identity)
    assert isinstance(gpp, GPPDataObject) and gpp_id(gpp.gpp) == gpp.obj_id and record_problem(gpp) is None
    forged = gpp.model_copy(update={"gpp": gpp.gpp.model_copy(update={"commit_id": "f" * 40})})
    assert "hashes to" in (record_problem(forged) or "")
    assert "hashes to" in (record_problem(obj.model_copy(update={"c_hash": "0" * 64})) or "")


def test_forged_object_records_are_skipped_logged_and_counted(net: Net, caplog: pytest.LogCaptureFixture) -> None:
    obj, _ = net.add(net.b, {"v": 2})
    before = net.lies(net.m)
    with caplog.at_level(logging.INFO, logger="saas.dor.remote"):
        found = net.a.call(remote.lookup(net.a.node, [obj.obj_id]))
    assert any(obj.obj_id in str(a["ids"]) for a in net.attacker.asked)  # the liar was asked and answered
    held = found[obj.obj_id]
    assert isinstance(held, CDataObject) and held.custodian is not None
    assert held.custodian.identity.id == net.b.node.iid and held.c_hash == obj.c_hash
    assert net.lies(net.m) == before + 3  # a forged GPP, a forged object record, a record not asked for
    assert net.lies(net.b) == 0
    lines = [r.getMessage() for r in caplog.records if "lied" in r.getMessage()]
    assert len(lines) == 1 and net.m.node.iid[:8] in lines[0] and "\n" not in lines[0]  # one line per answer
    lied = net.a.call(net.a.node.audit.query(None, event="peer.lied"))  # and in the audit log, signed
    assert lied[-1].details["peer"] == net.m.node.iid and lied[-1].details["records"] == 3

    unknown = "0" * 64  # only the liar "holds" it: nothing verifies, so nothing is found
    assert net.a.call(remote.lookup(net.a.node, [unknown])) == {}

    with NodeDBProxy(net.a.address) as db:  # the count is visible in the network listing
        listing = {n.identity.id: n.lies for n in db.get_network()}
    assert listing[net.m.node.iid] == net.lies(net.m) and listing[net.b.node.iid] == 0


def test_a_forged_gpp_is_never_taken(net: Net, tmp_path: Path) -> None:
    repo, commit = adapter_repo(tmp_path / "repo", "abc")
    with DORProxy(net.b.address, net.user) as dor:
        honest = dor.add_gpp_data_object(str(repo), commit, "abc", "default", net.user.identity)
    found = net.a.call(remote.lookup(net.a.node, [honest.obj_id]))[honest.obj_id]
    assert isinstance(found, GPPDataObject) and found.gpp.source == str(repo)
    # asked of the liar alone (gpp_custodian), the proc_id has no GPP that verifies
    assert net.a.call(remote.lookup(net.a.node, [honest.obj_id], only=net.m.node.iid)) == {}
    # the liar's own GPP, asked by its own id, verifies: a liar is not refused what it really holds
    own = net.attacker.gpp["obj_id"]
    assert net.a.call(remote.lookup(net.a.node, [own], only=net.m.node.iid))[own].custodian.identity.id == (
        net.m.node.iid
    )


def test_forged_provenance_records_are_skipped(net: Net) -> None:
    source, _ = net.add(net.b, {"input": "on bob"})
    absent = "a" * 64
    recipe = {
        "processor": net.attacker.gpp["gpp"],  # any real GPP
        "consumes": {
            "a": {"c_hash": source.c_hash, "data_type": "JSONObject", "data_format": "json"},
            "b": {"c_hash": absent, "data_type": "JSONObject", "data_format": "json"},
        },
        "product": {"data_type": "JSONObject", "data_format": "json"},
        "name": "c",
        "job_id": "job-1",
    }
    derived, _ = net.add(net.a, {"derived": True}, recipe=recipe)
    before = net.lies(net.m)
    with DORProxy(net.a.address) as dor:
        provenance = dor.get_provenance(derived.obj_id)
    assert provenance.data_nodes[source.c_hash]["custodian"] == net.b.node.iid
    assert provenance.data_nodes[source.c_hash]["obj_id"] == source.obj_id
    assert provenance.missing == [absent]  # the liar's invented ancestor is not taken
    assert len(provenance.steps) == 1 and len(provenance.proc_nodes) == 1  # no invented step
    assert net.lies(net.m) > before


def test_forged_content_is_refused_and_counted(net: Net, tmp_path: Path) -> None:
    obj, path = net.add(net.b, {"v": 3})
    copy_to(net.m, net.user, path, obj)  # the liar holds the same object (its record verifies) ...
    corrupt(net.m, obj.c_hash, b'{"v": 666}')  # ... and serves other bytes for it
    custodian = net.a.node.nodedb.get_node(net.m.node.iid)
    assert custodian is not None and net.a.node.dor is not None
    before = net.lies(net.m)
    with pytest.raises(ContentMismatchError):
        net.a.call(net.a.node.dor.fetch_remote(obj.obj_id, custodian, tmp_path / "out", expected_c_hash=obj.c_hash))
    assert not list(tmp_path.iterdir())
    assert net.lies(net.m) == before + 1
    # both hold a record that verifies; the node caught lying comes last
    found = net.a.call(remote.lookup(net.a.node, [obj.obj_id]))[obj.obj_id]
    assert found.custodian is not None and found.custodian.identity.id == net.b.node.iid
    fetched = net.a.call(
        net.a.node.dor.fetch_remote(obj.obj_id, found.custodian, tmp_path / "out", expected_c_hash=found.c_hash)
    )
    assert json.loads(fetched.read_text()) == {"v": 3}
