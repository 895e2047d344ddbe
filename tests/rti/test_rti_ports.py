"""The RTI's narrow dependencies and its processor registry, with real components: the `LocalDOR` and `Network`
protocols are satisfied by the real `DORService` and `NodeNetwork` (the same methods, the same parameters), the
DOR's reads for its own node (`records`, `envelope_for`), the registry's decisions and the resource limits."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from rti_support import RTIEnv

from saas.config import NodeConfig
from saas.core.errors import AuthorisationError, InvalidInputError, NotFoundError
from saas.dor.schemas import CDataObject
from saas.dor.service import DORService
from saas.rti import board
from saas.rti.cgroups import Limits
from saas.rti.limits import limits_for, parse_resources, resources
from saas.rti.ports import LocalDOR, Network, NodeKeys, NodeNetwork, local_dor
from saas.rti.processors import ProcessorRegistry, UnknownProcessorError
from saas.rti.schemas import DeployParameters, Resources
from saas.rti.status import UnknownJobError

MiB = 2**20


def _methods(protocol: type) -> list[str]:
    return [name for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")]


@pytest.mark.parametrize(("protocol", "implementation"), [(LocalDOR, DORService), (Network, NodeNetwork)])
def test_the_real_components_have_the_protocols_methods(protocol: type, implementation: type) -> None:
    """Same names, same parameters (in order, with the same defaults), same async-ness: a drift in either fails."""
    assert _methods(protocol)
    for name in _methods(protocol):
        wanted, real = getattr(protocol, name), getattr(implementation, name)
        assert inspect.iscoroutinefunction(wanted) == inspect.iscoroutinefunction(real), name
        wanted_params = [(p.name, p.kind, p.default) for p in inspect.signature(wanted).parameters.values()]
        real_params = [(p.name, p.kind, p.default) for p in inspect.signature(real).parameters.values()]
        assert real_params == wanted_params, name


def test_the_rti_gets_the_nodes_dor_and_network(env: RTIEnv) -> None:
    node = env.node.node
    rti = node.rti
    assert isinstance(node.dor, LocalDOR) and local_dor(node) is node.dor
    assert rti.dor is node.dor
    assert isinstance(rti.network, Network) and isinstance(rti.network, NodeNetwork)
    assert rti._processors is rti.processors.records  # one dict: the job pipeline sees every deployment


def test_records_and_envelopes_for_the_nodes_own_services(env: RTIEnv) -> None:
    """`records`: what the DOR holds of some obj_ids, as stored (no custodian), restricted ones too; unknown ones
    are left out. `envelope_for`: the envelope an identity holds, None without one."""
    node = env.node.node
    dor = node.dor
    open_id = env.add_json({"v": 1})
    restricted_id = env.add_json({"v": 2}, access_restricted=True)
    found = env.node.call(dor.records([open_id, restricted_id, "0" * 64]))
    assert sorted(found) == sorted([open_id, restricted_id])
    assert all(isinstance(m, CDataObject) and m.custodian is None for m in found.values())
    assert found[restricted_id].access_restricted and found[restricted_id].owner_iid == env.alice.identity.id
    assert env.node.call(dor.records([])) == {}

    bob = env.bob.identity.id
    assert env.node.call(dor.envelope_for(restricted_id, bob)) is None
    env.node.call(dor.grant_access(restricted_id, env.alice.identity, bob, "ZW52ZWxvcGU="))
    assert env.node.call(dor.envelope_for(restricted_id, bob)) == "ZW52ZWxvcGU="
    assert env.node.call(dor.envelope_for(open_id, bob)) is None
    assert env.node.call(dor.envelope_for("0" * 64, bob)) is None


def test_network_finds_gpps_and_inputs_through_the_node(env: RTIEnv) -> None:
    node = env.node.node
    network = node.rti.network
    proc_id = env.add_gpp("abc")
    gpp = env.node.call(network.find_gpp(proc_id))
    assert gpp.proc_descriptor.name
    with pytest.raises(NotFoundError):
        env.node.call(network.find_gpp("0" * 64, node.iid))
    from saas.rti.schemas import Task

    obj_id = env.add_json({"v": 3})
    location = env.node.call(network.find_input(Task.InputReference(name="a", obj_id=obj_id), env.alice.identity.id))
    assert location.custodian is None and location.meta.obj_id == obj_id


def test_registry_decisions(env: RTIEnv) -> None:
    """Unknown processors are 404 everywhere; strict deployment is the owner's; the sandbox is reported."""
    rti = env.node.node.rti
    registry: ProcessorRegistry = rti.processors
    alice = env.alice.identity
    assert registry.isolation in ("sandbox", "none") and rti.isolation == registry.isolation
    assert rti.sandbox is registry.sandbox is registry.require_sandbox
    with pytest.raises(UnknownProcessorError):
        registry.get("0" * 64)
    with pytest.raises(UnknownProcessorError):
        env.node.call(registry.locate_gpp("0" * 64))
    with pytest.raises(AuthorisationError):
        env.node.call(registry.deploy(alice, "0" * 64, DeployParameters()))
    with pytest.raises(UnknownProcessorError):
        env.node.call(registry.deploy(env.owner.identity, "0" * 64, DeployParameters()))
    with pytest.raises(UnknownProcessorError):
        env.node.call(registry.undeploy(env.owner.identity, "0" * 64))
    assert registry.is_owner(env.owner.identity) and not registry.is_owner(alice) and not registry.is_owner(None)
    assert registry.proc_root("p") == rti.root / "procs" / "p"
    with pytest.raises(UnknownJobError):
        env.node.call(rti.reader.job("0" * 22, alice))
    assert env.node.call(rti.get_jobs(alice)) == []


def test_registry_deploys_and_undeploys_with_its_board_rows(env: RTIEnv) -> None:
    rti = env.node.node.rti
    proc_id = env.deploy("abc")
    assert rti.processors.get(proc_id).state == "ready"
    rows = env.node.call(rti.db.run(board.processors))
    assert [(r["proc_id"], r["state"]) for r in rows] == [(proc_id, "ready")]
    env.node.call(rti.undeploy(env.owner.identity, proc_id))
    assert proc_id not in rti.processors.records
    assert env.node.call(rti.db.run(board.processors)) == []
    assert not rti.processors.proc_root(proc_id).exists()


@pytest.mark.parametrize(
    ("params", "spec_or_reason"),
    [
        ({}, {"name": "local", "ssh_credentials": None, "partition": None}),
        ({"backend": "ssh"}, "needs SSH credentials"),
        ({"backend": "slurm", "partition": "gpu"}, {"name": "slurm", "ssh_credentials": None, "partition": "gpu"}),
        ({"partition": "gpu"}, "only for the slurm backend"),
    ],
)
def test_backend_spec(params: dict[str, Any], spec_or_reason: dict[str, Any] | str) -> None:
    parsed = DeployParameters(**params)
    if isinstance(spec_or_reason, str):
        with pytest.raises(InvalidInputError, match=spec_or_reason):
            ProcessorRegistry.backend_spec(parsed)
    else:
        assert ProcessorRegistry.backend_spec(parsed) == spec_or_reason


@pytest.mark.parametrize(
    ("asked", "memory", "cores", "walltime"),
    [
        ({}, None, None, None),
        ({"memory": "512"}, 512 * MiB, None, None),
        ({"memory": "2G", "cores": 2}, 2 * 2**30, 2, None),
        ({"memory": "64K"}, 64 * 2**10, None, None),
        ({"walltime": "01:00"}, None, None, 60.0),
    ],
)
def test_parse_resources(asked: dict[str, Any], memory: int | None, cores: int | None, walltime: float | None) -> None:
    limits = parse_resources(asked)
    assert (limits.memory, limits.cores, limits.walltime) == (memory, cores, walltime)


def test_parse_resources_refuses_bad_values() -> None:
    with pytest.raises(InvalidInputError, match="Invalid resources"):
        parse_resources({"memory": "lots"})


def test_limits_are_within_the_nodes(tmp_path: Path) -> None:
    key, password = tmp_path / "k.json", SecretStr("x")
    config = NodeConfig(keystore=key, password=password, job_memory=1024, job_cores=2, job_walltime=100, job_pids=64)
    assert limits_for(config) == Limits(memory=1024 * MiB, pids=64, cores=2, walltime=100)
    asked = {"memory": "4G", "cores": 8, "walltime": 500}
    assert limits_for(config, asked) == Limits(memory=1024 * MiB, pids=64, cores=2, walltime=100)
    asked = {"memory": "256", "cores": 1, "walltime": 10}
    assert limits_for(config, asked) == Limits(memory=256 * MiB, pids=64, cores=1, walltime=10)
    assert limits_for(config, asked, walltime=False).walltime is None
    unbounded = NodeConfig(keystore=key, password=password)
    assert limits_for(unbounded, {"cores": 3}).cores == 3 and limits_for(unbounded).memory is not None


def test_resources_merge_descriptor_partition_and_task() -> None:
    extra = {"resources": {"cores": 1, "memory": "128"}}
    assert resources(extra, None, {"name": "local"}) == {"cores": 1, "memory": "128"}
    merged = resources(extra, Resources(cores=4), {"name": "slurm", "partition": "gpu"})
    assert merged == {"cores": 4, "memory": "128", "partition": "gpu"}
    assert resources(None, None, {}) == {} and resources({"resources": "odd"}, None, {}) == {}


def test_no_module_outside_the_dor_reads_its_sqlite() -> None:
    root = Path(__file__).resolve().parents[2]
    readers = set()
    for path in [*(root / "saas").rglob("*.py"), *(root / "cli").rglob("*.py")]:
        relative = path.relative_to(root).as_posix()
        if relative.startswith("saas/dor/"):
            continue
        text = path.read_text()
        if "saas.dor import catalog" in text or "saas.dor.catalog" in text or "dor.db." in text:
            readers.add(relative)
    assert readers == set()


@pytest.mark.parametrize("module", ["inputs", "outputs", "admission"])
def test_the_job_pipeline_takes_the_narrow_ports_not_the_node(module: str) -> None:
    """The inputs, outputs and admission of jobs depend on `LocalDOR`, `Network` and `NodeKeys` (and plain values),
    never on `Node`: they neither import it nor name it (in an annotation or elsewhere), and they use the ports."""
    import ast

    root = Path(__file__).resolve().parents[2]
    tree = ast.parse((root / "saas" / "rti" / f"{module}.py").read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert "saas.node" not in imported
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert "Node" not in names and "_node" not in names
    assert "Network" in names


def test_the_keystore_is_the_nodes_keys(env: RTIEnv) -> None:
    node = env.node.node
    assert isinstance(node.keystore, NodeKeys) and node.rti._keys is node.keystore
    network = node.rti.network
    assert network.identity(env.alice.identity.id) is not None and network.identity("0" * 64) is None
