"""A zero-downtime model update with real transformers workers: requests fired throughout the
update all succeed, the new signed version serves afterwards, and a bad new version leaves the
old one serving."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.types import ChatMessage, DoneEvent, GenerateRequest, GenerationParams
from sandbox.client import ModelWorker, WorkerSpec
from sandbox.demo_model import build_demo_model
from sandbox.inventory import Device, Inventory
from sandbox.lifecycle import ManagedModel, ModelPool, UpdateFailed
from sandbox.manifest import ManifestError, build_manifest, read_manifest, sign, write_manifest

KEY = Ed25519PrivateKey.generate()
MiB = 2**20


def signed_copy(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    write_manifest(dest, sign(build_manifest(dest), KEY))
    return dest


async def ask(model: ManagedModel, n: int) -> None:
    request = GenerateRequest(
        id=f"r{n}", params=GenerationParams(max_tokens=4), messages=(ChatMessage("user", f"hi {n}"),)
    )
    events = [e async for e in model.generate(request)]
    assert isinstance(events[-1], DoneEvent)


def pool_for(tmp_path: Path, model_dir: Path) -> tuple[ModelPool, ManagedModel]:
    spec = WorkerSpec(
        name="m",
        model_dir=model_dir,
        log_path=tmp_path / "m.log",
        threads=1,
        trusted_keys=(KEY.public_key(),),
    )
    model = ManagedModel(ModelWorker(spec), memory_bytes=300 * MiB)
    return ModelPool(Inventory.of(Device.cpu(8192 * MiB, 2048 * MiB)), [model]), model


def test_an_update_under_load_drops_nothing(demo_model_dir: Path, tmp_path: Path) -> None:
    v1 = signed_copy(demo_model_dir, tmp_path / "v1")
    build_demo_model(tmp_path / "v2-src", seed=1)
    v2 = signed_copy(tmp_path / "v2-src", tmp_path / "v2")
    pool, model = pool_for(tmp_path, v1)

    async def scenario() -> None:
        await pool.start()
        try:
            await model.worker.wait_ready(120)
            assert model.manifest_digest == read_manifest(v1).digest
            old_worker = model.worker
            done: list[int] = []
            stop = asyncio.Event()

            async def traffic(lane: int) -> None:
                n = 0
                while not stop.is_set():
                    await ask(model, lane * 1000 + n)  # any failure fails the test
                    done.append(n)
                    n += 1

            lanes = [asyncio.create_task(traffic(lane)) for lane in range(3)]
            await asyncio.sleep(0.5)
            digest = await pool.update("m", v2)
            before_switch = len(done)
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*lanes)
            assert digest == read_manifest(v2).digest == model.manifest_digest
            assert model.worker is not old_worker and old_worker.state == "stopped"
            assert before_switch > 0 and len(done) > before_switch  # served before and after
            assert pool.status()["devices"][0]["models"] == ["m"]  # the staging slot is gone
        finally:
            await pool.stop()

    asyncio.run(scenario())


def test_a_bad_new_version_leaves_the_old_one_serving(demo_model_dir: Path, tmp_path: Path) -> None:
    v1 = signed_copy(demo_model_dir, tmp_path / "v1")
    unsigned = tmp_path / "unsigned"
    shutil.copytree(demo_model_dir, unsigned)
    broken = signed_copy(demo_model_dir, tmp_path / "broken")
    (broken / "config.json").write_text('{"model_type": "nonsense"}')  # fails its manifest
    pool, model = pool_for(tmp_path, v1)

    async def scenario() -> None:
        await pool.start()
        try:
            await model.worker.wait_ready(120)
            serving = model.worker
            for bad in (unsigned, broken):
                with pytest.raises((UpdateFailed, ManifestError)):
                    await pool.update("m", bad)
                assert model.worker is serving and serving.state == "ready"
                await ask(model, 1)
            assert list(pool.allocations) == [("m", 0)]
        finally:
            await pool.stop()

    asyncio.run(scenario())


def test_a_request_answered_by_the_old_version_names_the_old_digest(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    """A request that started on v1 and ends after the switch is audited with v1's digest."""
    v1 = signed_copy(demo_model_dir, tmp_path / "v1")
    build_demo_model(tmp_path / "v2-src", seed=1)
    v2 = signed_copy(tmp_path / "v2-src", tmp_path / "v2")
    pool, model = pool_for(tmp_path, v1)
    d1, d2 = read_manifest(v1).digest, read_manifest(v2).digest

    async def scenario() -> None:
        await pool.start()
        try:
            await model.worker.wait_ready(120)
            held = GenerateRequest(
                id="held", params=GenerationParams(max_tokens=64), messages=(ChatMessage("user", "hello"),)
            )
            events = model.generate(held)
            await anext(events)  # answering on v1 now
            assert model.served_digest("held") == d1
            update = asyncio.create_task(pool.update("m", v2))
            while model.manifest_digest != d2:  # wait for the switch
                assert not update.done(), update
                await asyncio.sleep(0.05)
            assert model.served_digest("held") == d1  # still the version that answers it
            assert model.served_digest("another") == d2
            async for _ in events:
                pass
            assert await update == d2
            assert model.served_digest("held") == d2  # done: no longer tracked
        finally:
            await pool.stop()

    asyncio.run(scenario())
