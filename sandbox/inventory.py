"""The devices models can be placed on, and how much of each llmos may use.

``Device`` and ``Inventory`` are plain values: placement (``sandbox.placement``) is computed
over them and never looks at the machine. ``detect_inventory`` is the one edge that does:

- GPUs: NVML (``pynvml``) when it is importable and a driver answers, else ``torch.cuda`` when
  torch is importable and sees a device, else none. Both libraries are imported inside the
  probes, never when this module is imported. NVML is preferred: its indices are the physical
  ones that ``CUDA_VISIBLE_DEVICES`` names, whatever the gateway's own environment says.
- A GPU's budget is its total memory less ``gpu_reserve_fraction`` (default 10 %), left for
  the CUDA context, the allocator's fragmentation and other processes.
- The CPU (one device for all of host memory): its budget is configured; by default half of
  ``MemTotal`` in ``/proc/meminfo``.

A probe that cannot answer (library missing, no driver) returns ``None`` and the next is tried;
detection never fails for lack of GPUs.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.errors import ConfigError

log = logging.getLogger("llmos.sandbox.inventory")

DeviceKind = Literal["cpu", "cuda"]

GiB = 1024**3
MiB = 1024**2
DEFAULT_GPU_RESERVE_FRACTION = 0.1
DEFAULT_CPU_BUDGET_FRACTION = 0.5
_MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True, slots=True)
class Device:
    """One device: ``"cpu"``, or ``"cuda:N"`` where N is the physical GPU index.

    ``budget_bytes`` is what llmos may allocate on it (at most ``total_bytes``).
    """

    id: str
    kind: DeviceKind
    index: int | None  # the physical GPU index; None for the CPU
    total_bytes: int
    budget_bytes: int
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind == "cpu":
            if self.index is not None or self.id != "cpu":
                raise ValueError(f"the CPU device has id 'cpu' and no index, not {self.id!r}/{self.index}")
        elif self.kind == "cuda":
            if self.index is None or self.index < 0 or self.id != f"cuda:{self.index}":
                raise ValueError(f"a CUDA device has id 'cuda:N' with N its index >= 0, not {self.id!r}")
        else:
            raise ValueError(f"device kind must be 'cpu' or 'cuda', not {self.kind!r}")
        if self.total_bytes < 0 or not 0 <= self.budget_bytes <= self.total_bytes:
            raise ValueError(
                f"device {self.id}: need 0 <= budget_bytes ({self.budget_bytes}) <= "
                f"total_bytes ({self.total_bytes})"
            )

    @classmethod
    def cpu(cls, total_bytes: int, budget_bytes: int, name: str = "cpu") -> Device:
        return cls("cpu", "cpu", None, total_bytes, budget_bytes, name)

    @classmethod
    def gpu(
        cls,
        index: int,
        total_bytes: int,
        *,
        reserve_fraction: float = DEFAULT_GPU_RESERVE_FRACTION,
        name: str = "",
    ) -> Device:
        """A GPU whose budget is its total memory less ``reserve_fraction`` of it."""
        if not 0.0 <= reserve_fraction < 1.0:
            raise ValueError(f"gpu reserve fraction must be in [0, 1), not {reserve_fraction}")
        budget = int(total_bytes * (1.0 - reserve_fraction))
        return cls(f"cuda:{index}", "cuda", index, total_bytes, budget, name)


@dataclass(frozen=True, slots=True)
class Inventory:
    """The devices of this machine: GPUs in index order, then the CPU (at most one)."""

    devices: tuple[Device, ...]

    def __post_init__(self) -> None:
        ids = [d.id for d in self.devices]
        if len(set(ids)) != len(ids):
            raise ValueError(f"device ids must be distinct: {ids}")

    @classmethod
    def of(cls, *devices: Device) -> Inventory:
        """Devices sorted into the canonical order (GPUs by index, then the CPU)."""
        return cls(tuple(sorted(devices, key=_device_order)))

    @property
    def gpus(self) -> tuple[Device, ...]:
        return tuple(d for d in self.devices if d.kind == "cuda")

    @property
    def cpu(self) -> Device | None:
        return next((d for d in self.devices if d.kind == "cpu"), None)

    def get(self, device_id: str) -> Device:
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(device_id)


def _device_order(device: Device) -> tuple[int, int]:
    return (0, device.index) if device.index is not None else (1, 0)


# --- detection (the edge) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """What a probe reports of one GPU."""

    index: int  # physical index, as CUDA_VISIBLE_DEVICES names it
    total_bytes: int
    name: str = ""


GpuProbe = Callable[[], Sequence[GpuInfo] | None]  # None: this probe cannot tell


def probe_nvml() -> list[GpuInfo] | None:
    """GPUs as NVML reports them (physical indices), or None without pynvml or a driver."""
    if importlib.util.find_spec("pynvml") is None:
        return None
    nvml: Any = importlib.import_module("pynvml")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        log.info("NVML is not usable (%s); trying torch.cuda", exc)
        return None
    try:
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            name = nvml.nvmlDeviceGetName(handle)
            total = int(nvml.nvmlDeviceGetMemoryInfo(handle).total)
            gpus.append(GpuInfo(index, total, name.decode() if isinstance(name, bytes) else str(name)))
        return gpus
    except nvml.NVMLError as exc:
        log.warning("NVML failed while listing GPUs (%s); trying torch.cuda", exc)
        return None
    finally:
        nvml.nvmlShutdown()


def probe_torch(environ: Mapping[str, str] | None = None) -> list[GpuInfo] | None:
    """GPUs as ``torch.cuda`` sees them, mapped back to physical indices; None without torch.

    torch numbers the devices the gateway's ``CUDA_VISIBLE_DEVICES`` leaves visible from 0; a
    list of integers there is used to map them back. Other forms (GPU UUIDs) cannot be mapped
    and make this probe give up (None), since a wrong index would put a worker on a wrong GPU.
    """
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return []
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    count = torch.cuda.device_count()
    physical = list(range(count))
    if visible is not None and visible.strip():
        parts = [p.strip() for p in visible.split(",") if p.strip()]
        if not all(re.fullmatch(r"\d+", p) for p in parts) or len(parts) < count:
            log.warning("CUDA_VISIBLE_DEVICES=%r cannot be mapped to physical GPU indices", visible)
            return None
        physical = [int(p) for p in parts[:count]]
    gpus = []
    for local in range(count):
        props = torch.cuda.get_device_properties(local)
        gpus.append(GpuInfo(physical[local], int(props.total_memory), str(props.name)))
    return gpus


def meminfo_total_bytes(path: Path = _MEMINFO) -> int:
    """``MemTotal`` of ``/proc/meminfo`` in bytes; sysconf where there is no such file."""
    try:
        text = path.read_text(encoding="ascii")
    except OSError:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    match = re.search(r"^MemTotal:\s+(\d+)\s*kB\s*$", text, re.MULTILINE)
    if match is None:
        raise ConfigError(f"{path}: no 'MemTotal: N kB' line; set the CPU memory budget explicitly")
    return int(match.group(1)) * 1024


def default_cpu_budget(total_bytes: int) -> int:
    """Half of host memory: the gateway, the page cache and everything else keep the rest."""
    return int(total_bytes * DEFAULT_CPU_BUDGET_FRACTION)


def detect_inventory(
    cpu_budget_bytes: int | None = None,
    gpu_reserve_fraction: float = DEFAULT_GPU_RESERVE_FRACTION,
    *,
    probes: Sequence[GpuProbe] = (probe_nvml, probe_torch),
    cpu_total_bytes: int | None = None,
) -> Inventory:
    """This machine's GPUs (from the first probe that answers) and its CPU.

    ``cpu_budget_bytes`` None: ``default_cpu_budget`` of the host's memory. ``cpu_total_bytes``
    None: read from ``/proc/meminfo``. A budget above the host's memory is a configuration error.
    """
    total = meminfo_total_bytes() if cpu_total_bytes is None else cpu_total_bytes
    budget = default_cpu_budget(total) if cpu_budget_bytes is None else cpu_budget_bytes
    if not 0 <= budget <= total:
        raise ConfigError(
            f"the CPU memory budget ({budget} bytes) must be between 0 and the host's memory ({total} bytes)"
        )
    if not 0.0 <= gpu_reserve_fraction < 1.0:
        raise ConfigError(f"the GPU reserve fraction must be in [0, 1), not {gpu_reserve_fraction}")
    gpus: Sequence[GpuInfo] = ()
    for probe in probes:
        found = probe()
        if found is not None:
            gpus = found
            break
    devices = [
        Device.gpu(g.index, g.total_bytes, reserve_fraction=gpu_reserve_fraction, name=g.name) for g in gpus
    ]
    return Inventory.of(*devices, Device.cpu(total, budget))
