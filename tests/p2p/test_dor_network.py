"""The DOR across the network (DESIGN §6, §7): metadata lookups on other nodes over `/saas/dor/1.0.0`, provenance
that follows recipes into other DORs, and content fetched from another node over HTTP — signed by the fetching
node, with the user's delegation for restricted objects, checked against the c_hash."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from saas.core.delegation import Delegation
from saas.core.errors import AuthenticationError, AuthorisationError, DORError, NotFoundError, RemoteError
from saas.core.keystore import Keystore
from saas.dor import remote
from saas.dor.proxy import DORProxy, search_network
from tests.claims_support import job_output
from tests.conftest import RunningNode
from tests.p2p.conftest import start_network, stop_all

pytestmark = pytest.mark.timeout(120)

PROCESSOR: dict[str, Any] = {
    "source": "https://github.com/example/adapter",
    "commit_id": "c" * 40,
    "proc_path": "proc",
    "proc_config": "default",
    "proc_descriptor": {
        "name": "test-proc",
        "input": [{"name": "a", "data_type": "JSONObject", "data_format": "json"}],
        "output": [{"name": "c", "data_type": "JSONObject", "data_format": "json"}],
        "configurations": ["default"],
    },
}


class Network:
    def __init__(self, nodes: list[RunningNode], user: Keystore, other: Keystore, files: Path):
        self.a, self.b, self.c = nodes
        self.user = user
        self.other = other
        self.files = files
        self._count = 0

    def add(
        self, node: RunningNode, content: bytes, restricted: bool = False, data_type: str = "JSONObject", **kwargs: Any
    ) -> Any:
        self._count += 1
        path = self.files / f"f{self._count}"
        path.write_bytes(content)
        signer = self.user
        if kwargs.get("recipe") is not None:  # a job output: stored by the node's RTI (tests/claims_support.py)
            recipe = kwargs.pop("recipe")
            kwargs.update(job_output(node.keystore, self.user, recipe, content, restricted_access=restricted))
            signer = node.keystore
        with DORProxy(node.address, signer) as dor:
            return dor.add_data_object(path, self.user.identity, restricted, False, data_type, "json", **kwargs)

    def fetch(self, obj: Any, destination: Path, delegation: Delegation | None = None, **kwargs: Any) -> Path:
        custodian = self.a.node.nodedb.get_node(self.b.node.iid)
        assert custodian is not None and self.a.node.dor is not None
        kwargs.setdefault("expected_c_hash", obj.c_hash)
        return self.a.call(self.a.node.dor.fetch_remote(obj.obj_id, custodian, destination, delegation, **kwargs))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory, keystores: Callable[[str], Keystore]) -> Iterator[Network]:
    """Three nodes (alice is the boot node) and two users published on every node."""
    root = tmp_path_factory.mktemp("dor-network")
    user, other = keystores("dave"), keystores("erin")
    nodes = start_network(root, keystores, ("alice", "bob", "carol"), [user, other])
    try:
        files = root / "files"
        files.mkdir()
        yield Network(nodes, user, other, files)
    finally:
        stop_all(nodes)


def test_lookup_across_nodes(net: Network) -> None:
    public = net.add(net.b, b'{"v": 1}')
    hidden = net.add(net.b, b'{"v": 2}', restricted=True)
    on_c = net.add(net.c, b'{"v": 3}')
    unknown = "0" * 64
    ids = [public.obj_id, hidden.obj_id, on_c.obj_id, unknown]
    found = net.a.call(remote.lookup(net.a.node, ids))
    assert set(found) == {public.obj_id, on_c.obj_id}  # unknown and restricted simply absent
    assert found[public.obj_id].custodian.identity.id == net.b.node.iid
    assert found[on_c.obj_id].custodian.identity.id == net.c.node.iid

    servers = [net.b.node.iid, net.c.node.iid]
    delegation = Delegation.create(net.user, net.a.node.iid, servers=servers, scopes=["metadata"])
    found = net.a.call(remote.lookup(net.a.node, ids, delegation))
    assert set(found) == {public.obj_id, hidden.obj_id, on_c.obj_id}

    for wrong in (
        Delegation.create(net.user, net.c.node.iid, servers=servers, scopes=["metadata"]),  # another delegate
        Delegation.create(net.other, net.a.node.iid, servers=servers, scopes=["metadata"]),  # user without access
        Delegation.create(net.user, net.a.node.iid, public.obj_id, servers=servers, scopes=["metadata"]),  # object
        Delegation.create(net.user, net.a.node.iid, servers=servers, scopes=["metadata"], lifetime_s=-1),  # expired
        Delegation.create(net.user, net.a.node.iid, servers=[net.c.node.iid], scopes=["metadata"]),  # served by c
        Delegation.create(net.user, net.a.node.iid, servers=servers, scopes=["provenance"]),  # not for lookups
    ):
        assert hidden.obj_id not in net.a.call(remote.lookup(net.a.node, ids, wrong))


def test_provenance_spans_two_nodes(net: Network) -> None:
    source = json.dumps({"input": "on bob"}).encode()
    on_b = net.add(net.b, source)
    absent = hashlib.sha256(b"nowhere").hexdigest()
    recipe = {
        "processor": PROCESSOR,
        "consumes": {
            "a": {"c_hash": on_b.c_hash, "data_type": "JSONObject", "data_format": "json"},
            "b": {"c_hash": absent, "data_type": "JSONObject", "data_format": "json"},
        },
        "product": {"data_type": "JSONObject", "data_format": "json"},
        "name": "c",
        "job_id": "job-1",
    }
    derived = net.add(net.a, b'{"derived": true}', recipe=recipe)
    with DORProxy(net.a.address) as dor:
        provenance = dor.get_provenance(derived.obj_id)
    assert set(provenance.data_nodes) == {derived.c_hash, on_b.c_hash}
    assert provenance.data_nodes[on_b.c_hash]["obj_id"] == on_b.obj_id
    assert provenance.data_nodes[on_b.c_hash]["custodian"] == net.b.node.iid
    assert provenance.missing == [absent]
    assert len(provenance.steps) == 1
    assert provenance.steps[0]["signer_iid"] == net.a.node.iid and provenance.steps[0]["verified"] is True


def test_provenance_of_restricted_remote_ancestor_needs_a_delegation(net: Network) -> None:
    hidden = net.add(net.b, b'{"hidden": "input"}', restricted=True)
    recipe = {
        "processor": PROCESSOR,
        "consumes": {"a": {"c_hash": hidden.c_hash, "data_type": "JSONObject", "data_format": "json"}},
        "product": {"data_type": "JSONObject", "data_format": "json"},
        "name": "c",
    }
    derived = net.add(net.a, b'{"derived": "from hidden"}', recipe=recipe)
    with DORProxy(net.a.address, net.user) as dor:
        assert dor.get_provenance(derived.obj_id).missing == [hidden.c_hash]
        delegation = Delegation.create(net.user, net.a.node.iid, servers=[net.b.node.iid], scopes=["provenance"])
        assert dor.get_provenance(derived.obj_id, delegation).missing == []
        a, b, c = net.a.node.iid, net.b.node.iid, net.c.node.iid
        served_by_c = Delegation.create(net.user, a, servers=[c], scopes=["provenance"])
        assert dor.get_provenance(derived.obj_id, served_by_c).missing == [hidden.c_hash]  # b does not use it
        for refused in (
            Delegation.create(net.user, a, hidden.obj_id, servers=[b], scopes=["content"]),  # not for provenance
            Delegation.create(net.user, b, servers=[b], scopes=["provenance"]),  # for another node to present
        ):
            with pytest.raises(AuthorisationError):
                dor.get_provenance(derived.obj_id, refused)
    with DORProxy(net.a.address, net.other) as dor, pytest.raises(AuthorisationError):
        dor.request(  # someone else's delegation is refused
            "GET", f"/dor/{derived.obj_id}/provenance", signed=True, headers={"saas-delegation": delegation.to_header()}
        )


def test_restricted_object_is_fetched_only_with_a_valid_delegation(net: Network, tmp_path: Path) -> None:
    content = b'{"secret": 42}'
    hidden = net.add(net.b, content, restricted=True)
    public = net.add(net.b, b'{"open": 1}')
    target = tmp_path / "out"

    with pytest.raises(NotFoundError):  # the node alone may not read it
        net.fetch(hidden, target)

    def for_a(obj_id: str, user: Keystore = net.user, **kwargs: Any) -> Delegation:  # content from b, read by a
        return Delegation.create(user, net.a.node.iid, obj_id, servers=[net.b.node.iid], scopes=["content"], **kwargs)

    valid = for_a(hidden.obj_id)
    assert net.fetch(hidden, target, valid).read_bytes() == content

    expired = for_a(hidden.obj_id, lifetime_s=-1)
    too_long = for_a(hidden.obj_id, lifetime_s=2 * 3600)
    wrong_delegate = Delegation.create(
        net.user, net.c.node.iid, hidden.obj_id, servers=[net.b.node.iid], scopes=["content"]
    )
    wrong_object = for_a(public.obj_id)
    bad_signature = valid.model_copy(update={"expires": valid.expires + 1000})
    no_access = for_a(hidden.obj_id, user=net.other)
    for delegation, error in (
        (expired, AuthenticationError),
        (too_long, AuthenticationError),
        (bad_signature, AuthenticationError),
        (wrong_delegate, AuthorisationError),
        (wrong_object, AuthorisationError),
        (no_access, NotFoundError),
    ):
        with pytest.raises(error):
            net.fetch(hidden, tmp_path / "refused", delegation)
    assert not (tmp_path / "refused").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_delegation_is_refused_outside_its_scope_delegate_and_servers(net: Network, tmp_path: Path) -> None:
    """Issue 14 item 3, as an attacker: node a holds delegations of the user and presents them to node b's REST
    service (signed as a), or node c presents a's; each must be refused with 403 and no content."""
    hidden = net.add(net.b, b'{"secret": "scoped"}', restricted=True)
    a, b, c = net.a.node.iid, net.b.node.iid, net.c.node.iid

    def present(delegation: Delegation, by: RunningNode) -> Path:
        with DORProxy(net.b.address, by.keystore, node_iid=b) as dor:
            return dor.get_content(hidden.obj_id, by.keystore, tmp_path / "stolen", delegation=delegation)

    attacks = {
        "does not allow reading content": (Delegation.create(net.user, a, servers=[b], scopes=["provenance"]), net.a),
        "does not allow reading content ": (
            Delegation.create(net.user, a, hidden.obj_id, servers=[b], scopes=["provenance", "metadata"]),
            net.a,
        ),
        "for another node": (Delegation.create(net.user, a, hidden.obj_id, servers=[b], scopes=["content"]), net.c),
        "served by other nodes": (
            Delegation.create(net.user, a, hidden.obj_id, servers=[c], scopes=["content"]),
            net.a,
        ),
    }
    for reason, (delegation, by) in attacks.items():
        with pytest.raises(AuthorisationError) as e:
            present(delegation, by)
        assert reason.strip() in e.value.reason and isinstance(e.value, RemoteError) and e.value.status == 403
    assert not (tmp_path / "stolen").exists()

    # The same delegation within its scope, from its delegate, at its server: allowed.
    allowed = Delegation.create(net.user, a, hidden.obj_id, servers=[b], scopes=["content"])
    assert present(allowed, net.a).read_bytes() == b'{"secret": "scoped"}'

    # Over P2P: a metadata delegation finds the object; a content-only one does not reveal its metadata.
    metadata = Delegation.create(net.user, a, hidden.obj_id, servers=[b], scopes=["metadata"])
    assert hidden.obj_id in net.a.call(remote.lookup(net.a.node, [hidden.obj_id], metadata))
    assert hidden.obj_id not in net.a.call(remote.lookup(net.a.node, [hidden.obj_id], allowed))


def test_a_delegation_goes_only_to_the_nodes_it_names() -> None:
    from saas.p2p.protocols import dor as dor_protocol

    message = dor_protocol.lookup(["0" * 64])
    message["delegation"] = {"servers": ["b" * 64], "scopes": ["metadata"]}
    assert dor_protocol.for_peer(message, "b" * 64) is message
    assert "delegation" not in dor_protocol.for_peer(message, "c" * 64)
    assert dor_protocol.for_peer(dor_protocol.lookup([]), "c" * 64) == dor_protocol.lookup([])


def test_cross_node_fetch_catches_corruption(net: Network, tmp_path: Path) -> None:
    content = b'{"intact": "content"}'
    obj = net.add(net.b, content)
    assert net.b.node.dor is not None
    stored = net.b.node.dor.store.path(obj.c_hash)
    stored.write_bytes(content.replace(b"intact", b"broken"))
    with pytest.raises(DORError, match="c_hash"):
        net.fetch(obj, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DORError):  # a c_hash the caller expects is checked too
        net.fetch(net.add(net.b, b'{"x": 1}'), tmp_path / "out", expected_c_hash="f" * 64)
    assert list(tmp_path.iterdir()) == []


def test_search_from_one_node_finds_objects_on_all_three(net: Network) -> None:
    objects = {n.node.iid: net.add(n, b'{"searched": true}', data_type="NetworkSearch") for n in (net.a, net.b, net.c)}
    hidden = net.add(net.c, b'{"searched": "hidden"}', restricted=True, data_type="NetworkSearch")
    found = search_network(net.a.address, data_type="NetworkSearch")
    held_by = set()
    for o in found:
        assert o.custodian is not None
        held_by.add((o.custodian.identity.id, o.obj_id))
    assert held_by == {(i, o.obj_id) for i, o in objects.items()}
    found = search_network(net.b.address, net.user, data_type="NetworkSearch")  # signed: the owner sees all
    assert {o.obj_id for o in found} == {o.obj_id for o in objects.values()} | {hidden.obj_id}


def test_cli_searches_the_whole_network(net: Network, tmp_path: Path) -> None:
    from tests.cli.test_cli_dor import table_rows

    obj = net.add(net.b, b'{"cli": 1}', data_type="CLINetworkSearch")
    address = "{}:{}".format(*net.a.address)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAAS_")}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "saas-cli"),
            "dor",
            "--address",
            address,
            "search",
            "--data-type",
            "CLINetworkSearch",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    headers, rows = table_rows(result.stdout)
    assert headers[:2] == ["OBJECT ID", "NODE"]
    assert [row[:2] for row in rows] == [[obj.obj_id, net.b.node.iid[:16] + "…"]]
