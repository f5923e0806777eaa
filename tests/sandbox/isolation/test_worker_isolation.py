"""Real echo workers started through ModelWorker: the layers they report, and strict mode."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from gateway.errors import WorkerUnavailable
from sandbox.client import ModelWorker, WorkerSpec
from sandbox.isolation import SandboxSettings
from sandbox.isolation.probe import probe_host, support_from

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the layers are Linux only")


def spec(tmp_path: Path, sandbox: SandboxSettings, **kw: object) -> WorkerSpec:
    return WorkerSpec(
        name="echo",
        kind="echo",
        log_path=tmp_path / "worker.log",
        start_timeout_s=60.0,
        sandbox=sandbox,
        **kw,  # type: ignore[arg-type]
    )


def status_field(pid: int, name: str) -> str:
    line = next(
        ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith(name + ":")
    )
    return line.split(":", 1)[1].split()[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="as root every supported layer applies")
def test_an_echo_worker_reports_every_supported_layer_applied(tmp_path: Path) -> None:
    worker = ModelWorker(spec(tmp_path, SandboxSettings(), memory_limit_bytes=4 * 2**30))

    async def scenario() -> None:
        await worker.start()
        try:
            await worker.wait_ready(60)
            pid = worker.pid
            assert pid is not None
            assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
            assert status_field(pid, "Uid") == "65534"
            assert status_field(pid, "Seccomp") == "2"  # filter mode
            assert status_field(pid, "NoNewPrivs") == "1"
        finally:
            await worker.stop()

    asyncio.run(scenario())
    report = worker.isolation
    assert report is not None
    supported = {s.layer for s in support_from(probe_host())}
    for s in support_from(probe_host()):
        layer = report.layer(s.layer)
        assert layer is not None
        assert layer.applied == s.supported, layer
        assert layer.supported == s.supported
    assert supported == {layer.name for layer in report.layers}
    rlimits = report.layer("rlimits")
    assert rlimits is not None and f"as={4 * 2**30}" in rlimits.detail


def test_strict_mode_refuses_a_worker_missing_a_layer(tmp_path: Path) -> None:
    # As root, uid 0 keeps the worker root ("disabled"); as another user, no host lets a worker
    # lack the environment layer, so make strict refuse the one layer an ordinary user lacks.
    if os.geteuid() == 0:
        settings, layer = SandboxSettings(strict=True, uid=0), "uid (disabled"
    else:
        unsupported = [s.layer for s in support_from(probe_host()) if not s.supported]
        if not unsupported:
            pytest.skip("this host supports every layer for this user")
        settings, layer = SandboxSettings(strict=True), unsupported[0]
    worker = ModelWorker(spec(tmp_path, settings))

    async def scenario() -> None:
        await worker.start()
        try:
            with pytest.raises(WorkerUnavailable) as info:
                await worker.wait_ready(60)
            assert info.value.code == "worker_not_ready"
        finally:
            await worker.stop()

    asyncio.run(scenario())
    assert worker.last_error is not None
    assert "sandbox.strict: refusing to load the model" in worker.last_error
    assert layer in worker.last_error
    assert "sandbox.strict" in (tmp_path / "worker.log").read_text()


def test_strict_mode_serves_when_only_optional_layers_are_missing(tmp_path: Path) -> None:
    optional = tuple(s.layer for s in support_from(probe_host()) if not s.supported)
    worker = ModelWorker(spec(tmp_path, SandboxSettings(strict=True, optional=optional)))

    async def scenario() -> None:
        await worker.start()
        try:
            await worker.wait_ready(60)
        finally:
            await worker.stop()

    asyncio.run(scenario())
    assert worker.isolation is not None
    assert worker.isolation.missing(optional) == []
