"""Checks on a model directory before anything is loaded from it (no torch import here).

Only safetensors weights are accepted: pickle-based formats can run code when loaded, so a
directory holding any of them is refused outright (``UnsafeWeightsError``, code
``unsafe_weights``) rather than silently skipped. A pickle file is recognised by its name
(``PICKLE_WEIGHT_SUFFIXES``) and by its first bytes, whatever its name: the pickle protocol
2-5 opcode, or a zip archive holding a ``.pkl`` member (PyTorch's ``torch.save`` format).

The escape hatch is named for what it is: ``allow_pickle_weights=True`` (the model option
``unsafe_allow_pickle_weights``) lets such a directory through, with a warning in the worker log.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

from gateway.errors import WorkerError

log = logging.getLogger("llmos.sandbox.modeldir")

PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_PICKLE_PROTOCOLS = frozenset(range(2, 6))  # b"\x80" PROTO n starts every pickle of protocol 2-5
_ZIP_MAGIC = b"PK\x03\x04"


class ModelLoadError(WorkerError):
    """The model directory is unusable; the message says why and what to do."""

    code = "model_load_failed"


class UnsafeWeightsError(ModelLoadError):
    """The directory holds pickle-format files, which can run code when loaded."""

    code = "unsafe_weights"


def is_pickle_file(path: Path) -> bool:
    """Whether the file's content is a pickle (protocol 2-5) or a torch zip archive holding one.

    ``*.safetensors`` files are not sniffed: their first 8 bytes are a header length, which may
    look like a pickle opcode by chance.
    """
    if path.suffix == ".safetensors":
        return False
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return False  # unreadable: the loader will fail on it, and it cannot be unpickled either
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return True
    if head == _ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith(".pkl") for name in archive.namelist())
        except (OSError, zipfile.BadZipFile):
            return False
    return False


def pickle_files(files: list[Path]) -> list[Path]:
    return [p for p in files if p.suffix.lower() in PICKLE_WEIGHT_SUFFIXES or is_pickle_file(p)]


def check_model_dir(model_dir: Path, *, allow_pickle_weights: bool = False) -> Path:
    """Return the resolved directory, or raise ModelLoadError (UnsafeWeightsError for pickle files)
    naming the problem."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist or is not a directory")
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    unsafe = pickle_files(files)
    names = ", ".join(str(p.relative_to(model_dir)) for p in unsafe[:5])
    if unsafe and not allow_pickle_weights:
        raise UnsafeWeightsError(
            f"unsafe_weights: refusing model directory {model_dir}: it contains pickle-format files "
            f"({names}), which can run code when loaded; only safetensors weights are allowed. "
            "Remove them or convert the model to safetensors (or, accepting the risk, set the "
            "model option unsafe_allow_pickle_weights)."
        )
    if unsafe:
        log.warning(
            "UNSAFE: loading model directory %s with pickle-format files (%s) because "
            "unsafe_allow_pickle_weights is set; a malicious file can run code in this worker",
            model_dir,
            names,
        )
    elif not any(p.suffix == ".safetensors" for p in files):
        raise ModelLoadError(
            f"model directory {model_dir} has no *.safetensors weights; only safetensors models are supported"
        )
    return model_dir.resolve()
