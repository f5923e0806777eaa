"""One model over several GPUs: the layer-to-GPU map a sharded worker loads with (torch, no GPU needed).

Placement (``sandbox.placement``) gives a worker several GPUs and ``max_memory`` per local GPU
index when no single GPU has room. Here the worker builds the model's skeleton on the ``meta``
device (no memory, no weights read), and accelerate assigns whole decoder layers to GPUs in
order within those limits. Anything that would land off the GPUs (host memory or disk, which
placement did not count) refuses the load: the estimate was too small for the split, and the
operator raises the model's ``memory_bytes`` or gives it more GPUs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.integrations.accelerate import infer_auto_device_map

from sandbox.modeldir import ModelLoadError


def shard_map(model_dir: Path, max_memory: Mapping[int | str, int]) -> dict[str, int]:
    """Module name -> local GPU index for every module of the model in ``model_dir``."""
    gpus: dict[int | str, int | str] = {k: int(v) for k, v in max_memory.items() if isinstance(k, int)}
    if len(gpus) < 2:
        raise ModelLoadError("a sharded load needs max_memory for at least two GPUs")
    try:
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
        dtype = getattr(config, "dtype", None)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(
                config, trust_remote_code=False, dtype=dtype if isinstance(dtype, torch.dtype) else None
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"could not read the model config in {model_dir}: {exc}") from exc
    accelerate_log = logging.getLogger("accelerate")
    level = accelerate_log.level
    accelerate_log.setLevel(logging.ERROR)  # "device N is not available" while planning without GPUs
    try:
        plan = infer_auto_device_map(
            skeleton, max_memory=gpus, no_split_module_classes=set(skeleton._no_split_modules or ())
        )
    finally:
        accelerate_log.setLevel(level)
    off = sorted(name for name, device in plan.items() if not isinstance(device, int))
    if off:
        raise ModelLoadError(
            f"the model does not fit the {len(gpus)} GPUs it was placed on ({', '.join(off[:3])}"
            f"{' ...' if len(off) > 3 else ''} would leave them): raise its memory_bytes so placement"
            " reserves more, or give it more GPUs"
        )
    return {name: int(device) for name, device in plan.items()}
