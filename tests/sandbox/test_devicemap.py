"""Where a worker puts its model: the options for its GPUs (pure), and the layer map of a model
sharded over several GPUs (planned on the meta device: runs without a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import LlamaConfig

from sandbox.devicemap import assigned_gpus, load_options
from sandbox.inventory import Device, Inventory
from sandbox.modeldir import ModelLoadError
from sandbox.placement import ModelNeed, PlacementPolicy, place
from sandbox.sharding import shard_map

GiB = 2**30


@pytest.mark.parametrize(
    ("env", "count"), [(None, 0), ("", 0), ("3", 1), ("0,1", 2), ("4, 6 ,7", 3), ("1,", 1)]
)
def test_assigned_gpus_reads_cuda_visible_devices(env: str | None, count: int) -> None:
    assert assigned_gpus(env) == count


def test_no_gpu_loads_on_the_cpu() -> None:
    assert load_options(0, 0, None) == {}
    assert load_options(0, 2, None) == {}  # GPUs exist, none were given to this worker


def test_one_gpu_takes_the_whole_model() -> None:
    assert load_options(1, 1, None) == {"device_map": {"": 0}}
    assert load_options(1, 1, {0: GiB}) == {"device_map": {"": 0}}


def test_several_gpus_shard_within_max_memory() -> None:
    assert load_options(2, 2, {0: GiB, 1: 2 * GiB}) == {
        "device_map": "auto",
        "max_memory": {0: GiB, 1: 2 * GiB},
    }


def test_gpus_torch_cannot_see_refuse_the_load() -> None:
    with pytest.raises(ModelLoadError, match="CUDA build of torch"):
        load_options(2, 0, {0: GiB, 1: GiB})
    with pytest.raises(ModelLoadError, match="torch sees 1"):
        load_options(2, 1, {0: GiB, 1: GiB})


@pytest.mark.parametrize("max_memory", [{0: GiB, 2: GiB}, {1: GiB, 2: GiB}, {0: GiB, 1: GiB, 2: GiB}])
def test_max_memory_must_name_the_local_gpus(max_memory: dict[int | str, int]) -> None:
    with pytest.raises(ModelLoadError, match="local GPUs"):
        load_options(2, 2, max_memory)


def test_max_memory_for_gpus_without_any_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="given none"):
        load_options(0, 0, {0: GiB})


def tiny_llama(tmp: Path, layers: int = 8) -> tuple[Path, int]:
    """A config alone (planning needs no weights) and its float32 size in bytes."""
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=512,
    )
    config.save_pretrained(tmp)
    h, i, v = 64, 128, 512
    per_layer = 4 * h * h + 3 * h * i + 2 * h
    return tmp, 4 * (2 * v * h + layers * per_layer + h)


def test_a_sharded_model_is_split_by_whole_layers_over_its_gpus(tmp_path: Path) -> None:
    model_dir, size = tiny_llama(tmp_path)
    plan = shard_map(model_dir, {0: int(size * 0.7), 1: int(size * 0.7)})
    assert set(plan.values()) == {0, 1}
    layers = [plan[f"model.layers.{n}"] for n in range(8)]
    assert layers == sorted(layers), "layers in order: GPU 0 takes the first ones"
    assert plan["model.embed_tokens"] == 0 and plan["lm_head"] == 1


def test_three_gpus_share_a_model_none_could_hold(tmp_path: Path) -> None:
    model_dir, size = tiny_llama(tmp_path, layers=12)
    plan = shard_map(model_dir, {0: size // 2, 1: size // 2, 2: size // 2})
    assert set(plan.values()) == {0, 1, 2}


def test_a_split_that_would_spill_off_the_gpus_is_refused(tmp_path: Path) -> None:
    model_dir, size = tiny_llama(tmp_path)
    with pytest.raises(ModelLoadError, match="raise its memory_bytes"):
        shard_map(model_dir, {0: int(size * 0.4), 1: int(size * 0.4)})


def test_placement_max_memory_feeds_the_shard_plan(tmp_path: Path) -> None:
    """Placement on two small GPUs gives a sharded replica whose max_memory plans cleanly."""
    model_dir, size = tiny_llama(tmp_path)
    inventory = Inventory.of(*(Device.gpu(n, size * 9 // 10, reserve_fraction=0.0) for n in range(2)))
    need = ModelNeed("m", size, device_kind="cuda")
    (placement,) = place(inventory, [], need, PlacementPolicy(shard_overhead_bytes=size // 4))
    assert placement.sharded and placement.gpu_indices == (0, 1)
    plan = shard_map(model_dir, placement.max_memory())
    assert set(plan.values()) == {0, 1}
