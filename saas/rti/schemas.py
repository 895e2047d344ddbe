"""RTI records and request models. Names follow the original middleware (existing scripts and the seed's job
descriptor use them): `Task` with `Task.InputReference` / `Task.InputValue` / `Task.Output`, `Job`, `JobStatus`,
`Processor`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from saas.dor.schemas import CDataObject, GitProcessorPointer

__all__ = [
    "AgentInstance",
    "DeployParameters",
    "Job",
    "JobStatus",
    "Processor",
    "ProcessorState",
    "Task",
]

ProcessorState = Literal["deploying", "ready", "failed"]
IOName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
IID = Annotated[str, Field(pattern=r"^[0-9a-z]{64}$")]
ObjId = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


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
        value: Any

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


class Job(BaseModel):
    id: str
    proc_id: str
    task: Task
    retain: bool = False
    t_submitted: int
    custodian_iid: str


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


class DeployParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployment: Literal["native"] = "native"
    gpp_custodian: str | None = Field(default=None, max_length=128)
    github_credentials: str | None = Field(
        default=None, max_length=16384, description="base64 of GithubCredentials JSON encrypted for this node"
    )
    ssh_credentials: str | None = Field(default=None, max_length=16384)
