"""The model pool with real (echo) workers: load on demand, true-LRU eviction under a budget,
pinned and busy models kept, admission timeout, idle unload."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.errors import WorkerUnavailable
from gateway.types import ChatMessage, DoneEvent, GenerateRequest, GenerationParams, TokenEvent
from sandbox.client import ModelWorker, WorkerSpec
from sandbox.inventory import Device, Inventory
from sandbox.lifecycle import ManagedModel, ModelPool
from sandbox.placement import PlacementError

MiB = 2**20


def chat(text: str) -> GenerateRequest:
    return GenerateRequest(
        id="r", params=GenerationParams(max_tokens=64), messages=(ChatMessage("user", text),)
    )


async def ask(model: ManagedModel, text: str) -> str:
    events = [e async for e in model.generate(chat(text))]
    assert isinstance(events[-1], DoneEvent)
    return "".join(e.text for e in events if isinstance(e, TokenEvent))


def managed(tmp: Path, name: str, memory_mib: int, **options: object) -> ManagedModel:
    spec = WorkerSpec(name=name, kind="echo", log_path=tmp / f"{name}.log", restart_backoff_initial_s=0.1)
    return ManagedModel(ModelWorker(spec), memory_bytes=memory_mib * MiB, **options)  # type: ignore[arg-type]


def cpu(budget_mib: int) -> Inventory:
    return Inventory.of(Device.cpu(8192 * MiB, budget_mib * MiB))


def test_two_models_larger_than_the_budget_swap_by_lru(tmp_path: Path) -> None:
    a = managed(tmp_path, "a", 600, pinned=False)
    b = managed(tmp_path, "b", 600, pinned=False)
    c = managed(tmp_path, "c", 300, pinned=False)
    pool = ModelPool(cpu(1000), [a, b, c], admission_timeout_s=5)

    async def scenario() -> None:
        await pool.start()
        try:
            assert pool.status()["models"]["a"]["state"] == "unloaded"
            assert await ask(a, "one") == "one"
            assert a.loaded and not b.loaded
            assert await ask(c, "small") == "small"  # 600 + 300 fit: nothing evicted
            assert a.loaded and c.loaded and pool.evictions == 0
            assert await ask(b, "two") == "two"  # a is the least recently used: out it goes
            assert b.loaded and c.loaded and not a.loaded
            for n in range(3):  # alternating traffic: each swap evicts the other big model
                assert await ask(a, f"a{n}") == f"a{n}"
                assert await ask(b, f"b{n}") == f"b{n}"
            status = pool.status()
            assert status["evictions"] >= 7
            assert status["models"]["a"]["evictions"] >= 3 and status["models"]["a"]["loads"] == 4
            device = status["devices"][0]
            assert device["budget_bytes"] == 1000 * MiB
            assert device["used_bytes"] == 900 * MiB and set(device["models"]) == {"b", "c"}
        finally:
            await pool.stop()

    asyncio.run(scenario())


def test_pinned_models_are_never_evicted_and_a_request_that_cannot_fit_times_out(tmp_path: Path) -> None:
    pinned = managed(tmp_path, "pinned", 600, pinned=True)
    other = managed(tmp_path, "other", 600, pinned=False)
    pool = ModelPool(cpu(1000), [pinned, other], admission_timeout_s=0.5)

    async def scenario() -> None:
        await pool.start()
        try:
            await pinned.worker.wait_ready(60)
            with pytest.raises(WorkerUnavailable) as refused:
                await ask(other, "hi")
            assert refused.value.code == "model_capacity" and refused.value.retry_after >= 1
            assert pinned.loaded and not other.loaded
            assert await ask(pinned, "still") == "still"
        finally:
            await pool.stop()

    asyncio.run(scenario())


def test_a_busy_model_is_not_evicted_until_its_request_ends(tmp_path: Path) -> None:
    a = managed(tmp_path, "a", 600, pinned=False)
    b = managed(tmp_path, "b", 600, pinned=False)
    pool = ModelPool(cpu(1000), [a, b], admission_timeout_s=20)

    async def scenario() -> None:
        await pool.start()
        try:
            stream = a.generate(chat("a long answer in many words"))
            first = await stream.__anext__()  # a is busy while this stream is open
            assert isinstance(first, TokenEvent)
            waiting = asyncio.create_task(ask(b, "after"))
            await asyncio.sleep(0.5)
            assert not waiting.done() and a.loaded and not b.loaded
            rest = [e async for e in stream]  # a's request ends: b may now evict it
            assert isinstance(rest[-1], DoneEvent)
            assert await asyncio.wait_for(waiting, 30) == "after"
            assert b.loaded and not a.loaded
        finally:
            await pool.stop()

    asyncio.run(scenario())


def test_an_idle_model_is_unloaded_after_its_ttl(tmp_path: Path) -> None:
    a = managed(tmp_path, "a", 100, pinned=False, idle_unload_s=0.5)
    pool = ModelPool(cpu(1000), [a])

    async def scenario() -> None:
        await pool.start()
        try:
            assert await ask(a, "hello") == "hello"
            assert a.loaded
            for _ in range(50):
                if not a.loaded and a.worker.state == "stopped":
                    break
                await asyncio.sleep(0.1)
            assert not a.loaded and a.worker.state == "stopped"
            assert await ask(a, "again") == "again"  # loaded again on demand
        finally:
            await pool.stop()

    asyncio.run(scenario())


def test_a_model_larger_than_every_device_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(PlacementError, match="needs"):
        ModelPool(cpu(1000), [managed(tmp_path, "huge", 4000, pinned=False)])


def test_a_request_arriving_while_its_model_is_evicted_waits_and_reloads_it(tmp_path: Path) -> None:
    a = managed(tmp_path, "a", 600, pinned=False)
    b = managed(tmp_path, "b", 600, pinned=False)
    pool = ModelPool(cpu(1000), [a, b], admission_timeout_s=30)

    async def scenario() -> None:
        await pool.start()
        try:
            assert await ask(a, "first") == "first"
            evicting = asyncio.create_task(ask(b, "b"))  # evicts a
            while not a.unloading:
                await asyncio.sleep(0.001)
            assert await ask(a, "again") == "again"  # not worker_stopped: it waits, then reloads
            assert await evicting == "b"
        finally:
            await pool.stop()

    asyncio.run(scenario())
