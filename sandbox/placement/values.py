"""The values placement reads and returns (frozen, checked when built); imports no placement code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.errors import WorkerError
from sandbox.inventory import GiB, MiB

DeviceChoice = Literal["auto", "cpu", "cuda"]
DEFAULT_SHARD_OVERHEAD_BYTES = 1 * GiB


def format_bytes(n: int) -> str:
    """``80 GiB``, ``1.5 GiB``, ``512 MiB``: for messages, never for arithmetic."""
    if n >= GiB:
        return f"{n / GiB:.1f}".removesuffix(".0") + " GiB"
    return f"{n / MiB:.1f}".removesuffix(".0") + " MiB"


class PlacementError(WorkerError):
    """A model cannot be placed on this inventory as it stands; the message says by how much."""

    code = "placement_failed"

    def __init__(
        self,
        message: str,
        *,
        model: str,
        need_bytes: int,
        largest_free_bytes: int,
        shard_capacity_bytes: int,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.need_bytes = need_bytes
        self.largest_free_bytes = largest_free_bytes  # on one device of an allowed kind
        self.shard_capacity_bytes = shard_capacity_bytes  # over all free GPUs, overheads taken off


@dataclass(frozen=True, slots=True)
class ModelNeed:
    """What one model asks for: ``memory_bytes`` per replica, on a device of ``device_kind``.

    ``auto`` prefers GPUs (one, else sharded when ``allow_sharding``) and falls back to the CPU.
    """

    name: str
    memory_bytes: int
    replicas: int = 1
    device_kind: DeviceChoice = "auto"
    allow_sharding: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("ModelNeed.name must be non-empty")
        if self.memory_bytes <= 0:
            raise ValueError(f"model {self.name}: memory_bytes must be > 0")
        if self.replicas < 1:
            raise ValueError(f"model {self.name}: replicas must be >= 1")
        if self.device_kind not in ("auto", "cpu", "cuda"):
            raise ValueError(f"model {self.name}: device_kind must be auto, cpu or cuda")


@dataclass(frozen=True, slots=True)
class DeviceShare:
    """``bytes`` of one replica on the device ``device_id`` ("cpu", "cuda:N")."""

    device_id: str
    bytes: int

    def __post_init__(self) -> None:
        if self.bytes < 0:
            raise ValueError(f"a device share cannot be negative ({self.device_id}: {self.bytes})")


@dataclass(frozen=True, slots=True)
class Allocation:
    """Memory held now by one replica of a model (or anything else llmos reserved)."""

    model: str
    replica: int
    shares: tuple[DeviceShare, ...]

    def __post_init__(self) -> None:
        ids = [s.device_id for s in self.shares]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"allocation {self.model}#{self.replica}: one share per device, at least one")

    @classmethod
    def on(cls, model: str, replica: int, bytes_by_device: Mapping[str, int]) -> Allocation:
        return cls(model, replica, tuple(DeviceShare(d, b) for d, b in bytes_by_device.items()))

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.shares)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one replica goes: its devices, in the order the worker will number them.

    For GPUs, ``shares`` run in ascending physical index, which is the order CUDA numbers the
    devices of ``CUDA_VISIBLE_DEVICES`` inside the worker: local index i is ``gpu_indices[i]``.
    """

    model: str
    replica: int
    shares: tuple[DeviceShare, ...]

    def __post_init__(self) -> None:
        kinds = {s.device_id == "cpu" for s in self.shares}
        if len(kinds) != 1:
            raise ValueError(f"placement {self.model}#{self.replica}: all GPUs or the CPU alone")
        if self.kind == "cpu" and len(self.shares) != 1:
            raise ValueError(f"placement {self.model}#{self.replica}: one CPU share")
        indices = self.gpu_indices
        if list(indices) != sorted(set(indices)):
            raise ValueError(f"placement {self.model}#{self.replica}: GPUs in ascending index order")

    @property
    def kind(self) -> Literal["cpu", "cuda"]:
        return "cpu" if self.shares[0].device_id == "cpu" else "cuda"

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(s.device_id for s in self.shares)

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        """Physical GPU indices (what ``WorkerSpec.gpus`` takes); empty on the CPU."""
        return tuple(int(s.device_id.removeprefix("cuda:")) for s in self.shares if s.device_id != "cpu")

    @property
    def sharded(self) -> bool:
        return len(self.shares) > 1

    @property
    def total_bytes(self) -> int:
        return sum(s.bytes for s in self.shares)

    @property
    def cuda_visible_devices(self) -> str:
        """The worker's ``CUDA_VISIBLE_DEVICES``: physical indices, comma-separated; "" on the CPU."""
        return ",".join(str(i) for i in self.gpu_indices)

    def max_memory(self) -> dict[int | str, int]:
        """``max_memory`` for ``from_pretrained(device_map="auto")`` inside the worker, in bytes.

        Keys are the worker's *local* CUDA indices (0..n-1, as it sees ``CUDA_VISIBLE_DEVICES``),
        never the physical ones. A GPU placement has no "cpu" key, so nothing is offloaded to host
        memory that placement did not count; a CPU placement is ``{"cpu": bytes}``.
        """
        if self.kind == "cpu":
            return {"cpu": self.shares[0].bytes}
        return {local: share.bytes for local, share in enumerate(self.shares)}

    def allocation(self) -> Allocation:
        """What this placement holds once its worker is started."""
        return Allocation(self.model, self.replica, self.shares)


def max_memory_from_json(data: Mapping[str, int]) -> dict[int | str, int]:
    """``max_memory`` back from JSON, where its integer keys became strings ("0" -> 0)."""
    out: dict[int | str, int] = {}
    for key, value in data.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"max_memory[{key!r}] must be a byte count, not {value!r}")
        if key.isdigit():
            out[int(key)] = value
        elif key == "cpu":
            out[key] = value
        else:
            raise ValueError(f"max_memory key must be a local GPU index or 'cpu', not {key!r}")
    return out


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A loaded model as eviction sees it; its memory is in its ``Allocation``s (by ``name``).

    ``last_used``: when it last finished or started a request (any clock, compared only).
    ``busy``: it has requests in flight or queued. Pinned and busy models are never evicted.
    """

    name: str
    last_used: float
    pinned: bool = False
    busy: bool = False

    @property
    def evictable(self) -> bool:
        return not (self.pinned or self.busy)


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """One replica as the load balancer sees it."""

    id: int
    outstanding: int  # requests sent to it and not yet finished (queued included)
    ready: bool = True

    def __post_init__(self) -> None:
        if self.outstanding < 0:
            raise ValueError(f"replica {self.id}: outstanding must be >= 0")


@dataclass(frozen=True, slots=True)
class ModelShare:
    """One replica's bytes on one device, as ``/admin/models`` lists it."""

    model: str
    replica: int
    bytes: int


@dataclass(frozen=True, slots=True)
class DeviceUsage:
    """One device's budget and what is on it."""

    device_id: str
    kind: Literal["cpu", "cuda"]
    name: str
    total_bytes: int
    budget_bytes: int
    used_bytes: int
    models: tuple[ModelShare, ...]

    @property
    def free_bytes(self) -> int:
        return max(0, self.budget_bytes - self.used_bytes)

    @property
    def over_budget(self) -> bool:
        """Possible after the budget was lowered with models still loaded."""
        return self.used_bytes > self.budget_bytes
