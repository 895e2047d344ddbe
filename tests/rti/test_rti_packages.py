"""Resource packages (issue 18, item 1): the node's packages (from a file or scaled to the machine), which package a
job gets, refusals at submission with the reason, and a job over its package's memory failing with that reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from rti_support import RTIEnv, adapter_repo

from saas.config import NodeConfig
from saas.core.errors import AuthorisationError, ConfigError, InvalidInputError, RemoteError
from saas.rti.packages import Package, default_packages, evaluate, fill, grant, load_packages
from saas.rti.proxy import _task
from saas.rti.schemas import Task

PACKAGES = {
    "tiny": {"cores": 1, "memory": 128, "walltime": 60},
    "small": {"cores": 1, "memory": 512, "walltime": 3600},
    "large": {"cores": 2, "memory": 4096, "walltime": 86400, "gpus": 1, "disk": 10240},
}


def packages() -> dict[str, Package]:
    return {name: Package(name=name, **spec) for name, spec in PACKAGES.items()}


def test_default_packages_are_scaled_to_the_node(tmp_path: Path) -> None:
    config = NodeConfig(keystore=tmp_path / "k.json", password="x", job_memory=8192, job_cores=8, job_walltime=3600)
    made = default_packages(config)
    assert list(made) == ["tiny", "small", "medium", "large"]
    assert [(p.cores, p.memory) for p in made.values()] == [(1, 1024), (2, 2048), (4, 4096), (8, 8192)]
    assert {p.walltime for p in made.values()} == {3600}


def test_packages_file(tmp_path: Path) -> None:
    path = tmp_path / "packages.json"
    path.write_text(json.dumps(PACKAGES))
    assert load_packages(path) == packages()
    path.write_text(json.dumps([{"name": "x", "cores": 1, "memory": 64, "walltime": 10}]))
    assert list(load_packages(path)) == ["x"]
    path.write_text(json.dumps({"x": {"cores": 0, "memory": 64, "walltime": 10}}))
    with pytest.raises(ConfigError, match="cores"):
        load_packages(path)
    path.write_text("[]")
    with pytest.raises(ConfigError, match="non-empty"):
        load_packages(path)


def test_which_package_a_job_gets() -> None:
    have = packages()
    assert evaluate(have, None, {}, None)[0] == have["large"]  # nothing asked: the largest allowed
    assert evaluate(have, {"tiny", "small"}, {}, None)[0] == have["small"]
    assert evaluate(have, None, {"memory": "200M"}, None)[0] == have["small"]  # the smallest that covers
    assert evaluate(have, None, {"memory": "1G", "cores": 2}, None)[0] == have["large"]
    assert evaluate(have, None, {"memory": "100M"}, "large")[0] == have["large"]  # named
    package, refusals = evaluate(have, None, {"memory": "8G"}, None)
    assert package is None and refusals[0].kind == "invalid"
    assert "more than any package" in refusals[0].reason and "8192 MiB memory (it gives 4096)" in refusals[0].reason
    package, refusals = evaluate(have, {"tiny"}, {"memory": "1G"}, None)
    assert package is None and refusals[0].kind == "level"
    package, refusals = evaluate(have, {"tiny"}, {"walltime": 7200}, "small")  # every reason
    assert [r.kind for r in refusals] == ["level", "invalid"]
    assert "7200 s walltime (it gives 3600)" in refusals[1].reason
    assert evaluate(have, set(), {}, None)[1][0].reason == "Your account level on this node allows no jobs"
    assert "no package 'huge'" in evaluate(have, None, {}, "huge")[1][0].reason
    with pytest.raises(AuthorisationError):
        grant(have, {"tiny"}, {}, "large")
    with pytest.raises(InvalidInputError, match="Invalid resources"):
        grant(have, None, {"memory": "lots"}, None)
    assert fill({"memory": "100M"}, have["tiny"]) == {"memory": "100M", "cores": 1, "walltime": 60}


@pytest.fixture
def packaged(rti_env_factory: Callable[..., RTIEnv], tmp_path: Path) -> tuple[RTIEnv, str]:
    path = tmp_path / "packages.json"
    path.write_text(json.dumps(PACKAGES))
    env = rti_env_factory(packages_file=path, job_pids=64)
    repo, commit = adapter_repo(tmp_path / "repos" / "hostile", "hostile")
    return env, env.deploy("hostile", repo=repo, commit=commit)


def submit(env: RTIEnv, proc_id: str, mode: str, **extra: Any) -> str:
    out = Task.Output(name="report", owner_iid=env.alice.identity.id)
    task = _task(proc_id, [Task.InputValue(name="targets", value={"mode": mode})], [out], env.alice, None, None)
    with env.rti(env.alice) as rti:
        return rti.submit_task({**task, **extra}, env.alice).id


def test_packages_are_listed_and_enforced(packaged: tuple[RTIEnv, str]) -> None:
    env, proc_id = packaged
    listed = httpx.get(f"{env.node.url}/api/v1/rti/packages").json()
    assert [p["name"] for p in listed] == ["tiny", "small", "large"] and listed[2]["gpus"] == 1
    # a job over its package's memory fails with that reason
    job = submit(env, proc_id, "memory", package="tiny")
    status = env.wait(job)
    assert status.state == "failed"
    assert "memory limit of 128 MiB" in " ".join(status.errors), status.errors
    assert status.job.package.name == "tiny"
    # refused at submission, with the reason
    with pytest.raises(InvalidInputError) as caught:
        submit(env, proc_id, "sleep", resources={"memory": "16G"})
    assert isinstance(caught.value, RemoteError) and caught.value.status == 400
    assert "more than any package" in caught.value.reason and "16384 MiB memory" in caught.value.reason
    with pytest.raises(InvalidInputError, match="too small"):
        submit(env, proc_id, "sleep", package="tiny", resources={"walltime": 120})
    with pytest.raises(InvalidInputError, match="no package 'huge'"):
        submit(env, proc_id, "sleep", package="huge")


def test_gpus_beyond_the_node_are_refused() -> None:
    have = packages()  # large has 1 GPU
    package, refusals = evaluate(have, None, {}, "large", gpus=0)
    assert package is None and refusals[0].reason == "Package 'large' has 1 GPUs: this node has no GPUs"
    assert evaluate(have, None, {}, None, gpus=0)[0] == have["small"]  # the largest the node can give
    assert evaluate(have, None, {}, "large", gpus=1)[0] == have["large"]
    package, refusals = evaluate(have, None, {"gpus": 2}, None, gpus=1)
    assert package is None and refusals[0].reason == "The job asks 2 GPUs: this node has 1 GPUs"
    assert evaluate(have, None, {"gpus": 1}, None, gpus=1)[0] == have["large"]  # the package that has one
    assert evaluate(have, None, {"gpus": 4}, None, sized=False, gpus=0) == (None, [])  # a remote host's business
    assert fill({}, have["large"])["gpus"] == 1 and "gpus" not in fill({}, have["small"])


def test_disk_and_gpus_at_submission_and_in_offers(rti_env_factory: Callable[..., RTIEnv], tmp_path: Path) -> None:
    path = tmp_path / "packages.json"
    path.write_text(json.dumps({
        "tiny": {"cores": 1, "memory": 256, "walltime": 60, "disk": 2},
        "gpu": {"cores": 1, "memory": 256, "walltime": 60, "gpus": 1},
    }))  # fmt: skip
    env = rti_env_factory(packages_file=path, job_pids=64)
    repo, commit = adapter_repo(tmp_path / "repos" / "hostile", "hostile")
    proc_id = env.deploy("hostile", repo=repo, commit=commit)
    # a job whose folder holds more than its package's disk when the adapter ends fails with the reason
    over = env.wait(submit(env, proc_id, "disk", package="tiny", input=disk_input(3)))
    assert over.state == "failed"
    assert "more than the disk of package 'tiny' (2 MiB)" in " ".join(over.errors), over.errors
    assert env.wait(submit(env, proc_id, "disk", package="tiny", input=disk_input(0.5))).state == "successful"
    # the same for a job of an agent (its folder is checked when the agent has handed it back)
    agent_repo, agent_commit = adapter_repo(tmp_path / "repos" / "hostile-agent", "hostile", "hostile-agent")
    agent_id = env.deploy("hostile-agent", repo=agent_repo, commit=agent_commit)
    over = env.wait(submit(env, agent_id, "disk", package="tiny", input=disk_input(3)))
    assert over.state == "failed"
    assert "more than the disk of package 'tiny' (2 MiB)" in " ".join(over.errors), over.errors
    assert env.wait(submit(env, agent_id, "disk", package="tiny", input=disk_input(0.5))).state == "successful"
    # GPUs on a node with none (--job-gpus 0): refused at submission and in the offer, with the reason
    with pytest.raises(InvalidInputError, match="Package 'gpu' has 1 GPUs: this node has no GPUs"):
        submit(env, proc_id, "sleep", package="gpu")
    with pytest.raises(InvalidInputError, match="The job asks 1 GPUs: this node has no GPUs"):
        submit(env, proc_id, "sleep", resources={"gpus": 1})
    with env.rti(env.alice) as rti:
        offer = rti.get_offer({"proc_id": proc_id, "package": "gpu"}, env.alice)
    assert not offer.can and offer.reasons == ["Package 'gpu' has 1 GPUs: this node has no GPUs"]


def disk_input(mib: float) -> list[dict[str, Any]]:
    return [{"name": "targets", "type": "value", "value": {"mode": "disk", "mib": mib}}]
