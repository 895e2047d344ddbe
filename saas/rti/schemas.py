"""RTI records and request models. Names follow the original middleware (existing scripts and the seed's job
descriptor use them): `Task` with `Task.InputReference` / `Task.InputValue` / `Task.Output`, `Job`, `JobStatus`,
`Processor`."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from saas.core.bounded_json import json_bounds
from saas.dor.schemas import MAX_INPUT_VALUE_SIZE, CDataObject, GitProcessorPointer

__all__ = [
    "AgentInstance",
    "DeployParameters",
    "Job",
    "JobStatus",
    "ListedJob",
    "Package",
    "Processor",
    "ProcessorState",
    "Resources",
    "Task",
]

ProcessorState = Literal["deploying", "ready", "failed"]
IOName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
IID = Annotated[str, Field(pattern=r"^[0-9a-z]{64}$")]
ObjId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


BackendName = Literal["local", "ssh", "slurm"]
PartitionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
_WALLTIME = re.compile(r"^(?:(?:(\d+)-)?(\d+):)?(\d+):(\d+)$")


class Package(BaseModel):
    """One package: the most a job given it may use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: PartitionName
    cores: int = Field(ge=1, le=4096)
    memory: int = Field(ge=16, description="MiB")
    disk: int | None = Field(default=None, ge=1, description="MiB the job folder may hold when the adapter ends")
    walltime: int = Field(ge=1, le=366 * 86400, description="seconds")
    gpus: int = Field(default=0, ge=0, le=64)

    def describe(self) -> str:
        text = f"{self.cores} cores, {self.memory} MiB memory, walltime {self.walltime} s"
        return text + (f", {self.gpus} GPUs" if self.gpus else "")


class Resources(BaseModel):
    """What a job asks of a batch cluster (SLURM): from the descriptor's `resources`, overridable per job.
    `memory`: megabytes, or a number with K/M/G/T; `walltime`: seconds, or `[[D-]HH:]MM:SS`."""

    model_config = ConfigDict(extra="forbid")

    cores: int | None = Field(default=None, ge=1, le=4096)
    memory: str | None = Field(default=None, pattern=r"^[1-9][0-9]{0,8}[KMGT]?$")
    walltime: int | str | None = None
    partition: PartitionName | None = None
    gpus: int | None = Field(default=None, ge=0, le=64)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int):
            if not 1 <= value <= 366 * 86400:
                raise ValueError("walltime must be between 1 s and 366 days")
        elif isinstance(value, str) and not _WALLTIME.match(value):
            raise ValueError("walltime must be seconds or [[D-]HH:]MM:SS")
        return value

    def walltime_seconds(self) -> int | None:
        if self.walltime is None or isinstance(self.walltime, int):
            return self.walltime
        match = _WALLTIME.match(self.walltime)
        assert match is not None
        days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
        return max(1, ((days * 24 + hours) * 60 + minutes) * 60 + seconds)


class Task(BaseModel):
    """The seed's job descriptor: what to run, with which inputs, and who owns the outputs."""

    model_config = ConfigDict(extra="ignore")

    class InputReference(BaseModel):
        name: IOName
        type: Literal["reference"] = "reference"
        obj_id: ObjId
        user_signature: str | None = Field(default=None, max_length=4096)

    class InputValue(BaseModel):
        name: IOName
        type: Literal["value"] = "value"
        value: Annotated[Any, json_bounds(MAX_INPUT_VALUE_SIZE)]

    class Output(BaseModel):
        name: IOName
        owner_iid: IID
        restricted_access: bool = False
        content_encrypted: bool = False
        target_node_iid: IID | None = None

    proc_id: ObjId
    user_iid: IID
    input: Annotated[list[Annotated[InputReference | InputValue, Field(discriminator="type")]], Field(max_length=1000)]
    output: Annotated[list[Output], Field(max_length=1000)]
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=4096)
    resources: Resources | None = Field(default=None, description="overrides the descriptor's, within the package")
    package: PartitionName | None = Field(default=None, description="resource package (GET /rti/packages)")
    offer: dict[str, Any] | None = Field(default=None, description="this node's signed offer (POST /rti/offers)")


class Job(BaseModel):
    id: str
    proc_id: str
    task: Task
    retain: bool = False
    t_submitted: int
    custodian_iid: str
    package: Package | None = Field(default=None, description="the resource package the job was given")


class ListedJob(Job):
    """A job as the caller's job list (`GET /rti/job`) shows it: the job and its state, in one request (a client
    that reads the items as `Job` ignores `state`)."""

    state: str


class JobStatus(BaseModel):
    """State, progress, messages, outputs (metadata keyed by output name), errors and the timeline of a job."""

    state: str
    progress: int = 0
    output: dict[str, CDataObject] = Field(default_factory=dict)
    messages: list[dict[str, Any]] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    timeline: list[dict[str, Any]] = Field(default_factory=list)
    job: Job


class AgentInstance(BaseModel):
    """One running copy of an agent. `job_id` (the job it holds) is shown to the node owner only."""

    index: int
    state: Literal["starting", "idle", "busy", "restarting", "failed", "stopped"]
    job_id: str | None = None
    jobs_served: int = 0
    restarts: int = 0
    error: str | None = None


class Processor(BaseModel):
    """A deployed (or deploying, or failed) processor. Shown anonymously: never job details.
    For an agent (`"kind": "agent"` in its descriptor), `instances` holds the state of each instance."""

    proc_id: str
    state: ProcessorState
    gpp: GitProcessorPointer | None = None
    error: str | None = None
    log_tail: str | None = None
    instances: list[AgentInstance] | None = None
    backend: dict[str, Any] = Field(default_factory=lambda: {"name": "local"}, description="never credentials")


class DeployParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployment: Literal["native"] = "native"
    gpp_custodian: str | None = Field(default=None, max_length=128)
    github_credentials: str | None = Field(
        default=None, max_length=16384, description="base64 of GithubCredentials JSON encrypted for this node"
    )
    ssh_credentials: str | None = Field(
        default=None, max_length=65536, description="base64 of SSHCredentials JSON encrypted for this node"
    )
    backend: BackendName | None = Field(default=None, description="default: ssh with SSH credentials, else local")
    partition: PartitionName | None = Field(default=None, description="SLURM partition (slurm backend)")
