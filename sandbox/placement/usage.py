"""What each device holds: the accounting behind placement and ``/admin/models``."""

from __future__ import annotations

from collections.abc import Iterable

from sandbox.inventory import Inventory
from sandbox.placement.values import Allocation, DeviceUsage, ModelShare


def used_bytes(inventory: Inventory, allocations: Iterable[Allocation]) -> dict[str, int]:
    """Bytes allocated per device id (every device of the inventory, 0 when unused).

    An allocation on a device the inventory lacks is a bug in the caller: ValueError, since
    guessing would hide memory that is really in use.
    """
    used = {d.id: 0 for d in inventory.devices}
    for allocation in allocations:
        for share in allocation.shares:
            if share.device_id not in used:
                raise ValueError(
                    f"allocation {allocation.model}#{allocation.replica} is on {share.device_id}, "
                    f"which the inventory does not have"
                )
            used[share.device_id] += share.bytes
    return used


def free_bytes(inventory: Inventory, allocations: Iterable[Allocation]) -> dict[str, int]:
    """Budget left per device id (0, never negative, on a device over its budget)."""
    used = used_bytes(inventory, allocations)
    return {d.id: max(0, d.budget_bytes - used[d.id]) for d in inventory.devices}


def device_usage(inventory: Inventory, allocations: Iterable[Allocation]) -> list[DeviceUsage]:
    """Per device, in inventory order: budget, use, and the replicas on it (by model, replica)."""
    allocations = list(allocations)
    used = used_bytes(inventory, allocations)
    on_device: dict[str, list[ModelShare]] = {d.id: [] for d in inventory.devices}
    for allocation in allocations:
        for share in allocation.shares:
            on_device[share.device_id].append(ModelShare(allocation.model, allocation.replica, share.bytes))
    return [
        DeviceUsage(
            device_id=d.id,
            kind=d.kind,
            name=d.name,
            total_bytes=d.total_bytes,
            budget_bytes=d.budget_bytes,
            used_bytes=used[d.id],
            models=tuple(sorted(on_device[d.id], key=lambda m: (m.model, m.replica))),
        )
        for d in inventory.devices
    ]
