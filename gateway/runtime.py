"""Assemble a running gateway from a ``Config``: keys, policy (and its reloader), audit log,
model workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from prometheus_client import start_http_server

from explain.errors import ExplanationError
from explain.store import ExplanationStore
from gateway.api.routes import Limits
from gateway.audit.keys import load_private_key
from gateway.audit.log import AuditLog
from gateway.audit.sharedlog import SharedAuditLog
from gateway.config import Config, ModelConfig
from gateway.errors import ConfigError
from gateway.explanations import Explanations
from gateway.identity import Authenticator
from gateway.limits import build_store
from gateway.metrics import Metrics, StateCollector
from gateway.metricsstate import LoopSnapshot
from gateway.modelregistry import all_models, release_public_keys
from gateway.mtls import CertMapper
from gateway.oidc import TokenVerifier
from gateway.pipeline import DiscardAudit, Pipeline, Worker
from gateway.policy.reload import PolicyReloader, close_engine, describe_source, load_policy
from gateway.scanner import DisabledScanner, Scanner, build_scanner
from gateway.secretfile import read_secret, read_secret_text
from gateway.state import open_key_store
from gateway.tracing import Tracing
from gateway.upstream.keys import KeySource
from gateway.upstream.model import UpstreamModel
from gateway.workerevents import WorkerEventRecorder
from sandbox.canaries import CanaryFileError, load_canaries
from sandbox.client import ModelWorker, WorkerSpec
from sandbox.events import WorkerEvent
from sandbox.inventory import detect_inventory, probe_nvml
from sandbox.isolation import SandboxSettings, describe_missing
from sandbox.isolation.probe import unsupported_layers
from sandbox.lifecycle import ManagedModel, ModelPool
from sandbox.manifest import ManifestError, estimate_memory
from sandbox.remote.client import RemoteModel, RemoteSettings, split_host_port
from sandbox.remote.tls import gateway_context
from sandbox.spawner import close_fork_servers

log = logging.getLogger("llmos.gateway")


@dataclass
class Runtime:
    config: Config
    pipeline: Pipeline
    limits: Limits
    pool: ModelPool
    audit: AuditLog | SharedAuditLog
    reloader: PolicyReloader
    tokens: TokenVerifier | None = None
    worker_events: WorkerEventRecorder | None = None
    upstreams: dict[str, UpstreamModel] | None = None
    remotes: dict[str, RemoteModel] | None = None
    state_snapshot: LoopSnapshot | None = None  # what /metrics reads at scrape time
    _metrics_server: Any = None  # metrics.listen's HTTP server

    async def start(self) -> None:
        install_blocking_pool(self.config.server.blocking_threads)
        if self.state_snapshot is not None:
            self.state_snapshot.bind(asyncio.get_running_loop())
        if self.config.metrics.listen is not None:  # no credentials there: a trusted network only
            host, port = split_host_port(self.config.metrics.listen)
            self._metrics_server, _ = start_http_server(port, host, registry=self.pipeline.metrics.registry)
            log.info("metrics served without credentials on %s", self.config.metrics.listen)
        if self.tokens is not None:
            # Fetch the issuers' keys now, not on the first request; one that is down is retried
            # on demand (its callers get 503 idp_unavailable meanwhile).
            for issuer in await asyncio.to_thread(self.tokens.warm):
                log.warning("OIDC issuer %s: no signing keys yet (unreachable); will retry on demand", issuer)
        explanations = self.pipeline.explanations
        # Records an earlier run lost, in the background (the shared log keeps no index of
        # them in the gateway: see gateway/audit/sharedlog.py).
        if explanations is not None and isinstance(self.audit, AuditLog):
            explanations.start_recovery(self.audit)
        for remote in (self.remotes or {}).values():  # connects in the background
            await remote.start()
        await self.pool.start()  # the pinned models; the others load on demand
        await self.reloader.start()  # last: a failed start above leaves nothing running

    async def stop(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        await self.reloader.stop()  # first: nothing is swapped in while shutting down
        await self.pool.stop()
        await close_fork_servers()
        for upstream in (self.upstreams or {}).values():
            await upstream.close()
        for remote in (self.remotes or {}).values():
            await remote.stop()
        if self.worker_events is not None:
            await self.worker_events.drain()  # their entries, before the log closes
        explanations = self.pipeline.explanations
        if explanations is not None:
            await explanations.drain()  # their commit entries, before the log closes
            explanations.close()
        self.audit.close()
        self.pipeline.limit_store.close()
        self.pipeline.keys.close()
        self.pipeline.scanner.close()
        close_engine(self.pipeline.policy)
        self.pipeline.tracing.shutdown()  # the last spans, bounded by the exporter's timeout


def install_blocking_pool(threads: int) -> None:
    """Give the running loop a default executor (``asyncio.to_thread``) of ``threads`` threads.

    asyncio's own has min(32, cores + 4): on a small machine a few requests waiting on a disk
    sync or on the PII worker would hold every thread, and the requests behind them would
    queue for a thread rather than for the work. The loop shuts the pool down when it closes;
    a replaced one ends its threads when it is collected.
    """
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="llmos-io")
    asyncio.get_running_loop().set_default_executor(pool)


def sandbox_settings(config: Config) -> SandboxSettings:
    s = config.sandbox
    return SandboxSettings(
        strict=s.strict,
        optional=tuple(s.optional),
        uid=s.uid,
        gid=s.gid,
        max_open_files=s.max_open_files,
        max_processes=s.max_processes,
    )


def check_sandbox_host(settings: SandboxSettings) -> None:
    """Strict mode on a host that cannot give a layer fails ``llmos serve`` now, not each worker."""
    missing = unsupported_layers(settings.optional)
    if not missing:
        return
    if settings.strict:
        raise ConfigError(
            f"sandbox.strict: this host cannot isolate model workers with {describe_missing(missing)};"
            " fix the host or list the layer(s) in sandbox.optional"
        )
    for layer in missing:
        log.warning("sandbox: this host cannot give workers the %s layer (%s)", layer.name, layer.detail)


def trusted_release_keys(config: Config) -> tuple[Ed25519PublicKey, ...]:
    """The keys a model's manifest must be signed by: the state directory's release key and
    ``model_trust.public_keys``; none (nothing checked) with ``unsafe_allow_unsigned``."""
    if config.model_trust.unsafe_allow_unsigned:
        log.warning(
            "model_trust.unsafe_allow_unsigned is set: model directories load without a signed"
            " manifest; tampered weights would not be noticed"
        )
        return ()
    try:
        return tuple(release_public_keys(config))
    except ManifestError as exc:
        raise ConfigError(f"model_trust: {exc}") from exc


ECHO_MEMORY_BYTES = 64 * 1024 * 1024


def memory_estimate(model: ModelConfig) -> int:
    """What placement counts for a model: configured, else its signed manifest's estimate, else
    (unsigned, with model_trust.unsafe_allow_unsigned) the same formula over its safetensors."""
    if model.memory_bytes is not None:
        return model.memory_bytes
    if model.kind == "echo" or model.path is None:
        return ECHO_MEMORY_BYTES
    return estimate_memory(model.path)


def build_local_workers(
    config: Config, models: list[ModelConfig], on_event: Callable[[WorkerEvent], None] | None
) -> dict[str, ModelWorker]:
    """A supervised, sandboxed worker per local model (not started)."""
    sandbox = sandbox_settings(config)
    # Echo models load no files: a worker host serving only those needs no release keys.
    trusted = trusted_release_keys(config) if any(m.kind == "transformers" for m in models) else ()
    return {
        m.name: ModelWorker(
            WorkerSpec(
                name=m.name,
                model_dir=m.path,
                kind="echo" if m.kind == "echo" else "transformers",
                canary_file=m.canary_file,
                log_path=config.state_dir / "logs" / f"worker-{m.name.replace('/', '_')}.log",
                restart_backoff_initial_s=config.workers.restart_backoff_initial_s,
                restart_backoff_max_s=config.workers.restart_backoff_max_s,
                start_timeout_s=config.workers.start_timeout_s,
                max_queue=m.max_queue,
                threads=m.threads,
                memory_limit_bytes=m.memory_limit_bytes,
                gpus=tuple(m.gpus),
                sandbox=sandbox,
                request_timeout_s=config.workers.request_timeout_s,
                trusted_keys=trusted,
                unsafe_allow_pickle_weights=m.unsafe_allow_pickle_weights,
                max_batch=m.max_batch,
                unhealthy_after_failures=config.workers.unhealthy_after_failures,
                spawner=config.workers.spawner,
                explain_queue=config.explain.queue_size,
            ),
            on_event=on_event,
        )
        for m in models
    }


def build_pool(config: Config, models: list[ModelConfig], workers: dict[str, ModelWorker]) -> ModelPool:
    inventory = detect_inventory(
        config.devices.cpu_budget_bytes,
        config.devices.gpu_reserve_fraction,
        probes=(probe_nvml,),  # never torch in the gateway process (docs/placement.md)
    )
    managed = [
        ManagedModel(
            workers[m.name],
            memory_bytes=memory_estimate(m),
            pinned=m.load == "pinned",
            idle_unload_s=m.idle_unload_s,
            device_kind=m.device,
            fixed_gpus=bool(m.gpus),
            replicas=m.replicas,
            allow_sharding=m.allow_sharding,
        )
        for m in models
    ]
    return ModelPool(  # a model larger than every device is refused there, not here (docs/placement.md)
        inventory,
        managed,
        admission_timeout_s=config.workers.admission_timeout_s,
        start_timeout_s=config.workers.start_timeout_s,
    )


def open_explanation_store(config: Config) -> ExplanationStore:
    try:
        return ExplanationStore(config.explanations_db)
    except ExplanationError as exc:
        raise ConfigError(f"explain.db: {exc}") from exc


def every_remote(models: list[ModelConfig]) -> list[ModelConfig]:
    return [m for m in models if m.kind == "remote"]


def build_remote(model: ModelConfig) -> RemoteModel:
    """The gateway side of a ``kind: remote`` entry; ConfigError for unusable TLS files."""
    r = model.remote
    assert r is not None  # the config's validator requires it for this kind
    settings = RemoteSettings(
        endpoints=tuple(split_host_port(e) for e in r.endpoints),
        dns=None if r.dns is None else split_host_port(r.dns),
        server_name=r.server_name or (None if r.dns is None else split_host_port(r.dns)[0]),
        connect_timeout_s=r.connect_timeout_s,
        health_interval_s=r.health_interval_s,
        health_timeout_s=r.health_timeout_s,
        eject_backoff_initial_s=r.eject_backoff_initial_s,
        eject_backoff_max_s=r.eject_backoff_max_s,
        dns_refresh_s=r.dns_refresh_s,
    )
    try:
        tls = gateway_context(r.cert_file, r.key_file, r.ca_file)
    except ConfigError as exc:
        raise ConfigError(f"model {model.name!r}: {exc}") from exc
    return RemoteModel(model.name, settings, tls)


def build_upstream(model: ModelConfig) -> UpstreamModel:
    """The upstream model of a ``kind: upstream`` entry; ConfigError for a missing key or canaries."""
    assert model.upstream is not None  # the config's validator requires it for this kind
    u = model.upstream
    try:
        keys = KeySource(env=u.api_key_env, file=u.api_key_file)
    except ConfigError as exc:
        raise ConfigError(f"model {model.name!r}: {exc}") from exc
    canaries = None
    if model.canary_file is not None:
        try:
            canaries = load_canaries(model.canary_file)
        except CanaryFileError as exc:
            raise CanaryFileError(f"model {model.name!r}: canary_file: {exc}") from exc
    try:
        return UpstreamModel(model.name, u, keys=keys, canaries=canaries)
    except ConfigError as exc:
        raise ConfigError(f"model {model.name!r}: upstream.ca_file: {exc}") from exc


def warn_unsafe(config: Config) -> None:
    what = {
        "policy": "no policy decisions: every authenticated request is allowed, with no obligations",
        "pii": "no sensitive-data scanning of prompts or answers",
        "audit": "no audit entries (and no explanation records) for requests",
    }
    for feature in config.unsafe_disable:
        log.warning("UNSAFE: unsafe_disable lists %s: %s", feature, what[feature])


def open_audit_log(config: Config) -> AuditLog | SharedAuditLog:
    """The configured audit log: this gateway's SQLite file, or the log shared on PostgreSQL."""
    a = config.audit
    key = load_private_key(config.signing_key)
    if a.backend == "postgres":
        assert a.postgres_dsn_file is not None  # the config validator requires it
        return SharedAuditLog(
            read_secret_text(a.postgres_dsn_file, "audit.postgres_dsn_file"),
            key,
            origin=a.origin,
            checkpoint_every=a.checkpoint_every,
            checkpoint_interval_s=a.checkpoint_interval_s,
            sealed_fields=a.sealed_fields,
            connections=a.postgres_connections,
        )
    return AuditLog(
        config.audit_db,
        key,
        origin=a.origin,
        checkpoint_every=a.checkpoint_every,
        checkpoint_interval_s=a.checkpoint_interval_s,
        max_pending=a.max_pending,
        sealed_fields=a.sealed_fields,
    )


def build_runtime(config: Config) -> Runtime:
    warn_unsafe(config)
    every_model = all_models(config)  # llmos.yaml's, then those added with `llmos models add`
    models = [m for m in every_model if m.kind in ("transformers", "echo")]  # local workers
    upstreams = {m.name: build_upstream(m) for m in every_model if m.kind == "upstream"}
    remotes = {m.name: build_remote(m) for m in every_model if m.kind == "remote"}
    keys = open_key_store(config)
    policy = load_policy(config)
    audit = open_audit_log(config)
    for m in models:  # a bad canary file fails `llmos serve` now (its worker re-reads it)
        if m.canary_file is not None:
            try:
                load_canaries(m.canary_file)
            except CanaryFileError as exc:
                raise CanaryFileError(f"model {m.name!r}: canary_file: {exc}") from exc
    check_sandbox_host(sandbox_settings(config))
    worker_events = WorkerEventRecorder(audit)
    workers = build_local_workers(config, models, worker_events)
    pool = build_pool(config, models, workers)
    worker_view: dict[str, Worker] = {**pool.models, **upstreams, **remotes}
    mtls = config.auth.mtls
    tokens = TokenVerifier(config.oidc) if config.oidc.issuers else None
    authenticator = Authenticator(
        keys, tokens=tokens, certs=CertMapper(mtls.clients) if mtls.enabled else None
    )
    unsafe = config.unsafe_disable
    scanner: Scanner = DisabledScanner() if "pii" in unsafe else build_scanner(config.pii)
    pipeline = Pipeline(
        metrics=Metrics(m.name for m in every_model),
        tracing=Tracing(config.tracing),
        authenticator=authenticator,
        limits=config.limits,
        limit_store=build_store(config.limits),
        keys=keys,
        policy=policy,
        policy_enabled="policy" not in unsafe,
        audit=DiscardAudit() if "audit" in unsafe else audit,
        workers=worker_view,
        digest_key=read_secret(config.digest_key_file),
        scanner=scanner,
        scan_timeout_s=config.pii.timeout_s,
        scan_fail_open=frozenset(config.pii.fail_open_endpoints),
        explanations=None
        if "audit" in unsafe
        else Explanations(open_explanation_store(config), audit, config.explain),
    )
    log.info("sensitive-data detector: %s", pipeline.scanner.name)
    served_here = [*models, *every_remote(every_model)]  # by workers of ours, here or on worker hosts
    limits = Limits(
        max_body_bytes=config.server.max_body_bytes,
        max_messages=config.server.max_messages,
        default_max_tokens={m.name: m.default_max_tokens for m in served_here},
        model_labels={m.name: tuple(m.labels) for m in served_here},
    )
    log.info("policy %s loaded from %s", policy.digest, describe_source(config))
    runtime = Runtime(
        config=config,
        pipeline=pipeline,
        limits=limits,
        pool=pool,
        audit=audit,
        reloader=PolicyReloader(config, pipeline),
        tokens=tokens,
        worker_events=worker_events,
        upstreams=upstreams,
        remotes=remotes,
    )
    runtime.state_snapshot = LoopSnapshot(runtime)
    pipeline.metrics.registry.register(StateCollector(runtime.state_snapshot))
    return runtime
