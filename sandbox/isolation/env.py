"""The worker's environment (built from scratch by the gateway) and descriptors (only the channel)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

ALLOWED_ENV_KEYS = frozenset(
    {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "PYTHONPATH",
        "PYTHONNOUSERSITE",
        "PYTHONDONTWRITEBYTECODE",
        "HF_HOME",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_HUB_DISABLE_PROGRESS_BARS",
        "HF_HUB_DISABLE_TELEMETRY",
        "TOKENIZERS_PARALLELISM",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
    }
)


def build_worker_env(
    work_dir: Path,
    *,
    threads: int | None = None,
    pythonpath: str | None = None,
    gpus: Iterable[int] | None = None,
) -> dict[str, str]:
    """The complete environment of a worker: nothing is inherited from the gateway.

    ``gpus``: the CUDA devices assigned to it (``CUDA_VISIBLE_DEVICES``); with none, the variable
    is set empty, so a CUDA build of torch sees no device. The indices are PCI bus order (what
    NVML and placement use; CUDA's default order is fastest first), hence ``CUDA_DEVICE_ORDER``.
    """
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work_dir),
        "TMPDIR": str(work_dir),
        "LANG": "C.UTF-8",
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HF_HOME": str(work_dir / "hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in sorted(set(gpus or ()))),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def unexpected_env(environ: Mapping[str, str]) -> list[str]:
    return sorted(set(environ) - ALLOWED_ENV_KEYS)


def close_stray_fds(keep: set[int]) -> list[int]:
    """Close every descriptor not in ``keep``; return those that had been open."""
    stray = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in keep:
            continue
        try:
            os.fstat(fd)
        except OSError:
            continue  # the directory handle used for the listing, now closed
        stray.append(fd)
        os.close(fd)
    return stray
