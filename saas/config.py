"""`NodeConfig`: everything a node needs to start, resolved at the edge (CLI flags, `SAAS_*` env) and passed down.
Nothing else in the node reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from saas.core.helpers import parse_address

__all__ = ["DEFAULT_P2P_ADDRESS", "DEFAULT_REST_ADDRESS", "NodeConfig", "NodeType"]

NodeType = Literal["full", "storage", "execution"]
DEFAULT_REST_ADDRESS = ("127.0.0.1", 5001)
DEFAULT_P2P_ADDRESS = ("127.0.0.1", 4001)


class NodeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    datastore: Path = Field(default_factory=lambda: Path.home() / ".datastore")
    keystore: Path  # the keystore file (<dir>/<iid>.json)
    password: SecretStr
    rest_address: tuple[str, int] = DEFAULT_REST_ADDRESS
    p2p_address: tuple[str, int] = DEFAULT_P2P_ADDRESS
    boot_node: str | None = None  # host:port or a multiaddr; None: this node is the first
    # A closed network: peers that present another network name are refused; with a network key, libp2p's
    # private-network protection (pre-shared key) keeps out everyone who lacks it before any handshake.
    network_name: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    network_key: SecretStr | None = None
    node_type: NodeType = "full"
    retain_job_history: bool = False
    strict_deployment: bool = True
    max_jobs: int | None = Field(default=None, ge=1)  # jobs running at once; None: the CPU count
    max_remote_jobs: int = Field(default=64, ge=1)  # jobs on ssh/slurm backends at once (they use other machines)
    install_timeout: float = Field(default=600.0, gt=0)  # seconds install.sh may take
    bind_all: bool = False  # listen on 0.0.0.0 while advertising rest_address / p2p_address
    max_object_size: int | None = None  # bytes; None: unlimited
    max_json_body: int = 4 * 1024 * 1024  # bytes of a non-upload request body
    # Storage quotas (DOR): bytes each owner's objects may take on this node; None: unlimited. The node's own
    # identity is exempt; `storage_quota_for` sets an identity's own quota (IID -> bytes, None: unlimited).
    storage_quota: int | None = Field(default=10 * 2**30, ge=0)
    storage_quota_for: dict[str, Annotated[int, Field(ge=0)] | None] = Field(default_factory=dict)
    # Streamed uploads waiting for their signed commit (saas/dor/pending.py): at most this many per identity
    # (uploads still streaming included), each removed this many seconds after it was received unless committed.
    max_pending_uploads: int = Field(default=4, ge=1)
    pending_upload_lifetime: float = Field(default=600.0, gt=0)
    request_window: float = 120.0  # seconds a signed request stays valid (and its nonce is remembered)
    log_level: str = "INFO"
    # Isolation of adapter processes (DESIGN §12). The node values are each job's default and its ceiling.
    unsafe_no_sandbox: bool = False  # run adapters without the bubblewrap sandbox (warned about at every start)
    job_network: Literal["allow", "deny"] = "allow"  # deny: no job has network (install.sh always has)
    sandbox_uid: int | None = Field(default=None, ge=1, le=2**31)  # node as root: adapters' uid (default nobody)
    job_memory: int | None = Field(default=None, ge=16)  # MiB per job / agent instance / install; None: half the RAM
    job_pids: int = Field(default=1024, ge=8)  # processes and threads per job / agent instance / install
    job_cores: float | None = Field(default=None, gt=0)  # CPU cores per job; None: all
    job_walltime: float = Field(default=7 * 86400.0, gt=0)  # seconds a job may run
    # Quotas and fairness of the RTI and NodeDB (issue 14, item 7). The node owner is exempt from the job bounds
    # (not from the fair order between users: a free slot goes to the waiting user with the fewest running jobs).
    max_pending_per_user: int | None = Field(default=100, ge=1)  # jobs of one user waiting to start; None: unbounded
    max_running_per_user: int | None = Field(default=None, ge=1)  # per pool (local, remote); None: the fair share
    identity_publish_rate: float = Field(default=1.0, gt=0)  # identity publications per second per client address
    identity_publish_burst: int = Field(default=30, ge=1)  # ... of which this many at once
    max_identities: int = Field(default=20_000, ge=1)  # NodeDB's identities (updates of known ones always pass)
    max_nodes: int = Field(default=1_000, ge=1)  # NodeDB's node records (updates of known ones always pass)
    job_message_length: int = Field(default=1000, ge=1)  # characters of a trigger message (longer: truncated)
    job_messages: int = Field(default=100, ge=1)  # trigger messages kept per job: the first and the last half
    job_messages_bytes: int = Field(default=64 * 1024, ge=1)  # bytes of the trigger messages kept per job
    # Git sources (add-gpp, deploy): https and ssh to public addresses; with allow_local_git also local paths,
    # file://, plain http and loopback / private / link-local addresses (development nodes and tests).
    allow_local_git: bool = False
    # The original CLI's service flags (issue 16): forget finished jobs (records, logs, working folders) at start
    purge_inactive_jobs: bool = False
    # P2P liveness (seconds): anti-entropy/ping round, shown offline when unheard for, forgotten when unseen for
    p2p_sync_interval: float = 2.0
    p2p_offline_after: float = 15.0
    p2p_forget_after: float = 24 * 3600.0
    # Faults (issue 15): seconds a network-wide lookup on other DORs may take in all (peers are asked at once; what
    # arrived by then is used, the others are named in the log and pinged)
    network_deadline: float = Field(default=3.0, gt=0)
    # ... and seconds requests in flight may still take when the node stops (then 503 "Node is stopping")
    stop_grace: float = Field(default=2.0, ge=0)
    # HTTP limits of the REST service: request line + headers (431), seconds to send them (408), seconds a request
    # body may stall (408), idle keep-alive, open connections in total (503) and per client address (429)
    http_max_header_size: int = Field(default=32 * 1024, ge=1024)
    http_header_timeout: float = Field(default=10.0, gt=0)
    http_body_timeout: float = Field(default=30.0, gt=0)
    http_keepalive_timeout: float = Field(default=5.0, gt=0)
    http_max_connections: int = Field(default=1024, ge=1)
    http_max_connections_per_client: int = Field(default=128, ge=1)
    # Reverse proxies in front of the node (addresses or networks, e.g. 10.0.0.5 or 10.0.0.0/24): for connections
    # from them the client is taken from X-Forwarded-For (rate limits, audit), and the per-client connection limit
    # does not apply to them (many clients share their connections). Empty: forwarded-for headers are ignored.
    trusted_proxies: list[str] = Field(default_factory=list, max_length=64)
    # Dashboard sign-in (issue 20): seconds a browser session lasts (from sign-in; then sign in again), sessions one
    # identity holds at once (one more closes its oldest), the longest lifetime a login token may claim (seconds)
    dashboard_session_lifetime: float = Field(default=8 * 3600.0, gt=0)
    dashboard_max_sessions: int = Field(default=16, ge=1)
    dashboard_token_max_lifetime: float = Field(default=600.0, gt=0)
    # Operating the node (issue 19): log lines kept in memory for the owner's diagnostics; most recent final jobs
    # read for the job statistics of health, diagnostics and metrics
    log_ring_lines: int = Field(default=500, ge=1, le=100_000)
    health_recent_jobs: int = Field(default=500, ge=1, le=100_000)

    # Audit log (issue 19 item 3): entries kept at most (the oldest go first), and days an entry is kept (None: no
    # age limit). An entry takes about 1.2 KB on disk (with its indexes).
    audit_max_entries: int = Field(default=500_000, ge=100)
    audit_max_age_days: float | None = Field(default=365.0, gt=0)
    # Bulk transfers (issue 21): downloads sent by the kernel (sendfile) from at most this many threads at once;
    # beyond that (and with 0) content goes through the event loop in chunks.
    http_sendfile_threads: int = Field(default=16, ge=0)

    # Resource packages, account levels and offers (issue 18): the packages file (JSON; None: tiny/small/medium/large
    # scaled to the machine), the level of identities the node owner has not given one, how long an offer is valid
    # (seconds), and an optional veto hook (an executable given the task as JSON) with the seconds it may take
    packages_file: Path | None = None
    default_level: Literal["guest", "basic", "extended"] = "extended"
    offer_lifetime: float = Field(default=300.0, gt=0, le=7 * 86400)
    offer_veto: Path | None = None
    offer_veto_timeout: float = Field(default=5.0, gt=0, le=300)
    # Seconds into a booking after which it expires when no job of its user has started (its capacity is freed),
    # and the GPUs a job may use on this node (a job or package asking more is refused)
    booking_grace: float = Field(default=900.0, gt=0, le=7 * 86400)
    job_gpus: int = Field(default=0, ge=0, le=64)

    @field_validator("datastore", "keystore")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        try:
            return [str(ipaddress.ip_network(v.strip(), strict=False)) for v in value]
        except ValueError as e:
            raise ValueError(f"a trusted proxy is an IP address or network: {e}") from None

    @field_validator("rest_address", "p2p_address", mode="before")
    @classmethod
    def _address(cls, value: object) -> tuple[str, int]:
        return parse_address(value)  # type: ignore[arg-type]

    @property
    def network_psk(self) -> str | None:
        """The 32-byte libp2p pre-shared key (hex) derived from `network_key` and the network name, or None."""
        if self.network_key is None:
            return None
        import hashlib

        material = f"saas-network-psk\n{self.network_name}\n{self.network_key.get_secret_value()}"
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    @property
    def has_dor(self) -> bool:
        return self.node_type in ("full", "storage")

    @property
    def has_rti(self) -> bool:
        return self.node_type in ("full", "execution")

    @property
    def rest_bind(self) -> tuple[str, int]:
        return ("0.0.0.0" if self.bind_all else self.rest_address[0]), self.rest_address[1]
