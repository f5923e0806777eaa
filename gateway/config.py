"""Typed configuration: one YAML file (``llmos.yaml``), read once at startup.

Every path in the file may be relative; it is resolved against the directory holding the file.
Paths left out are derived from ``state_dir``. With no file at all, ``Config.embedded()`` gives
the built-in defaults over a state directory (``$LLMOS_HOME`` or ``./.llmos``).
Errors name the file and the key: ``llmos.yaml: models.0.path: Field required``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.errors import ConfigError
from gateway.limits.config import LimitsConfig
from gateway.oidc.config import OidcConfig
from gateway.pii.config import PiiConfig

DEFAULT_STATE_DIR = ".llmos"
DEMO_MODEL_NAME = "demo"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    if value is None:
        return None
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return value


class TlsConfig(_Section):
    """Serve HTTPS. With ``client_ca``, client certificates are verified against it."""

    certfile: Path
    keyfile: Path
    client_ca: Path | None = None  # CA bundle (PEM) that client certificates must chain to
    client_certs: Literal["none", "optional", "required"] = "none"  # ask for / insist on one

    _resolve = field_validator("certfile", "keyfile", "client_ca")(_resolve)

    @model_validator(mode="after")
    def _ca_for_client_certs(self) -> TlsConfig:
        if self.client_certs != "none" and self.client_ca is None:
            raise ValueError("client_certs needs client_ca (the CA bundle to verify them with)")
        return self


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: StrictInt = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_messages: int = Field(default=256, ge=1)
    log_level: str = Field(default="info", pattern="^(critical|error|warning|info|debug)$")
    log_format: Literal["text", "json"] = "text"  # json: one object per line (docs/observability.md)
    # Threads for blocking calls made from the event loop (SQLite, output scanning, key and limit
    # stores). Many of them only wait (on the PII worker, on a disk sync), so there are plenty:
    # too few and requests queue behind the waiting ones.
    blocking_threads: StrictInt = Field(default=64, ge=4, le=1024)
    tls: TlsConfig | None = None  # null: plain HTTP (put TLS in front, or set this)


class MtlsClient(_Section):
    """One client certificate identity and the principal it becomes."""

    # "cn:<subject common name>", "dns:<SAN DNS name>", "uri:<SAN URI>" (e.g. SPIFFE) or "email:<SAN>"
    match: str = Field(pattern=r"^(cn|dns|uri|email):\S{1,255}$")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    tenant: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    roles: list[str] = Field(min_length=1)


class MtlsConfig(_Section):
    """Authenticate callers by a verified client certificate (needs server.tls.client_ca)."""

    enabled: bool = False
    clients: list[MtlsClient] = Field(default_factory=list)


class AuthConfig(_Section):
    keys_db: Path | None = None
    pepper_file: Path | None = None
    mtls: MtlsConfig = MtlsConfig()

    _resolve = field_validator("keys_db", "pepper_file")(_resolve)


class OpaConfig(_Section):
    """A remote OPA server (``policy.engine: opa``), reached over its REST Data API."""

    url: str = "http://127.0.0.1:8181"
    timeout_s: float = Field(default=0.5, gt=0)
    input_path: str = "llmos/authz/decision"  # POST /v1/data/<input_path>
    output_path: str | None = "llmos/output/decision"  # null: no output decisions


class PolicyConfig(_Section):
    engine: Literal["rego", "opa"] = "rego"
    opa: OpaConfig = OpaConfig()
    dir: Path | None = None
    query: str = "data.llmos.authz.decision"
    # The output decision on generated text; null turns output decisions off (say so explicitly).
    output_query: str | None = "data.llmos.output.decision"
    run_tests_on_load: bool = True
    # Ed25519 public key (PEM): when set, only a bundle with a valid .signature is loaded.
    public_key: Path | None = None
    watch: bool = True  # reload when a file in the policy directory changes (SIGHUP always does)
    # Decisions kept for requests that agree on every input field the policy reads (0: none).
    decision_cache: int = Field(default=4096, ge=0)

    _resolve = field_validator("dir", "public_key")(_resolve)


class AuditConfig(_Section):
    # sqlite: one gateway's log in ``db``. postgres: one log shared by every replica that names
    # the same database (docs/deploy.md); ``postgres_dsn_file`` holds the libpq connection
    # string (it may hold a password: a secret file, refused if others can read it).
    backend: Literal["sqlite", "postgres"] = "sqlite"
    postgres_dsn_file: Path | None = None
    postgres_connections: StrictInt = Field(default=4, ge=1, le=64)  # sessions this replica appends on
    db: Path | None = None
    signing_key: Path | None = None
    public_key: Path | None = None
    digest_key_file: Path | None = None
    # The log's name in its checkpoints; null: generated when the log is created, then kept.
    origin: str | None = Field(default=None, pattern=r"^[^\s+]{1,200}$")
    checkpoint_every: StrictInt = Field(default=1000, ge=1)  # sign a checkpoint every N entries...
    checkpoint_interval_s: float = Field(default=10.0, gt=0)  # ...or after this long with new entries
    max_pending: StrictInt = Field(default=10_000, ge=1)  # appends waiting beyond this block (backpressure)
    # Fields written as salted commitments (their values beside the entry), so that an export can
    # withhold them and still verify (docs/audit.md). Empty: every field in clear.
    sealed_fields: tuple[str, ...] = ()

    @field_validator("sealed_fields")
    @classmethod
    def _sealable(cls, fields: tuple[str, ...]) -> tuple[str, ...]:
        from gateway.audit.entry import SEALABLE_FIELDS

        unknown = [f for f in fields if f not in SEALABLE_FIELDS]
        if unknown:
            raise ValueError(f"cannot seal {', '.join(unknown)} (sealable: {', '.join(SEALABLE_FIELDS)})")
        if len(set(fields)) != len(fields):
            raise ValueError("a field is listed twice")
        return fields

    _resolve = field_validator("db", "signing_key", "public_key", "digest_key_file", "postgres_dsn_file")(
        _resolve
    )

    @model_validator(mode="after")
    def _postgres_needs_dsn(self) -> AuditConfig:
        if self.backend == "postgres" and self.postgres_dsn_file is None:
            raise ValueError("backend postgres needs postgres_dsn_file (a file with the connection string)")
        return self


class UpstreamConfig(_Section):
    """An OpenAI-compatible API the model entry forwards to (``kind: upstream``; docs/upstreams.md).

    The key is read from the environment variable ``api_key_env`` or the file ``api_key_file``
    (re-read when it changes; refused if others may read it); neither: no Authorization header.
    """

    base_url: str = Field(pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$")  # e.g. https://api.openai.com/v1
    model: str | None = Field(default=None, min_length=1, max_length=256)  # name there (default: ours)
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    api_key_file: Path | None = None
    ca_file: Path | None = None  # PEM bundle to verify the upstream's certificate (default: system CAs)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=300)
    timeout_s: float = Field(default=120.0, gt=0, le=3600)  # longest wait for the upstream's next bytes
    retries: StrictInt = Field(default=2, ge=0, le=10)  # extra attempts on 429, 5xx, refused connections
    backoff_initial_s: float = Field(default=0.25, gt=0, le=60)
    backoff_max_s: float = Field(default=8.0, gt=0, le=300)  # also the longest Retry-After honoured
    max_connections: StrictInt = Field(default=100, ge=1, le=10_000)  # pooled keep-alive connections

    _resolve = field_validator("api_key_file", "ca_file")(_resolve)

    @model_validator(mode="after")
    def _one_key_source(self) -> UpstreamConfig:
        if self.api_key_env is not None and self.api_key_file is not None:
            raise ValueError("give api_key_env or api_key_file, not both")
        return self


_HOST_PORT = r"^[A-Za-z0-9._-]{1,253}:[0-9]{1,5}$|^\[[0-9A-Fa-f:.]{2,45}\]:[0-9]{1,5}$"


def _port_ok(host_port: str) -> bool:
    return 0 < int(host_port.rsplit(":", 1)[1]) < 65536


class RemoteConfig(_Section):
    """Worker hosts serving a model over mutual TLS (``kind: remote``; docs/remote-workers.md).

    ``endpoints`` (``host:port``) or ``dns`` (``name:port``: every address it resolves to, e.g.
    a Kubernetes headless Service). The gateway presents ``cert_file``/``key_file`` and accepts
    only worker hosts whose certificate ``ca_file`` signed, for ``server_name`` (default: the
    endpoint's host; set it when endpoints are addresses found through DNS)."""

    endpoints: list[str] = Field(default_factory=list)
    dns: str | None = Field(default=None, pattern=_HOST_PORT)
    server_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]{1,253}$")
    cert_file: Path
    key_file: Path
    ca_file: Path
    connect_timeout_s: float = Field(default=5.0, gt=0)
    health_interval_s: float = Field(default=2.0, gt=0)
    health_timeout_s: float = Field(default=2.0, gt=0)
    eject_backoff_initial_s: float = Field(default=0.5, gt=0)
    eject_backoff_max_s: float = Field(default=30.0, gt=0)
    dns_refresh_s: float = Field(default=10.0, gt=0)

    _resolve = field_validator("cert_file", "key_file", "ca_file")(_resolve)

    @field_validator("dns")
    @classmethod
    def _dns_port(cls, dns: str | None) -> str | None:
        if dns is not None and not _port_ok(dns):
            raise ValueError(f"port out of range in {dns!r}")
        return dns

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, endpoints: list[str]) -> list[str]:
        import re

        bad = [e for e in endpoints if not re.match(_HOST_PORT, e) or not _port_ok(e)]
        if bad:
            raise ValueError(f"not host:port: {', '.join(map(repr, bad))}")
        if len(set(endpoints)) != len(endpoints):
            raise ValueError("an endpoint is listed twice")
        return endpoints

    @model_validator(mode="after")
    def _one_source(self) -> RemoteConfig:
        if bool(self.endpoints) == (self.dns is not None):
            raise ValueError("give endpoints or dns (one of them)")
        return self


class MetricsConfig(_Section):
    """Prometheus metrics (docs/observability.md). ``endpoint``: ``GET /metrics`` on the main
    port, for admin and auditor credentials (audited). ``listen``: also serve them without
    credentials on this ``host:port`` (a scraper in a trusted network), e.g. ``127.0.0.1:9464``."""

    endpoint: bool = True
    listen: str | None = Field(default=None, pattern=_HOST_PORT)


class ConsoleOidcConfig(_Section):
    """Sign in to the console at an OpenID provider (authorization code with PKCE, a public
    client): ``issuer`` must be one of ``oidc.issuers``, whose tokens the API accepts."""

    issuer: str = Field(min_length=1, max_length=2048)
    client_id: str = Field(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$")
    scope: str = Field(default="openid", pattern=r"^[\x21-\x7e]+( [\x21-\x7e]+)*$")


class ConsoleConfig(_Section):
    """The operator console at ``/console`` (docs/observability.md)."""

    enabled: bool = True
    oidc: ConsoleOidcConfig | None = None  # a "Sign in" button; without it, a key or token is typed


class TracingConfig(_Section):
    """OpenTelemetry traces (docs/observability.md); off by default. Spans go to
    ``otlp_endpoint`` (OTLP over HTTP, e.g. ``http://otel-collector:4318/v1/traces``) only."""

    enabled: bool = False
    otlp_endpoint: str = Field(
        default="http://127.0.0.1:4318/v1/traces", pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$"
    )
    service_name: str = Field(default="llmos-gateway", min_length=1, max_length=128)
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)  # of traces that start here
    export_interval_ms: StrictInt = Field(default=5000, ge=10, le=600_000)
    export_timeout_s: float = Field(default=10.0, gt=0, le=60)
    # Continue a caller's traceparent (its trace id goes into the audit entry, its sampling
    # decision holds). Off: a trace of the gateway's own, linked to the caller's.
    trust_incoming: bool = False


class WorkerHostConfig(_Section):
    """``llmos worker serve``: its certificate (server authentication) and the CA whose gateway
    certificates (client authentication) it accepts (docs/remote-workers.md)."""

    cert_file: Path | None = None
    key_file: Path | None = None
    gateway_ca_file: Path | None = None

    _resolve = field_validator("cert_file", "key_file", "gateway_ca_file")(_resolve)


class ModelConfig(_Section):
    name: str = Field(pattern=MODEL_NAME_PATTERN)
    # "transformers": a local Hugging Face checkpoint at ``path``. "echo": a diagnostic model that
    # answers with the last message it received (after redaction); it loads nothing, so no path.
    # "upstream": an OpenAI-compatible API (``upstream:``), behind the same pipeline (docs/upstreams.md).
    # "remote": served by worker hosts over mutual TLS (``remote:``; docs/remote-workers.md).
    kind: Literal["transformers", "echo", "upstream", "remote"] = "transformers"
    path: Path | None = Field(default=None, validate_default=True)
    upstream: UpstreamConfig | None = None
    remote: RemoteConfig | None = None
    # UTF-8 file of values that must never reach the model, one per line (sandbox/canaries.py);
    # read by the worker, which refuses a request containing one (500 canary_tripped).
    canary_file: Path | None = None
    max_queue: int = Field(default=64, ge=0)
    default_max_tokens: int = Field(default=256, ge=1)
    threads: int | None = Field(default=None, ge=1)  # torch CPU threads in the worker (default: torch's)
    labels: list[str] = Field(default_factory=list)  # seen by policy, e.g. "internal", "tenant:acme"
    # The worker's memory: RLIMIT_AS (CPU only) and cgroup memory.max where cgroup v2 is delegated.
    memory_limit_bytes: int | None = Field(default=None, ge=64 * 1024 * 1024)
    gpus: list[StrictInt] = Field(default_factory=list)  # CUDA devices: CUDA_VISIBLE_DEVICES, /dev/nvidiaN
    # Load pickle-format weights (.bin, .pt, ...) too; they can run code in the worker when loaded
    # (docs/threat-model.md). Without it such a directory is refused (unsafe_weights).
    unsafe_allow_pickle_weights: bool = False
    # pinned: loaded at startup, never evicted. on_demand: loaded on its first request, unloaded
    # after idle_unload_s without one, or evicted (least recently used first) to make room.
    load: Literal["pinned", "on_demand"] = "pinned"
    idle_unload_s: float | None = Field(default=None, gt=0)
    # What placement counts for it (docs/placement.md). Default: the signed manifest's estimate
    # (transformers), 64 MiB (echo).
    memory_bytes: StrictInt | None = Field(default=None, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Continuous batching in the worker: requests decoding together (1: one at a time).
    max_batch: int = Field(default=16, ge=1, le=256)
    # Workers serving this model, each with the memory above, spread over GPUs by placement;
    # requests go to the ready one with the fewest in flight (docs/models.md, "Replicas").
    replicas: int = Field(default=1, ge=1, le=64)
    # false: one GPU per replica (or the CPU with device auto), never one worker over several GPUs.
    allow_sharding: bool = True

    @field_validator("gpus")
    @classmethod
    def _gpu_indices(cls, gpus: list[int]) -> list[int]:
        if any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
            raise ValueError("GPU indices must be distinct and >= 0")
        return gpus

    _resolve = field_validator("path", "canary_file")(_resolve)

    @model_validator(mode="after")
    def _replicas_not_pinned_to_gpus(self) -> ModelConfig:
        if self.gpus and self.replicas > 1:
            raise ValueError(
                "gpus names one worker's devices; with replicas > 1 leave gpus out and let placement"
                " spread the replicas (device: cuda)"
            )
        return self

    @field_validator("path")
    @classmethod
    def _path_for_kind(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        kind = info.data.get("kind")  # absent when kind itself was invalid: that error is reported
        if kind == "transformers" and path is None:
            raise PydanticCustomError(
                "missing", "Field required (the model directory of a transformers model)"
            )
        if kind in ("echo", "upstream", "remote") and path is not None:
            raise ValueError(f"must not be set for kind {kind} (it loads no files)")
        return path

    @model_validator(mode="after")
    def _upstream_for_kind(self) -> ModelConfig:
        if self.kind == "upstream" and self.upstream is None:
            raise ValueError("kind upstream needs an upstream: section (base_url, ...)")
        if self.kind != "upstream" and self.upstream is not None:
            raise ValueError("upstream: is only for kind upstream")
        if self.kind == "remote" and self.remote is None:
            raise ValueError("kind remote needs a remote: section (endpoints or dns, TLS files)")
        if self.kind != "remote" and self.remote is not None:
            raise ValueError("remote: is only for kind remote")
        if self.kind in ("upstream", "remote"):
            local = [f for f in ("gpus", "memory_limit_bytes", "memory_bytes", "threads") if getattr(self, f)]
            local += ["replicas"] if self.replicas != 1 else []
            if local:
                raise ValueError(f"{', '.join(local)}: not for kind {self.kind} (no local worker)")
        return self


class WorkersConfig(_Section):
    restart_backoff_initial_s: float = Field(default=0.5, gt=0)
    restart_backoff_max_s: float = Field(default=30.0, gt=0)
    start_timeout_s: float = Field(default=120.0, gt=0)
    # A worker holding requests that sends nothing for this long is hung: killed and restarted;
    # its oldest request gets 504 model_timeout, the others 503 worker_crashed.
    request_timeout_s: float = Field(default=120.0, gt=0)
    # Failed starts or short-lived workers in a row before a model is refused at once with 503
    # model_unhealthy (until a worker is ready again).
    unhealthy_after_failures: StrictInt = Field(default=3, ge=1)
    # How long a request for an unloaded model waits for memory (busy or pinned models hold it)
    # before 503 model_capacity.
    admission_timeout_s: float = Field(default=30.0, gt=0)
    # How worker processes start (docs/workers.md, "Spawner"): "exec", a fresh interpreter each
    # time; "fork_server", forked from one server that imported torch and transformers already
    # (a restart or reload is ready in a fraction of the time; workers share its memory layout).
    spawner: Literal["exec", "fork_server"] = "exec"


class ModelTrustConfig(_Section):
    """Which release keys may sign the models a transformers worker loads (docs/models.md)."""

    # Ed25519 public keys (PEM) whose manifest signatures are trusted, besides the state
    # directory's own release key (``llmos models keygen``/``init`` make it; it signs the demo).
    public_keys: list[Path] = Field(default_factory=list)
    # Load transformers models that have no manifest signed by a trusted key, unchecked. Named for
    # what it is: tampered weights then load without a word.
    unsafe_allow_unsigned: bool = False
    release_key: Path | None = None  # default <state>/secrets/model_release_key.pem
    release_public_key: Path | None = None  # default <state>/model_release_key.pub.pem

    _resolve = field_validator("release_key", "release_public_key")(_resolve)

    @field_validator("public_keys")
    @classmethod
    def _resolve_keys(cls, paths: list[Path], info: ValidationInfo) -> list[Path]:
        return [p for p in (_resolve(path, info) for path in paths) if p is not None]


class DevicesConfig(_Section):
    """The memory budgets models are placed within (docs/placement.md)."""

    cpu_budget_bytes: StrictInt | None = Field(default=None, gt=0)  # default: half of RAM
    gpu_reserve_fraction: float = Field(default=0.1, ge=0, lt=1)  # of each GPU, never allocated


SandboxLayer = Literal[  # sandbox.isolation.LAYERS
    "environment",
    "descriptors",
    "cgroup",
    "network",
    "rlimits",
    "uid",
    "no_new_privs",
    "filesystem",
    "seccomp",
]


class SandboxConfig(_Section):
    """How model workers are isolated (docs/sandbox.md)."""

    # Refuse to start a worker that lacks a layer (other than those in ``optional``); without it,
    # each missing layer is logged as a warning and the worker serves anyway.
    strict: bool = False
    optional: list[SandboxLayer] = Field(default_factory=list)
    uid: StrictInt = Field(default=65534, ge=0)  # a root gateway's workers run as this uid/gid
    gid: StrictInt = Field(default=65534, ge=0)
    max_open_files: StrictInt = Field(default=1024, ge=16)
    max_processes: StrictInt = Field(default=512, ge=1)  # RLIMIT_NPROC (after the uid drop), pids.max


class ExplainConfig(_Section):
    """Explanation records (docs/explanations.md). Evidence (policy rules, PII findings) is
    recorded for every decision; a model attribution when the policy's ``explain`` obligation
    asks for one, for the sampled share of requests, computed by the model's own worker."""

    db: Path | None = None  # default: <state_dir>/explanations.db
    sample_rate: float = Field(default=1.0, ge=0.0, le=1.0)  # share of asked-for attributions computed
    # Defaults for what an obligation does not say (an obligation may name them itself).
    method: Literal["gradient_x_activation", "integrated_gradients", "feature_ablation"] = (
        "gradient_x_activation"
    )
    steps: int = Field(default=16, ge=1, le=1024)  # integrated gradients
    max_prompt_tokens: int = Field(default=512, ge=1, le=65536)
    max_output_tokens: int = Field(default=64, ge=1, le=65536)
    time_budget_s: float = Field(default=10.0, gt=0)  # per attribution in the worker (full scope)
    queue_size: int = Field(default=64, ge=1, le=65536)  # per worker; beyond: "skipped: overload"
    wait_s: float = Field(default=120.0, gt=0)  # the gateway waits this long for an attribution
    max_pending: int = Field(default=4096, ge=1)  # records awaiting attributions; beyond: overload

    _resolve = field_validator("db")(_resolve)


class Config(_Section):
    """The whole configuration. Build it with ``load()`` or ``embedded()``."""

    state_dir: Path = Field(default=Path(DEFAULT_STATE_DIR), validate_default=True)
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    policy: PolicyConfig = PolicyConfig()
    audit: AuditConfig = AuditConfig()
    models: list[ModelConfig] | None = None
    workers: WorkersConfig = WorkersConfig()
    limits: LimitsConfig = LimitsConfig()  # rate limits and token budgets (docs/limits.md)
    oidc: OidcConfig = OidcConfig()  # trusted identity providers for bearer JWTs (docs/oidc.md)
    pii: PiiConfig = PiiConfig()  # sensitive-data detection: Presidio or patterns (docs/pii.md)
    sandbox: SandboxConfig = SandboxConfig()  # isolation of model workers (docs/sandbox.md)
    model_trust: ModelTrustConfig = ModelTrustConfig()  # signed model manifests (docs/models.md)
    devices: DevicesConfig = DevicesConfig()  # memory budgets for placement (docs/placement.md)
    explain: ExplainConfig = ExplainConfig()  # explanation records (docs/explanations.md)
    worker_host: WorkerHostConfig = WorkerHostConfig()  # `llmos worker serve` (docs/remote-workers.md)
    metrics: MetricsConfig = MetricsConfig()  # Prometheus (docs/observability.md)
    tracing: TracingConfig = TracingConfig()  # OpenTelemetry (docs/observability.md)
    console: ConsoleConfig = ConsoleConfig()  # the operator console (docs/observability.md)
    # UNSAFE, for measurements and break-glass: turn off the policy decision (every authenticated
    # request allowed, no obligations), sensitive-data scanning, and the audit trail of requests
    # (explanation records too). The gateway logs a warning for each at start (docs/configuration.md).
    unsafe_disable: tuple[Literal["policy", "pii", "audit"], ...] = ()

    _resolve = field_validator("state_dir")(_resolve)

    @field_validator("models")
    @classmethod
    def _unique_names(cls, models: list[ModelConfig] | None) -> list[ModelConfig] | None:
        names = [m.name for m in models or []]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate model names: {', '.join(dupes)}")
        return models

    @model_validator(mode="after")
    def _console_issuer_is_trusted(self) -> Config:
        oidc = self.console.oidc
        if oidc is not None and oidc.issuer not in {i.issuer for i in self.oidc.issuers}:
            raise ValueError("console.oidc.issuer must be one of oidc.issuers (the API accepts its tokens)")
        return self

    @model_validator(mode="after")
    def _mtls_needs_client_certs(self) -> Config:
        tls = self.server.tls
        if self.auth.mtls.enabled and (tls is None or tls.client_certs == "none"):
            raise ValueError(
                "auth.mtls.enabled needs server.tls with client_ca and client_certs: optional or required"
            )
        return self

    @model_validator(mode="after")
    def _fill_defaults(self) -> Config:
        s = self.state_dir
        auth = self.auth.model_copy(
            update={
                "keys_db": self.auth.keys_db or s / "keys.db",
                "pepper_file": self.auth.pepper_file or s / "secrets" / "api_key_pepper",
            }
        )
        policy = self.policy.model_copy(update={"dir": self.policy.dir or s / "policies"})
        audit = self.audit.model_copy(
            update={
                "db": self.audit.db or s / "audit.db",
                "signing_key": self.audit.signing_key or s / "secrets" / "audit_signing_key.pem",
                "public_key": self.audit.public_key or s / "audit_signing_key.pub.pem",
                "digest_key_file": self.audit.digest_key_file or s / "secrets" / "audit_digest_key",
            }
        )
        trust = self.model_trust.model_copy(
            update={
                "release_key": self.model_trust.release_key or s / "secrets" / "model_release_key.pem",
                "release_public_key": self.model_trust.release_public_key or s / "model_release_key.pub.pem",
            }
        )
        object.__setattr__(self, "model_trust", trust)
        explain = self.explain.model_copy(update={"db": self.explain.db or s / "explanations.db"})
        object.__setattr__(self, "explain", explain)
        models = self.models
        if models is None:
            models = [ModelConfig(name=DEMO_MODEL_NAME, path=s / "models" / DEMO_MODEL_NAME)]
        object.__setattr__(self, "auth", auth)
        object.__setattr__(self, "policy", policy)
        object.__setattr__(self, "audit", audit)
        object.__setattr__(self, "models", models)
        return self

    # Typed accessors: after validation these are never None.
    @property
    def keys_db(self) -> Path:
        return _req(self.auth.keys_db)

    @property
    def pepper_file(self) -> Path:
        return _req(self.auth.pepper_file)

    @property
    def policy_dir(self) -> Path:
        return _req(self.policy.dir)

    @property
    def audit_db(self) -> Path:
        return _req(self.audit.db)

    @property
    def explanations_db(self) -> Path:
        return _req(self.explain.db)

    @property
    def signing_key(self) -> Path:
        return _req(self.audit.signing_key)

    @property
    def public_key(self) -> Path:
        return _req(self.audit.public_key)

    @property
    def digest_key_file(self) -> Path:
        return _req(self.audit.digest_key_file)

    @property
    def release_key(self) -> Path:
        return _req(self.model_trust.release_key)

    @property
    def release_public_key(self) -> Path:
        return _req(self.model_trust.release_public_key)

    @property
    def model_list(self) -> list[ModelConfig]:
        return list(self.models or [])

    @property
    def demo_model_dir(self) -> Path:
        return self.state_dir / "models" / DEMO_MODEL_NAME

    @classmethod
    def embedded(cls, state_dir: Path | None = None, environ: dict[str, str] | None = None) -> Config:
        """Built-in defaults over ``state_dir``, ``$LLMOS_HOME`` or ``./.llmos``."""
        env = os.environ if environ is None else environ
        if state_dir is None:
            state_dir = Path(env.get("LLMOS_HOME") or DEFAULT_STATE_DIR)
        return cls.model_validate({"state_dir": str(state_dir)}, context={"base_dir": Path.cwd()})

    @classmethod
    def from_mapping(cls, data: Any, *, source: str, base_dir: Path) -> Config:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of keys, not {type(data).__name__}")
        try:
            return cls.model_validate(data, context={"base_dir": base_dir})
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "(top level)"
            more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
            raise ConfigError(f"{source}: {key}: {first['msg']}{more}") from exc

    @classmethod
    def load(cls, path: Path) -> Config:
        """Read and validate ``path``; relative paths inside it are relative to its directory."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the configuration file: {exc.strerror}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from exc
        return cls.from_mapping(data, source=str(path), base_dir=path.resolve().parent)


def _req(value: Path | None) -> Path:
    if value is None:  # unreachable after validation; kept as a typed guard
        raise ConfigError("configuration was not validated")
    return value
