"""DOR records and request models. Field names follow the original middleware (existing scripts read them)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from saas.core.bounded_json import MAX_JSON_DEPTH, check_json, json_bounds
from saas.core.signing import canonical_json
from saas.nodedb.schemas import NodeInfo

if TYPE_CHECKING:
    from saas.core.identity import Identity

__all__ = [
    "GPP_DATA_FORMAT",
    "GPP_DATA_TYPE",
    "AddCDataObjectParameters",
    "AddGPPDataObjectParameters",
    "CDataObject",
    "DORStatistics",
    "DataObject",
    "DataObjectProvenance",
    "DataObjectRecipe",
    "GPPDataObject",
    "GitProcessorPointer",
    "GrantParameters",
    "KeyEnvelope",
    "KeyHolder",
    "PendingUpload",
    "ProcessorDescriptor",
    "ProcessorIO",
    "StorageUsage",
    "TaskProof",
    "UploadCommit",
]

GPP_DATA_TYPE = "Git-Processor-Pointer"
GPP_DATA_FORMAT = "json"

_LABEL = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
_IID = re.compile(r"^[0-9a-z]{64}$")
_HASH = re.compile(r"^[0-9a-f]{64}$")


def _label(value: str) -> str:
    if not _LABEL.match(value):
        raise ValueError("must be 1-128 printable characters")
    return value


def _iid(value: str) -> str:
    if not _IID.match(value):
        raise ValueError("must be an identity ID (64 characters 0-9a-z)")
    return value


def _hash(value: str) -> str:
    if not _HASH.match(value):
        raise ValueError("must be a SHA-256 hex digest")
    return value


Label = Annotated[str, AfterValidator(_label)]
IID = Annotated[str, AfterValidator(_iid)]
Hash = Annotated[str, AfterValidator(_hash)]
TagKey = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]

# Bounds on the JSON values users store (saas.core.bounded_json; MAX_JSON_DEPTH levels each), in bytes of JSON.
MAX_TAG_SIZE = 64 * 1024  # one tag value
MAX_DESCRIPTOR_SIZE = 256 * 1024  # a processor descriptor (descriptor.json)
MAX_INPUT_VALUE_SIZE = 256 * 1024  # one by-value job input (a recipe records it as the input's `content`)
TagValue = Annotated[Any, json_bounds(MAX_TAG_SIZE)]
# A recipe's record of one input (`{c_hash, data_type, data_format, content}`: one level above the value).
RecipeInput = Annotated[dict[str, Any], json_bounds(MAX_INPUT_VALUE_SIZE + 4096, MAX_JSON_DEPTH + 1)]


class ProcessorIO(BaseModel):
    """An input or output of a processor."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
    data_type: Label
    data_format: Label
    data_schema: dict[str, Any] | None = None


MAX_AGENT_INSTANCES = 64
MAX_AGENT_TIMEOUT = 7 * 24 * 3600.0
_AGENT_ONLY = ("instances", "job_timeout", "startup_timeout")


class ProcessorDescriptor(BaseModel):
    """`descriptor.json` of an adapter. Unknown fields are kept (adapters may carry their own).

    Optional fields are kept as extras, so a descriptor without them hashes as before (GPPs are content-addressed):
    `kind` ("processor" or "agent"), and for agents `instances` (1-64, default 1), `job_timeout` and
    `startup_timeout` (seconds). Read them through the properties of the same names."""

    model_config = ConfigDict(extra="allow")

    name: Label
    input: list[ProcessorIO]
    output: list[ProcessorIO]
    configurations: list[str]

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, document: Any) -> Any:
        return check_json(document, MAX_DESCRIPTOR_SIZE) if isinstance(document, dict) else document

    @model_validator(mode="after")
    def _check_kind(self) -> ProcessorDescriptor:
        extra = self.model_extra or {}
        if "network" in extra and type(extra["network"]) is not bool:
            raise ValueError("network must be true or false (may jobs of this processor use the network)")
        kind = extra.get("kind", "processor")
        if kind not in ("processor", "agent"):
            raise ValueError(f"kind must be 'processor' or 'agent', not {kind!r}")
        if kind != "agent":
            given = [name for name in _AGENT_ONLY if name in extra]
            if given:
                raise ValueError(f'{", ".join(given)}: only for agents ("kind": "agent")')
            return self
        instances = extra.get("instances", 1)
        if type(instances) is not int or not 1 <= instances <= MAX_AGENT_INSTANCES:
            raise ValueError(f"instances must be an integer from 1 to {MAX_AGENT_INSTANCES}")
        for name in ("job_timeout", "startup_timeout"):
            value = extra.get(name)
            if value is not None and (type(value) not in (int, float) or not 0 < value <= MAX_AGENT_TIMEOUT):
                raise ValueError(f"{name} must be a number of seconds above 0 and at most {MAX_AGENT_TIMEOUT:g}")
        return self

    @property
    def kind(self) -> str:
        """ "agent" for a long-lived adapter that takes many jobs, else "processor"."""
        return str((self.model_extra or {}).get("kind", "processor"))

    @property
    def instances(self) -> int:
        return int((self.model_extra or {}).get("instances", 1))

    @property
    def job_timeout(self) -> float | None:
        value = (self.model_extra or {}).get("job_timeout")
        return None if value is None else float(value)

    @property
    def startup_timeout(self) -> float | None:
        value = (self.model_extra or {}).get("startup_timeout")
        return None if value is None else float(value)


class GitProcessorPointer(BaseModel):
    """Where an adapter lives: repository, pinned commit, folder, configuration, and its descriptor."""

    source: str  # the repository (URL or path), as given
    commit_id: str
    proc_path: str
    proc_config: str
    proc_descriptor: ProcessorDescriptor


class DataObjectRecipe(BaseModel):
    """How an object was produced: the processor, what it consumed (by c_hash, or by value), and the product."""

    processor: GitProcessorPointer
    consumes: dict[str, RecipeInput]
    product: Annotated[dict[str, Any], json_bounds(MAX_TAG_SIZE)]
    name: str
    job_id: str | None = None
    signer_iid: IID | None = Field(default=None, description="the RTI node that ran the job and signed this recipe")
    signature: str | None = Field(default=None, max_length=1024, description="by `signer_iid` over the rest")

    def signed_content(self) -> bytes:
        """What the RTI node signs: the canonical JSON of every field but `signature` (raises ValueError for a
        value JSON cannot hold, such as NaN)."""
        return canonical_json(self.model_dump(mode="json", exclude={"signature"}))

    def verify(self, signer: Identity | None) -> bool:
        """Whether `signer` (the identity named by `signer_iid`) signed this recipe. Blocks (crypto)."""
        if signer is None or not self.signature or signer.id != self.signer_iid:
            return False
        try:
            return signer.verify_signature(self.signed_content(), self.signature)
        except ValueError:
            return False


class DataObject(BaseModel):
    class Tag(BaseModel):
        key: TagKey
        value: TagValue = None

    class CreationDetails(BaseModel):
        timestamp: int
        creators_iid: list[str]

    obj_id: str
    c_hash: str
    data_type: str
    data_format: str
    created: CreationDetails
    owner_iid: str
    access_restricted: bool
    access: list[str]
    tags: dict[str, Any]
    last_accessed: int
    custodian: NodeInfo | None = None
    size: int = 0


class CDataObject(DataObject):
    class License(BaseModel):
        by: bool = False
        sa: bool = False
        nc: bool = False
        nd: bool = False

    model_config = ConfigDict(extra="forbid")

    content_encrypted: bool
    license: License
    recipe: DataObjectRecipe | None = None


class GPPDataObject(DataObject):
    model_config = ConfigDict(extra="forbid")

    gpp: GitProcessorPointer


AnyDataObject = GPPDataObject | CDataObject


class TaskProof(BaseModel):
    """A user's job submission exactly as the RTI node received it: a signed request (DESIGN §5), so anyone can
    check that the user asked that node to run the task in `body`. An RTI node sends it with each output it
    stores on another node's DOR, to show that the owner it names is the one the task names."""

    model_config = ConfigDict(extra="forbid")

    method: str = Field(max_length=8)
    path: str = Field(max_length=2048, description="path?query as signed")
    timestamp: str = Field(max_length=32)
    nonce: str = Field(max_length=128)
    iid: IID
    node: IID
    signature: str = Field(max_length=1024)
    body: str = Field(description="the request body (the task's JSON, UTF-8) as signed")


class AddCDataObjectParameters(BaseModel):
    """The first line of an `add-c` body (the content follows it)."""

    model_config = ConfigDict(extra="forbid")

    owner_iid: IID
    creators_iid: list[IID] = Field(default_factory=list, max_length=100)
    data_type: Label
    data_format: Label
    access_restricted: bool = False
    content_encrypted: bool = False
    license: CDataObject.License = Field(default_factory=CDataObject.License)
    recipe: DataObjectRecipe | None = Field(
        default=None, description="only from the RTI node that ran the job, signed by it, with `task_proof`"
    )
    task_proof: TaskProof | None = Field(
        default=None, description="a job output: the user's signed submission of the job (names output and owner)"
    )
    key_envelope: str | None = Field(
        default=None, max_length=4096, description="base64 content key wrapped for the owner (encrypted objects)"
    )
    created: int | None = Field(
        default=None,
        ge=0,
        description="creation time (ms since epoch; not in the future). The same content, type, format, creators "
        "and time give the same obj_id, so a retried upload (e.g. a job output) returns the existing object",
    )


class AddGPPDataObjectParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=2048)
    commit_id: str = Field(pattern=r"^[0-9a-fA-F]{7,40}$")
    proc_path: str = Field(min_length=1, max_length=1024)
    proc_config: str = Field(min_length=1, max_length=128)
    owner_iid: IID
    creators_iid: list[IID] = Field(default_factory=list, max_length=100)
    github_credentials: str | None = Field(
        default=None, max_length=16384, description="base64 of GithubCredentials JSON encrypted for this node"
    )


class KeyEnvelope(BaseModel):
    """A content key wrapped for one identity (base64)."""

    iid: IID
    envelope: str = Field(min_length=1, max_length=4096)


class KeyHolder(BaseModel):
    """Whether an identity holds the content key of an encrypted object (it owns the object or has a key envelope
    of its own), as the object's DOR says."""

    obj_id: str
    iid: IID
    holds_key: bool


class GrantParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_envelope: str | None = Field(default=None, max_length=4096)


class DORStatistics(BaseModel):
    data_types: list[str]
    data_formats: list[str]
    tag_keys: list[str]
    objects: int
    content_bytes: int


class StorageUsage(BaseModel):
    """What an identity's data objects take on a DOR (each object counted with its full size), and its quota."""

    iid: str
    bytes: int
    objects: int
    quota: int | None = Field(description="bytes this identity may store here; null: unlimited")


class DataObjectProvenance(BaseModel):
    """The graph of how an object came to be: objects as nodes, processor steps linking them. Each step names the
    RTI node that signed its recipe (`signer_iid`) and whether that signature checks out (`verified`)."""

    data_nodes: dict[str, dict[str, Any]]
    proc_nodes: dict[str, dict[str, Any]]
    steps: list[dict[str, Any]]
    missing: list[str]


class PendingUpload(BaseModel):
    """A streamed upload received and waiting for its commit (`POST /dor/add-c/{pending_id}/commit`): not listed,
    not readable, removed at `expires` unless committed."""

    pending_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    c_hash: str = Field(pattern=_HASH.pattern, description="SHA-256 of the content as received")
    size: int = Field(ge=0, description="bytes of content received")
    expires: int = Field(description="when it is removed unless committed (ms since epoch)")


class UploadCommit(BaseModel):
    """The uploader's signed word on the exact bytes of a pending upload: the SHA-256 of its content (its head
    line was signed with the upload itself)."""

    model_config = ConfigDict(extra="forbid")

    c_hash: str = Field(pattern=_HASH.pattern)
