"""Placement over simulated inventories (pure), and one CPU placement driven end to end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.types import DoneEvent, GenerateRequest, GenerationParams
from sandbox.client import ModelWorker, WorkerSpec
from sandbox.inventory import Device, GiB, Inventory, MiB, detect_inventory
from sandbox.placement import (
    Allocation,
    DeviceShare,
    LoadedModel,
    ModelNeed,
    Placement,
    PlacementError,
    PlacementPolicy,
    ReplicaLoad,
    device_usage,
    fits,
    format_bytes,
    free_bytes,
    max_memory_from_json,
    pick_replica,
    place,
    plan_eviction,
    used_bytes,
)

NO_OVERHEAD = PlacementPolicy(shard_overhead_bytes=0)


def gpus(*sizes_gib: int, cpu_gib: int | None = None, reserve: float = 0.0) -> Inventory:
    """GPUs cuda:0.. of these sizes (budget = size by default), and a CPU with this budget."""
    devices = [Device.gpu(i, s * GiB, reserve_fraction=reserve) for i, s in enumerate(sizes_gib)]
    if cpu_gib is not None:
        devices.append(Device.cpu(2 * cpu_gib * GiB, cpu_gib * GiB))
    return Inventory.of(*devices)


def used(model: str, replica: int = 0, **gib_by_device: int) -> Allocation:
    """``used("a", cuda_0=30)``: model a's replica holding 30 GiB on cuda:0."""
    return Allocation.on(model, replica, {k.replace("_", ":"): v * GiB for k, v in gib_by_device.items()})


def only(placements: Sequence[Placement]) -> Placement:
    assert len(placements) == 1
    return placements[0]


def devices_of(placements: Sequence[Placement]) -> list[tuple[str, ...]]:
    return [p.devices for p in placements]


def fill(inventory: Inventory, needs: Sequence[ModelNeed]) -> list[Allocation]:
    allocations: list[Allocation] = []
    for need in needs:
        allocations += [p.allocation() for p in place(inventory, allocations, need)]
    return allocations


EIGHT_H100 = gpus(*[80] * 8, reserve=0.1)  # budgets of 72 GiB


# --- single devices: best fit ---------------------------------------------------------------


def test_best_fit_packs_one_gpu_before_opening_the_next() -> None:
    allocations = fill(EIGHT_H100, [ModelNeed(f"m{i}", 36 * GiB) for i in range(16)])
    on = {a.model: a.shares[0].device_id for a in allocations}
    assert [on[f"m{i}"] for i in range(16)] == [f"cuda:{i // 2}" for i in range(16)]
    assert set(free_bytes(EIGHT_H100, allocations).values()) == {0}
    with pytest.raises(PlacementError, match=r"model m16 needs 36 GiB on cuda; .* cuda:0, has 0 MiB free"):
        place(EIGHT_H100, allocations, ModelNeed("m16", 36 * GiB, device_kind="cuda"))


def test_mixed_sizes_a_small_model_goes_on_the_small_card() -> None:
    inventory = gpus(80, 24, 24)
    first = only(place(inventory, [], ModelNeed("small", 20 * GiB)))
    assert first.devices == ("cuda:1",)
    second = only(place(inventory, [first.allocation()], ModelNeed("small2", 20 * GiB)))
    assert second.devices == ("cuda:2",)
    third = only(place(inventory, [first.allocation(), second.allocation()], ModelNeed("s3", 20 * GiB)))
    assert third.devices == ("cuda:0",)
    assert only(place(inventory, [], ModelNeed("mid", 30 * GiB))).devices == ("cuda:0",)


def test_best_fit_takes_the_tightest_hole() -> None:
    inventory = gpus(80, 80, 80)
    allocations = [used("a", cuda_0=50), used("b", cuda_1=65), used("c", cuda_2=10)]
    assert only(place(inventory, allocations, ModelNeed("n", 14 * GiB))).devices == ("cuda:1",)
    assert only(place(inventory, allocations, ModelNeed("n", 16 * GiB))).devices == ("cuda:0",)
    assert only(place(inventory, allocations, ModelNeed("n", 31 * GiB))).devices == ("cuda:2",)


def test_a_single_gpu_placement_gives_its_worker_env_and_max_memory() -> None:
    allocations = [used("a", cuda_0=72), used("b", cuda_1=72), used("c", cuda_2=72)]
    placement = only(place(EIGHT_H100, allocations, ModelNeed("m", 40 * GiB)))
    assert placement.devices == ("cuda:3",) and placement.gpu_indices == (3,)
    assert placement.cuda_visible_devices == "3"
    assert placement.max_memory() == {0: 40 * GiB}  # the worker sees its one GPU as cuda:0
    assert not placement.sharded and placement.kind == "cuda"


# --- replicas ------------------------------------------------------------------------------


def test_replicas_go_on_distinct_gpus() -> None:
    placements = place(EIGHT_H100, [], ModelNeed("m", 30 * GiB, replicas=4))
    assert [p.replica for p in placements] == [0, 1, 2, 3]
    assert devices_of(placements) == [("cuda:0",), ("cuda:1",), ("cuda:2",), ("cuda:3",)]


def test_anti_affinity_beats_best_fit() -> None:
    inventory = gpus(80, 80)
    placements = place(inventory, [used("other", cuda_0=60)], ModelNeed("m", 10 * GiB, replicas=2))
    assert devices_of(placements) == [("cuda:0",), ("cuda:1",)]  # best fit alone would stack both on 0


def test_more_replicas_than_gpus_share_only_when_every_gpu_has_one() -> None:
    placements = place(EIGHT_H100, [], ModelNeed("m", 30 * GiB, replicas=10))
    assert len({p.devices for p in placements[:8]}) == 8
    assert devices_of(placements[8:]) == [("cuda:0",), ("cuda:1",)]


def test_scaling_up_numbers_new_replicas_after_the_old_and_avoids_their_gpus() -> None:
    allocations = [used("m", 0, cuda_0=30), used("m", 1, cuda_1=30), used("x", cuda_2=60)]
    placement = only(place(EIGHT_H100, allocations, ModelNeed("m", 30 * GiB)))
    assert (placement.replica, placement.devices) == (2, ("cuda:3",))


def test_replicas_are_all_or_nothing() -> None:
    inventory = gpus(40, 40)
    with pytest.raises(PlacementError, match=r"needs 30 GiB \(replica 3 of 3\)") as err:
        place(inventory, [], ModelNeed("m", 30 * GiB, replicas=3, allow_sharding=False))
    assert err.value.code == "placement_failed" and err.value.model == "m"


# --- sharding ------------------------------------------------------------------------------


def test_a_200_gib_model_is_sharded_over_three_gpus_with_local_max_memory_keys() -> None:
    allocations = [used("a", cuda_0=72), used("b", cuda_2=72), used("c", cuda_5=70)]
    placement = only(place(EIGHT_H100, allocations, ModelNeed("big", 200 * GiB)))
    assert placement.sharded and placement.devices == ("cuda:1", "cuda:3", "cuda:4")
    assert placement.cuda_visible_devices == "1,3,4"
    memory = placement.max_memory()
    assert sorted(memory) == [0, 1, 2]  # local indices inside the worker, not 1, 3, 4
    assert sum(memory.values()) == 200 * GiB + 3 * GiB  # the model plus 1 GiB per GPU
    assert all(b <= 72 * GiB for b in memory.values())
    # JSON turns the keys into strings; transformers needs ints back
    assert max_memory_from_json(json.loads(json.dumps(memory))) == memory


def test_sharding_takes_the_fewest_gpus_then_the_tightest_set() -> None:
    inventory = gpus(72, 72, 72, 72)
    allocations = [used("a", cuda_1=22), used("b", cuda_2=12)]  # free 72, 50, 60, 72
    placement = only(place(inventory, allocations, ModelNeed("m", 100 * GiB)))
    assert placement.devices == ("cuda:1", "cuda:2")  # 50 + 60 = 110 is the smallest pair >= 102
    shares = [s.bytes for s in placement.shares]
    assert sum(shares) == 102 * GiB
    assert abs(shares[0] / shares[1] - 50 / 60) < 1e-9  # in proportion to free memory


def test_fragmented_free_memory_fits_only_by_sharding() -> None:
    inventory = gpus(80, 80, 80, 80)
    allocations = [used(f"x{i}", **{f"cuda_{i}": 50}) for i in range(4)]  # 30 GiB free on each
    placement = only(place(inventory, allocations, ModelNeed("m", 60 * GiB)))
    assert placement.devices == ("cuda:0", "cuda:1", "cuda:2")  # 2 x 30 < 60 + 2 x 1
    assert placement.max_memory() == {0: 21 * GiB, 1: 21 * GiB, 2: 21 * GiB}
    with pytest.raises(PlacementError, match="sharding over GPUs is off for this model"):
        place(inventory, allocations, ModelNeed("m", 60 * GiB, allow_sharding=False))


def test_a_model_too_big_even_to_shard_gets_a_clear_error() -> None:
    inventory = gpus(80, 80, 80, 80)
    allocations = [used(f"x{i}", **{f"cuda_{i}": 50}) for i in range(4)]
    with pytest.raises(PlacementError) as err:
        place(inventory, allocations, ModelNeed("huge", 200 * GiB, device_kind="cuda"))
    assert str(err.value) == (
        "model huge needs 200 GiB on cuda; the device with the most free memory, cuda:0, has 30 GiB "
        "free of a 80 GiB budget and sharding over the free GPUs gives at most 116 GiB (1 GiB overhead "
        "per GPU). Evict idle models, lower its replicas or memory estimate, or raise the device budgets."
    )
    assert (err.value.need_bytes, err.value.largest_free_bytes) == (200 * GiB, 30 * GiB)
    assert err.value.shard_capacity_bytes == 116 * GiB


def test_sharded_replicas_use_disjoint_gpu_sets() -> None:
    placements = place(EIGHT_H100, [], ModelNeed("big", 100 * GiB, replicas=3))
    sets = [set(p.devices) for p in placements]
    assert all(len(s) == 2 for s in sets)
    assert sets[0].isdisjoint(sets[1]) and sets[1].isdisjoint(sets[2]) and sets[0].isdisjoint(sets[2])


def test_without_exhaustive_search_the_largest_gpus_are_taken() -> None:
    inventory = gpus(*[40] * 6)
    allocations = [used("x", cuda_0=20), used("y", cuda_3=5)]
    policy = PlacementPolicy(shard_overhead_bytes=0, exhaustive_limit=1)
    placement = only(place(inventory, allocations, ModelNeed("m", 70 * GiB), policy))
    assert placement.devices == ("cuda:1", "cuda:2")  # the two largest (ties by index)
    exhaustive = only(place(inventory, allocations, ModelNeed("m", 70 * GiB), NO_OVERHEAD))
    assert exhaustive.devices == ("cuda:1", "cuda:3")  # free 20 + 35, 20 + 40 too small; 40 + 35 the tightest


# --- device kinds --------------------------------------------------------------------------


def test_auto_prefers_a_gpu_then_sharding_then_the_cpu() -> None:
    inventory = gpus(40, 40, cpu_gib=200)
    assert only(place(inventory, [], ModelNeed("m", 30 * GiB))).devices == ("cuda:0",)
    assert only(place(inventory, [], ModelNeed("m", 60 * GiB))).devices == ("cuda:0", "cuda:1")
    unsharded = only(place(inventory, [], ModelNeed("m", 60 * GiB, allow_sharding=False)))
    assert unsharded.devices == ("cpu",)
    assert only(place(inventory, [], ModelNeed("m", 100 * GiB))).devices == ("cpu",)


def test_cpu_and_cuda_are_never_crossed() -> None:
    inventory = gpus(80, cpu_gib=8)
    assert only(place(inventory, [], ModelNeed("m", 4 * GiB, device_kind="cpu"))).devices == ("cpu",)
    with pytest.raises(PlacementError, match=r"on cpu; the device with the most free memory, cpu"):
        place(inventory, [], ModelNeed("m", 10 * GiB, device_kind="cpu"))
    with pytest.raises(PlacementError, match="no cuda device"):
        place(gpus(cpu_gib=500), [], ModelNeed("m", 10 * GiB, device_kind="cuda"))


def test_a_cpu_only_inventory() -> None:
    inventory = gpus(cpu_gib=64)
    placements = place(inventory, [], ModelNeed("m", 20 * GiB, replicas=3))
    assert devices_of(placements) == [("cpu",)] * 3
    assert placements[0].cuda_visible_devices == "" and placements[0].gpu_indices == ()
    assert placements[0].max_memory() == {"cpu": 20 * GiB}
    with pytest.raises(PlacementError, match=r"needs 20 GiB \(replica 4 of 4\) on auto"):
        place(inventory, [], ModelNeed("m", 20 * GiB, replicas=4))


def test_an_empty_inventory_has_no_device() -> None:
    with pytest.raises(PlacementError, match="this machine has no cuda or cpu device"):
        place(Inventory(()), [], ModelNeed("m", GiB))


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"name": "", "memory_bytes": 1}, "name"),
        ({"name": "m", "memory_bytes": 0}, "memory_bytes"),
        ({"name": "m", "memory_bytes": 1, "replicas": 0}, "replicas"),
        ({"name": "m", "memory_bytes": 1, "device_kind": "tpu"}, "device_kind"),
    ],
)
def test_bad_needs_are_refused(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ModelNeed(**kwargs)  # type: ignore[arg-type]


def test_bad_placements_and_allocations_are_refused() -> None:
    with pytest.raises(ValueError, match="all GPUs or the CPU alone"):
        Placement("m", 0, (DeviceShare("cuda:0", 1), DeviceShare("cpu", 1)))
    with pytest.raises(ValueError, match="ascending"):
        Placement("m", 0, (DeviceShare("cuda:2", 1), DeviceShare("cuda:0", 1)))
    with pytest.raises(ValueError, match="one share per device"):
        Allocation("m", 0, ())
    with pytest.raises(ValueError, match="negative"):
        DeviceShare("cpu", -1)
    with pytest.raises(ValueError, match="does not have"):
        used_bytes(gpus(80), [used("m", cuda_1=1)])


@pytest.mark.parametrize("bad", [{"cuda:0": 1}, {"0": -1}, {"0": "30GiB"}, {"1": True}])
def test_max_memory_from_json_refuses_what_transformers_would_misread(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="max_memory"):
        max_memory_from_json(bad)


def test_bytes_are_formatted_for_people() -> None:
    assert [format_bytes(n) for n in (80 * GiB, 3 * GiB // 2, 512 * MiB, 0)] == [
        "80 GiB",
        "1.5 GiB",
        "512 MiB",
        "0 MiB",
    ]


# --- accounting ----------------------------------------------------------------------------


def test_device_usage_lists_budgets_use_and_models() -> None:
    inventory = gpus(80, 24, cpu_gib=32)
    allocations = [
        used("b", 0, cuda_0=30),
        used("a", 1, cuda_0=10, cuda_1=10),
        used("a", 0, cpu=4),
        used("c", cuda_1=20),
    ]
    rows = device_usage(inventory, allocations)
    assert [(r.device_id, r.kind, r.budget_bytes, r.used_bytes, r.free_bytes) for r in rows] == [
        ("cuda:0", "cuda", 80 * GiB, 40 * GiB, 40 * GiB),
        ("cuda:1", "cuda", 24 * GiB, 30 * GiB, 0),
        ("cpu", "cpu", 32 * GiB, 4 * GiB, 28 * GiB),
    ]
    assert [(m.model, m.replica, m.bytes) for m in rows[0].models] == [("a", 1, 10 * GiB), ("b", 0, 30 * GiB)]
    assert rows[1].over_budget and not rows[0].over_budget


# --- eviction ------------------------------------------------------------------------------


def lru_state() -> tuple[Inventory, list[Allocation]]:
    inventory = gpus(80)
    allocations = [used("a", cuda_0=30), used("b", cuda_0=30), used("c", cuda_0=20)]
    return inventory, allocations


def test_nothing_is_evicted_when_the_model_fits() -> None:
    inventory, allocations = lru_state()
    loaded = [LoadedModel("a", 1.0), LoadedModel("b", 2.0)]
    assert plan_eviction(gpus(200), allocations, ModelNeed("n", 100 * GiB), loaded) == []
    assert plan_eviction(inventory, allocations[:2], ModelNeed("n", 20 * GiB), loaded) == []


def test_eviction_takes_the_least_recently_used_first_and_no_more_than_needed() -> None:
    inventory, allocations = lru_state()
    loaded = [LoadedModel("c", 3.0), LoadedModel("a", 1.0), LoadedModel("b", 2.0)]
    assert plan_eviction(inventory, allocations, ModelNeed("n", 25 * GiB), loaded) == ["a"]
    assert plan_eviction(inventory, allocations, ModelNeed("n", 40 * GiB), loaded) == ["a", "b"]
    assert plan_eviction(inventory, allocations, ModelNeed("n", 80 * GiB), loaded) == ["a", "b", "c"]
    assert plan_eviction(inventory, allocations, ModelNeed("n", 81 * GiB), loaded) is None


def test_pinned_and_busy_models_are_never_evicted() -> None:
    inventory, allocations = lru_state()
    loaded = [LoadedModel("a", 1.0, pinned=True), LoadedModel("b", 2.0, busy=True), LoadedModel("c", 3.0)]
    assert plan_eviction(inventory, allocations, ModelNeed("n", 20 * GiB), loaded) == ["c"]
    assert plan_eviction(inventory, allocations, ModelNeed("n", 30 * GiB), loaded) is None


def test_models_without_flags_or_memory_are_not_candidates() -> None:
    inventory, allocations = lru_state()
    # "c" is loading (no LoadedModel: not evictable); "z" holds nothing
    loaded = [LoadedModel("z", 0.0), LoadedModel("a", 1.0), LoadedModel("b", 2.0)]
    assert plan_eviction(inventory, allocations, ModelNeed("n", 25 * GiB), loaded) == ["a"]
    assert plan_eviction(inventory, allocations, ModelNeed("n", 70 * GiB), loaded) is None


def test_a_model_is_not_evicted_to_make_room_for_its_own_replicas() -> None:
    inventory, allocations = lru_state()
    loaded = [LoadedModel("a", 1.0), LoadedModel("b", 2.0)]
    assert plan_eviction(inventory, allocations, ModelNeed("a", 25 * GiB), loaded) == ["b"]


def test_an_old_model_on_a_gpu_that_does_not_help_is_spared() -> None:
    inventory = gpus(80, 40)
    allocations = [used("b", cuda_0=40), used("a", cuda_1=20), used("q", cuda_1=20)]
    loaded = [LoadedModel("a", 1.0), LoadedModel("b", 2.0), LoadedModel("q", 3.0, pinned=True)]
    need = ModelNeed("n", 60 * GiB, allow_sharding=False)
    assert plan_eviction(inventory, allocations, need, loaded) == ["b"]  # a is older, but on cuda:1
    # sharded, the oldest helps: 40 free on cuda:0 plus a's 20 on cuda:1 hold 58 + 2 x 1 GiB overhead
    assert plan_eviction(inventory, allocations, ModelNeed("n", 58 * GiB), loaded) == ["a"]


def test_duplicate_loaded_names_are_a_bug() -> None:
    inventory, allocations = lru_state()
    with pytest.raises(ValueError, match="distinct"):
        plan_eviction(
            inventory, allocations, ModelNeed("n", 90 * GiB), [LoadedModel("a", 1), LoadedModel("a", 2)]
        )


# --- load balancing ------------------------------------------------------------------------


def test_the_least_loaded_ready_replica_is_picked() -> None:
    replicas = [ReplicaLoad(0, 3), ReplicaLoad(1, 1), ReplicaLoad(2, 0, ready=False), ReplicaLoad(3, 2)]
    assert pick_replica(replicas) == 1
    assert pick_replica([ReplicaLoad(0, 0, ready=False)]) is None
    assert pick_replica([]) is None
    with pytest.raises(ValueError, match="outstanding"):
        ReplicaLoad(0, -1)


def test_ties_go_round_in_id_order() -> None:
    replicas = [ReplicaLoad(7, 1), ReplicaLoad(2, 1), ReplicaLoad(5, 4), ReplicaLoad(4, 1)]
    assert [pick_replica(replicas, rotation=n) for n in range(5)] == [2, 4, 7, 2, 4]


# --- properties ----------------------------------------------------------------------------


@st.composite
def states(draw: st.DrawFn) -> tuple[Inventory, list[Allocation], list[LoadedModel]]:
    """A random inventory (0-6 GPUs, maybe a CPU) partly filled by random models."""
    sizes = draw(st.lists(st.integers(1, 96), max_size=6))
    devices = [
        Device.gpu(i, s * GiB, reserve_fraction=draw(st.sampled_from([0.0, 0.1])))
        for i, s in enumerate(sizes)
    ]
    if draw(st.booleans()) or not devices:
        cpu_budget = draw(st.integers(1, 256)) * GiB
        devices.append(Device.cpu(2 * cpu_budget, cpu_budget))
    inventory = Inventory.of(*devices)
    allocations: list[Allocation] = []
    loaded: list[LoadedModel] = []
    for device in inventory.devices:
        left = device.budget_bytes
        for _ in range(draw(st.integers(0, 3))):
            size = draw(st.integers(0, left // MiB)) * MiB
            left -= size
            name = f"m{len(loaded)}"
            allocations.append(Allocation.on(name, 0, {device.id: size}))
            loaded.append(
                LoadedModel(
                    name, draw(st.floats(0, 100)), pinned=draw(st.booleans()), busy=draw(st.booleans())
                )
            )
    return inventory, allocations, loaded


needs = st.builds(
    ModelNeed,
    name=st.just("new"),
    memory_bytes=st.integers(1, 300 * 1024).map(lambda mib: mib * MiB + 1),
    replicas=st.integers(1, 4),
    device_kind=st.sampled_from(["auto", "cpu", "cuda"]),
    allow_sharding=st.booleans(),
)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(states(), needs)
def test_placements_stay_within_budgets_and_cover_the_need(
    state: tuple[Inventory, list[Allocation], list[LoadedModel]], need: ModelNeed
) -> None:
    inventory, allocations, _ = state
    try:
        placements = place(inventory, allocations, need)
    except PlacementError as err:
        assert err.need_bytes == need.memory_bytes
        assert need.name in str(err)
        return
    assert len(placements) == need.replicas
    after = used_bytes(inventory, [*allocations, *(p.allocation() for p in placements)])
    assert all(after[d.id] <= d.budget_bytes for d in inventory.devices)
    for p in placements:
        assert p.total_bytes >= need.memory_bytes
        assert need.device_kind in ("auto", p.kind)
        assert need.allow_sharding or not p.sharded
        assert p.cuda_visible_devices == ",".join(d.removeprefix("cuda:") for d in p.devices if d != "cpu")
        memory = p.max_memory()
        assert list(memory) == (["cpu"] if p.kind == "cpu" else list(range(len(p.devices))))
        assert list(memory.values()) == [s.bytes for s in p.shares]


@PROPERTY
@given(states(), st.integers(1, 96 * 1024), st.integers(1, 6))
def test_replicas_never_share_a_gpu_while_enough_gpus_have_room(
    state: tuple[Inventory, list[Allocation], list[LoadedModel]], mib: int, replicas: int
) -> None:
    inventory, allocations, _ = state
    need = ModelNeed("new", mib * MiB, replicas=replicas, device_kind="cuda", allow_sharding=False)
    free = free_bytes(inventory, allocations)
    roomy = [g for g in inventory.gpus if free[g.id] >= need.memory_bytes]
    if len(roomy) < replicas:
        return
    placements = place(inventory, allocations, need)
    assert len({p.devices for p in placements}) == replicas


@PROPERTY
@given(states(), needs.map(lambda n: ModelNeed(n.name, n.memory_bytes, 1, n.device_kind, n.allow_sharding)))
def test_eviction_chooses_idle_unpinned_models_in_lru_order_and_makes_room(
    state: tuple[Inventory, list[Allocation], list[LoadedModel]], need: ModelNeed
) -> None:
    inventory, allocations, loaded = state
    plan = plan_eviction(inventory, allocations, need, loaded)
    by_name = {m.name: m for m in loaded}

    def without(names: set[str]) -> list[Allocation]:
        return [a for a in allocations if a.model not in names]

    if plan is None:
        assert not fits(inventory, without({m.name for m in loaded if m.evictable}), need)
        return
    assert all(by_name[n].evictable for n in plan)
    assert plan == sorted(plan, key=lambda n: (by_name[n].last_used, n))
    assert fits(inventory, without(set(plan)), need)
    for name in plan:  # none of them could have been spared
        assert not fits(inventory, without(set(plan) - {name}), need)


# --- CPU placement end to end --------------------------------------------------------------


def test_a_cpu_placement_runs_a_real_worker(demo_model_dir: Path, tmp_path: Path) -> None:
    """Detect this machine, place the demo model, start its worker as placed, and generate."""
    inventory = detect_inventory()
    weights = sum(p.stat().st_size for p in demo_model_dir.glob("*.safetensors"))
    need = ModelNeed("demo", 2 * weights, device_kind="cpu")
    placement = only(place(inventory, [], need))
    assert placement.devices == ("cpu",) and placement.cuda_visible_devices == ""

    spec = WorkerSpec(
        name="demo",
        model_dir=demo_model_dir,
        log_path=tmp_path / "worker.log",
        start_timeout_s=60.0,
        gpus=placement.gpu_indices,
    )
    request = GenerateRequest(id="r", params=GenerationParams(max_tokens=4, temperature=0.0), prompt="Hello")

    async def run() -> tuple[str, DoneEvent]:
        worker = ModelWorker(spec)
        await worker.start()
        try:
            await worker.wait_ready(60)
            assert worker.pid is not None
            environ = Path(f"/proc/{worker.pid}/environ").read_bytes().split(b"\0")
            visible = next(e for e in environ if e.startswith(b"CUDA_VISIBLE_DEVICES="))
            events = [event async for event in worker.generate(request)]
            done = events[-1]
            assert isinstance(done, DoneEvent)
            return visible.decode(), done
        finally:
            await worker.stop()

    visible, done = asyncio.run(run())
    assert visible == f"CUDA_VISIBLE_DEVICES={placement.cuda_visible_devices}"
    assert done.completion_tokens == 4
    row = next(r for r in device_usage(inventory, [placement.allocation()]) if r.device_id == "cpu")
    assert row.used_bytes == need.memory_bytes and [m.model for m in row.models] == ["demo"]
