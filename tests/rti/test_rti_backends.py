"""Execution backends without daemons: resources and sbatch options, and what deploy refuses at once (400)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from rti_support import RTIEnv

from saas.core.errors import InvalidInputError
from saas.rti.backends.slurm import sbatch_options
from saas.rti.schemas import Resources


@pytest.mark.parametrize(
    ("walltime", "seconds"),
    [(None, None), (90, 90), ("05:00", 300), ("1:00:00", 3600), ("2-00:00:01", 172801), ("0:00", 1)],
)
def test_walltime(walltime: object, seconds: int | None) -> None:
    assert Resources(walltime=walltime).walltime_seconds() == seconds


@pytest.mark.parametrize(
    "bad",
    [{"walltime": "soon"}, {"walltime": 0}, {"cores": 0}, {"memory": "lots"}, {"partition": "a b"}, {"gpus": -1}],
)
def test_bad_resources(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Resources.model_validate(bad)


def test_sbatch_options() -> None:
    options = sbatch_options(Resources(cores=4, memory=2048, walltime=61, partition="gpu"))
    assert options == ["--cpus-per-task=4", "--mem=2048", "--partition=gpu", "--time=3"]
    assert sbatch_options(Resources()) == []
    assert sbatch_options(Resources(gpus=2)) == ["--gpus=2"]  # a package's GPUs on SLURM


def test_deploy_refuses_inconsistent_backend_parameters(env: RTIEnv) -> None:
    proc_id = env.add_gpp("abc")
    with env.rti(env.owner) as rti:
        for body, reason in [
            ({"backend": "ssh"}, "needs SSH credentials"),
            ({"partition": "debug"}, "only for the slurm backend"),
            ({"backend": "mainframe"}, "backend"),
        ]:
            with pytest.raises(InvalidInputError, match=reason):
                rti.request("POST", f"/rti/proc/{proc_id}", json_body=body, signer=env.owner)
        assert rti.get_deployed() == []
