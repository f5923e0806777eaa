"""`llmos sandbox check`: which isolation layers this host offers, and which a real worker got.

It probes the host (nothing changes in the calling process), then starts an ``echo`` worker with
the configured ``sandbox`` settings, exactly as ``llmos serve`` would, and prints the report from
its ``ready`` frame. Exit status: 0 when the worker started (in strict mode: with every required
layer), 1 when it refused or failed to start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.errors import WorkerUnavailable

ConfigLoader = Callable[[Path | None], Config]


def add_sandbox_commands(sub: Any, add_config: Callable[[argparse.ArgumentParser], None]) -> None:
    sandbox = sub.add_parser("sandbox", help="model worker isolation").add_subparsers(
        dest="sandbox_command", required=True
    )
    p = sandbox.add_parser(
        "check", help="print the isolation layers this host supports and those a real (echo) worker gets"
    )
    add_config(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")


async def _start_echo_worker(settings: Any, log_path: Path) -> tuple[Any, str | None]:
    from sandbox.client import ModelWorker, WorkerSpec

    worker = ModelWorker(
        WorkerSpec(
            name="sandbox-check", kind="echo", log_path=log_path, start_timeout_s=60.0, sandbox=settings
        )
    )
    await worker.start()
    error = None
    try:
        await worker.wait_ready(60)
    except WorkerUnavailable:
        error = worker.last_error or "the worker did not start"
    finally:
        await worker.stop()
    return worker.isolation, error


def _table(rows: list[tuple[str, str, str]]) -> str:
    width = max(len(r[0]) for r in rows)
    state = max(len(r[1]) for r in rows)
    return "\n".join(f"  {a:<{width}}  {b:<{state}}  {c}" for a, b, c in rows)


def run_sandbox(args: argparse.Namespace, load_config: ConfigLoader) -> int:
    from gateway.runtime import sandbox_settings
    from sandbox.isolation.probe import probe_host, support_from

    settings = sandbox_settings(load_config(args.config))
    support = support_from(probe_host())
    with tempfile.TemporaryDirectory(prefix="llmos-sandbox-check-") as tmp:
        report, error = asyncio.run(_start_echo_worker(settings, Path(tmp) / "worker.log"))
    if args.json:
        print(
            json.dumps(
                {
                    "host": [
                        {"layer": s.layer, "supported": s.supported, "detail": s.detail} for s in support
                    ],
                    "worker": report.to_dict() if report is not None else None,
                    "strict": settings.strict,
                    "optional": list(settings.optional),
                    "error": error,
                },
                indent=2,
            )
        )
        return 1 if error else 0
    print("host support:")
    print(_table([(s.layer, "yes" if s.supported else "NO", s.detail) for s in support]))
    if report is not None:
        print("an echo worker got:")
        print(_table([(layer.name, layer.status, layer.detail) for layer in report.layers]))
        for note in report.notes:
            print(f"  note: {note}")
    mode = "strict" if settings.strict else "not strict: missing layers are logged as warnings"
    optional = f" (optional: {', '.join(settings.optional)})" if settings.optional else ""
    print(f"mode: {mode}{optional}")
    if error:
        print(f"the worker did not start: {error}")
        return 1
    return 0
