"""Where a worker puts its model: ``from_pretrained`` options for the devices it was given (pure).

The gateway places each replica (``sandbox.placement``) and starts its worker with the chosen
GPUs in ``CUDA_VISIBLE_DEVICES`` and, for a model sharded over several GPUs, ``max_memory`` per
*local* GPU index. Inside the worker:

- no GPU assigned: the model loads on the CPU (no ``device_map``);
- one GPU: the whole model on it (``device_map={"": 0}``);
- several GPUs: whole decoder layers per GPU within that ``max_memory`` (``sandbox.sharding``
  turns the ``"auto"`` answered here into an explicit map), never offloaded to host memory or
  disk that placement did not count.

A worker given GPUs whose torch cannot see them (a CPU-only build of torch, a driver problem)
refuses to load rather than silently running on the CPU: placement counted GPU memory for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox.modeldir import ModelLoadError


def assigned_gpus(cuda_visible_devices: str | None) -> int:
    """How many GPUs the gateway gave this worker (its ``CUDA_VISIBLE_DEVICES``)."""
    if not cuda_visible_devices:
        return 0
    return len([d for d in cuda_visible_devices.split(",") if d.strip()])


def load_options(assigned: int, visible: int, max_memory: Mapping[int | str, int] | None) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for a worker given ``assigned`` GPUs of which torch
    sees ``visible``; raises ModelLoadError when they disagree or ``max_memory`` does not match."""
    gpu_keys = sorted(k for k in (max_memory or {}) if k != "cpu")
    if assigned == 0:
        if gpu_keys:
            raise ModelLoadError("max_memory names GPUs, but this worker was given none")
        return {}
    if visible < assigned:
        raise ModelLoadError(
            f"this worker was placed on {assigned} GPU(s) but torch sees {visible}: install a CUDA"
            " build of torch (and the NVIDIA driver), or set the model's device: cpu"
        )
    if len(gpu_keys) <= 1:
        return {"device_map": {"": 0}}
    if gpu_keys != list(range(len(gpu_keys))) or len(gpu_keys) > assigned:
        raise ModelLoadError(f"max_memory must name local GPUs 0..{assigned - 1}, got {gpu_keys}")
    return {"device_map": "auto", "max_memory": {k: int(v) for k, v in (max_memory or {}).items()}}
