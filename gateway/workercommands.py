"""``llmos worker serve --listen HOST:PORT``: a worker host (docs/remote-workers.md).

It runs the configuration's local models (``kind: transformers`` and ``echo``) as the gateway
would, sandboxed and supervised, and serves them over mutual TLS to gateways whose
``models[].kind: remote`` entries point here (``sandbox.remote.host``). It needs
``worker_host.cert_file``, ``key_file`` and ``gateway_ca_file``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from gateway.config import Config
from gateway.errors import ConfigError
from gateway.logs import configure as configure_logging

ConfigLoader = Callable[[Any], Config]
log = logging.getLogger("llmos.worker")


def add_worker_commands(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    worker = sub.add_parser(
        "worker", help="serve sandboxed model workers to gateways on other hosts (mutual TLS)"
    ).add_subparsers(dest="worker_command", required=True)
    p = worker.add_parser(
        "serve",
        help="run the configuration's local models as sandboxed workers and serve them over mutual TLS"
        " (worker_host: cert_file, key_file, gateway_ca_file)",
    )
    add_config(p)
    p.add_argument(
        "--listen", required=True, metavar="HOST:PORT", help="address to listen on, e.g. 0.0.0.0:7443"
    )
    p.add_argument(
        "--drain-s",
        type=float,
        default=50.0,
        help="on SIGTERM, how long requests in flight may finish (gateways send nothing new meanwhile);"
        " keep it under the pod's terminationGracePeriodSeconds (default: 50)",
    )


def run_worker(args: argparse.Namespace, load_config: ConfigLoader) -> int:
    from sandbox.remote.client import split_host_port

    config = load_config(args.config)
    configure_logging(config.server.log_level, config.server.log_format)
    try:
        host, port = split_host_port(args.listen)
    except ValueError as exc:
        raise ConfigError(f"--listen {args.listen!r}: expected HOST:PORT") from exc
    if not 0 <= port < 65536 or not host:
        raise ConfigError(f"--listen {args.listen!r}: expected HOST:PORT")
    asyncio.run(_serve(config, host, port, max(0.0, args.drain_s)))
    return 0


async def _serve(config: Config, host: str, port: int, drain_s: float) -> None:
    from gateway.modelregistry import all_models
    from gateway.runtime import build_local_workers, build_pool, check_sandbox_host, sandbox_settings
    from sandbox.remote.host import WorkerHost
    from sandbox.remote.tls import host_context
    from sandbox.spawner import close_fork_servers

    wh = config.worker_host
    if wh.cert_file is None or wh.key_file is None or wh.gateway_ca_file is None:
        raise ConfigError("worker serve needs worker_host: cert_file, key_file and gateway_ca_file")
    tls = host_context(wh.cert_file, wh.key_file, wh.gateway_ca_file)
    models = [m for m in all_models(config) if m.kind in ("transformers", "echo")]
    if not models:
        raise ConfigError("worker serve: the configuration has no local models (kind transformers or echo)")
    check_sandbox_host(sandbox_settings(config))
    (config.state_dir / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
    pool = build_pool(config, models, build_local_workers(config, models, _log_event))
    server = WorkerHost(pool.models, tls, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await pool.start()
    try:
        await server.start()
        print(
            f"llmos worker host serving {', '.join(m.name for m in models)} on {host}:{server.port}",
            flush=True,
        )
        await stop.wait()
    finally:
        await server.stop(drain_s=drain_s)
        await pool.stop()
        await close_fork_servers()


def _log_event(event: Any) -> None:
    log.info("worker event: %s", event)
