"""The model pool with real (echo) workers: load on demand, true-LRU eviction under a budget,
pinned and busy models kept, admission timeout, idle unload."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gateway.errors import WorkerUnavailable
from gateway.types import ChatMessage, DoneEvent, GenerateRequest, GenerationParams, TokenEvent
from sandbox.client import ModelWorker, WorkerSpec
from sandbox.events import WorkerEvent
from sandbox.inventory import Device, Inventory
from sandbox.lifecycle import ManagedModel, ModelPool, place_workers
from sandbox.placement import ModelNeed, PlacementError

MiB = 2**20
GiB = 2**30


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


def test_stop_cancelled_while_it_waits_still_stops_the_workers_and_stays_cancelled(tmp_path: Path) -> None:
    a = managed(tmp_path, "a", 100, pinned=True)
    pool = ModelPool(cpu(1000), [a])

    async def scenario() -> None:
        await pool.start()
        assert await ask(a, "hello") == "hello"
        pid = a.worker.pid
        stopping = asyncio.get_running_loop().create_task(pool.stop())
        await asyncio.sleep(0)  # stop() is waiting for the idle-unload task to end
        stopping.cancel()
        await asyncio.wait({stopping}, timeout=30)
        assert stopping.cancelled()  # the cancel was not swallowed
        assert a.worker.state == "stopped" and pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # and the worker process is gone anyway

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


def refused_scenario(pool: ModelPool, model: ManagedModel, match: str) -> list[WorkerEvent]:
    """The pool starts; ``model`` is refused (state, error, event) and the others serve."""
    events: list[WorkerEvent] = []
    model.worker._on_event = events.append  # what the gateway records in the audit trail

    async def scenario() -> None:
        await pool.start()
        try:
            assert model.state == "refused" and not model.loaded
            with pytest.raises(PlacementError, match=match) as err:
                await ask(model, "x")
            assert err.value.code == "placement_failed"
            assert pool.status()["models"][model.name]["state"] == "refused"
            assert model.last_error is not None and match in model.last_error
            assert all(w.state == "stopped" and w.pid is None for w in model.workers)  # nothing started
            for other in pool.models.values():
                if other is not model:
                    assert await ask(other, "fine") == "fine"
        finally:
            await pool.stop()

    asyncio.run(scenario())
    return events


def test_a_model_larger_than_every_device_is_refused_and_the_rest_serve(tmp_path: Path) -> None:
    huge = managed(tmp_path, "huge", 4000, pinned=False)
    pool = ModelPool(cpu(1000), [huge, managed(tmp_path, "small", 100)])
    events = refused_scenario(pool, huge, "needs")
    assert events == [WorkerEvent("refused", "huge", ("placement_failed", "model_too_large"))]


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


def held_request(n: int) -> GenerateRequest:
    """A long echo answer, read one piece at a time by the test: the request stays in flight."""
    words = " ".join(f"w{i}" for i in range(200))
    return GenerateRequest(
        id=f"held-{n}", params=GenerationParams(max_tokens=256), messages=(ChatMessage("user", words),)
    )


def test_replicas_share_requests_by_least_outstanding(tmp_path: Path) -> None:
    model = managed(tmp_path, "r", 100, replicas=3)
    pool = ModelPool(cpu(1000), [model], admission_timeout_s=5)

    async def scenario() -> None:
        await pool.start()
        try:
            await asyncio.gather(*(w.wait_ready(60) for w in model.workers))
            pids = {w.pid for w in model.workers}
            assert len(pids) == 3 and None not in pids, "three workers, three processes"
            status = pool.status()
            assert status["models"]["r"]["replicas"] == 3
            assert status["devices"][0]["used_bytes"] == 300 * MiB  # each replica counts its memory
            streams = [model.generate(held_request(n)) for n in range(6)]
            for n, stream in enumerate(streams):
                await anext(stream)
                inflight = [r["outstanding"] for r in model.replica_status()]
                # each new request went to a least loaded replica: the counts never differ by 2
                assert sum(inflight) == n + 1 and max(inflight) - min(inflight) <= 1, inflight
            assert [r["outstanding"] for r in model.replica_status()] == [2, 2, 2]
            finish = streams.pop(1)  # one replica frees up: the next request goes there
            freed = [r["outstanding"] for r in model.replica_status()]
            async for _ in finish:
                pass
            after = [r["outstanding"] for r in model.replica_status()]
            assert sum(after) == 5 and sum(freed) == 6
            idle = after.index(1)
            extra = model.generate(held_request(99))
            await anext(extra)
            assert model.replica_status()[idle]["outstanding"] == 2
            for stream in [*streams, extra]:
                async for _ in stream:
                    pass
            assert [r["outstanding"] for r in model.replica_status()] == [0, 0, 0]
            # sequential requests on idle replicas take them in turn, not always the first
            served = set()
            for n in range(3):
                stream = model.generate(held_request(100 + n))
                await anext(stream)
                served.add(next(r["replica"] for r in model.replica_status() if r["outstanding"]))
                async for _ in stream:
                    pass
            assert served == {0, 1, 2}
        finally:
            await pool.stop()
        assert all(w.state == "stopped" for w in model.workers)

    asyncio.run(scenario())


def test_replicas_load_and_unload_together(tmp_path: Path) -> None:
    two = managed(tmp_path, "two", 300, pinned=False, replicas=2)
    big = managed(tmp_path, "big", 600, pinned=False)
    pool = ModelPool(cpu(1000), [two, big], admission_timeout_s=5)

    async def scenario() -> None:
        await pool.start()
        try:
            assert await ask(two, "x") == "x"
            assert len(pool.allocations) == 2 and all(w.state != "stopped" for w in two.workers)
            assert await ask(big, "y") == "y"  # 600 + 2 x 300 > 1000: both replicas go
            assert not two.loaded and all(w.state == "stopped" for w in two.workers)
            assert pool.status()["models"]["two"]["replicas"] == 0
            assert two.evictions == 1
        finally:
            await pool.stop()

    asyncio.run(scenario())


def test_replicas_that_cannot_all_fit_are_refused(tmp_path: Path) -> None:
    wide = managed(tmp_path, "r", 600, replicas=2)  # pinned: the gateway still starts
    pool = ModelPool(cpu(1000), [wide, managed(tmp_path, "small", 100)])
    assert len(refused_scenario(pool, wide, "replica")) == 1


def test_a_replica_has_its_own_log_file(tmp_path: Path) -> None:
    model = managed(tmp_path, "r", 100, replicas=2)
    logs = [w.spec.log_path for w in model.workers]
    assert logs == [tmp_path / "r.log", tmp_path / "r.r1.log"]


def test_placed_workers_get_their_gpus_and_shard_limits(tmp_path: Path) -> None:
    """Replicas placed on a simulated 3 x 10 GiB machine: one sharded, the worker's arguments
    carry its local max_memory, which the worker parses back."""
    from sandbox.placement import PlacementPolicy, place
    from sandbox.worker import parse_args

    inventory = Inventory.of(*(Device.gpu(n, 10 * GiB, reserve_fraction=0.0) for n in range(3)))
    model = managed(tmp_path, "big", 12 * 1024, replicas=2)
    need = ModelNeed("big", 12 * GiB, replicas=2, device_kind="cuda")
    placements = place(inventory, [], need, PlacementPolicy(shard_overhead_bytes=GiB))
    place_workers(model.workers, placements)
    specs = [w.spec for w in model.workers]
    assert [s.gpus for s in specs] == [p.gpu_indices for p in placements]
    assert all(len(s.gpus) >= 2 and s.max_memory for s in specs), specs
    assert set(specs[0].gpus) | set(specs[1].gpus) == {0, 1, 2}
    for spec, placement in zip(specs, placements, strict=True):
        args = parse_args(spec.worker_args(3))
        assert args.max_memory == placement.max_memory()
        assert sorted(args.max_memory) == list(range(len(spec.gpus)))  # local indices, not physical
        assert sum(args.max_memory.values()) == 12 * GiB + len(spec.gpus) * GiB


def test_a_single_gpu_replica_gets_no_shard_limits(tmp_path: Path) -> None:
    from sandbox.placement import place

    inventory = Inventory.of(*(Device.gpu(n, 10 * GiB, reserve_fraction=0.0) for n in range(2)))
    model = managed(tmp_path, "small", 1024, replicas=2)
    place_workers(
        model.workers, place(inventory, [], ModelNeed("small", GiB, replicas=2, device_kind="cuda"))
    )
    assert [w.spec.gpus for w in model.workers] == [(0,), (1,)]  # one replica per GPU
    assert all(w.spec.max_memory is None for w in model.workers)
    assert "--max-memory" not in model.workers[0].spec.worker_args(3)
