"""Checks on a model directory before anything is loaded from it (no torch import here).

Only safetensors weights are accepted: pickle-based formats (``.bin``, ``.pt``, ``.pth``,
``.pkl``, ``.ckpt``) can run code when loaded, so a directory holding any of them is refused
outright rather than silently skipped.
"""

from __future__ import annotations

from pathlib import Path

from gateway.errors import WorkerError

PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class ModelLoadError(WorkerError):
    """The model directory is unusable; the message says why and what to do."""


def check_model_dir(model_dir: Path) -> Path:
    """Return the resolved directory, or raise ModelLoadError naming the problem."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist or is not a directory")
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    unsafe = [p for p in files if p.suffix.lower() in PICKLE_WEIGHT_SUFFIXES]
    if unsafe:
        names = ", ".join(str(p.relative_to(model_dir)) for p in unsafe[:5])
        raise ModelLoadError(
            f"refusing model directory {model_dir}: it contains pickle-format weight files ({names}); "
            "only safetensors weights are allowed. Remove them or convert the model to safetensors."
        )
    if not any(p.suffix == ".safetensors" for p in files):
        raise ModelLoadError(
            f"model directory {model_dir} has no *.safetensors weights; only safetensors models are supported"
        )
    return model_dir.resolve()
