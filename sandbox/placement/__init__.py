"""Placement of model workers over devices (pure: no I/O, no torch; docs/placement.md).

values   the typed values: ModelNeed, Allocation, Placement, LoadedModel, ReplicaLoad,
         DeviceUsage, PlacementError (a WorkerError, code ``placement_failed``)
usage    bytes used and free per device; the /admin/models view (device_usage)
fit      place(): best fit, replicas spread over GPUs, sharding with max_memory
evict    plan_eviction(): the least recently used idle, unpinned models to unload
balance  pick_replica(): least outstanding requests among ready replicas

The devices come from ``sandbox.inventory`` (detected at the edge, or built by hand in tests).
"""

from sandbox.placement.balance import pick_replica
from sandbox.placement.evict import plan_eviction
from sandbox.placement.fit import DEFAULT_POLICY, PlacementPolicy, fits, place
from sandbox.placement.usage import device_usage, free_bytes, used_bytes
from sandbox.placement.values import (
    Allocation,
    DeviceShare,
    DeviceUsage,
    LoadedModel,
    ModelNeed,
    ModelShare,
    Placement,
    PlacementError,
    ReplicaLoad,
    format_bytes,
    max_memory_from_json,
)

__all__ = [
    "DEFAULT_POLICY",
    "Allocation",
    "DeviceShare",
    "DeviceUsage",
    "LoadedModel",
    "ModelNeed",
    "ModelShare",
    "Placement",
    "PlacementError",
    "PlacementPolicy",
    "ReplicaLoad",
    "device_usage",
    "fits",
    "format_bytes",
    "free_bytes",
    "max_memory_from_json",
    "pick_replica",
    "place",
    "plan_eviction",
    "used_bytes",
]
