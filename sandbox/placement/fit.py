"""Best-fit placement of a model's replicas over an inventory (pure; see docs/placement.md).

For each replica, in order (each sees the memory the previous ones took):

1. Device kinds in preference order: ``cuda`` then ``cpu`` for ``auto``, else the one asked.
2. On GPUs, one GPU if any has room: GPUs without a replica of the same model first
   (anti-affinity), then the one with the *least* free memory that fits (best fit: big holes
   stay whole for big models), then the lowest index.
3. Else, with ``allow_sharding``, one worker over the fewest GPUs whose free memory covers the
   model plus ``shard_overhead_bytes`` per GPU; among those sets, the one with the least free
   memory in total, then the lowest indices. Again GPUs without a sibling replica first.
   Bytes are split in proportion to each GPU's free memory.
4. On the CPU (one device), if its budget has room.

A replica that fits nowhere raises ``PlacementError`` and nothing of the call is placed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from sandbox.inventory import Device, Inventory
from sandbox.placement.usage import free_bytes
from sandbox.placement.values import (
    DEFAULT_SHARD_OVERHEAD_BYTES,
    Allocation,
    DeviceShare,
    ModelNeed,
    Placement,
    PlacementError,
    format_bytes,
)


@dataclass(frozen=True, slots=True)
class PlacementPolicy:
    """Knobs of ``place``; the defaults suit GPUs of 16 GiB and up.

    ``shard_overhead_bytes``: added per GPU of a sharded placement (its CUDA context and
    buffers, and the slack of splitting at layer boundaries). ``exhaustive_limit``: the most
    GPU sets of one size searched for the best fit; beyond it the largest GPUs are taken.
    """

    shard_overhead_bytes: int = DEFAULT_SHARD_OVERHEAD_BYTES
    exhaustive_limit: int = 20_000

    def __post_init__(self) -> None:
        if self.shard_overhead_bytes < 0 or self.exhaustive_limit < 1:
            raise ValueError("shard_overhead_bytes must be >= 0 and exhaustive_limit >= 1")


DEFAULT_POLICY = PlacementPolicy()


def place(
    inventory: Inventory,
    allocations: Iterable[Allocation],
    need: ModelNeed,
    policy: PlacementPolicy = DEFAULT_POLICY,
) -> list[Placement]:
    """Placements for the ``need.replicas`` new replicas of ``need``, or ``PlacementError``.

    Replicas already in ``allocations`` for the same model keep theirs; the new ones are
    numbered after them and avoid their GPUs when they can.
    """
    allocations = list(allocations)
    free = free_bytes(inventory, allocations)
    siblings = {s.device_id for a in allocations if a.model == need.name for s in a.shares}
    first = max((a.replica for a in allocations if a.model == need.name), default=-1) + 1
    placements: list[Placement] = []
    for n in range(need.replicas):
        replica = first + n
        shares = _place_one(inventory, free, siblings, need, policy)
        if shares is None:
            raise _no_room(inventory, free, need, n, policy)
        placement = Placement(need.name, replica, shares)
        for share in shares:
            free[share.device_id] -= share.bytes
            siblings.add(share.device_id)
        placements.append(placement)
    return placements


def fits(
    inventory: Inventory,
    allocations: Iterable[Allocation],
    need: ModelNeed,
    policy: PlacementPolicy = DEFAULT_POLICY,
) -> bool:
    try:
        place(inventory, allocations, need, policy)
    except PlacementError:
        return False
    return True


def _kinds(need: ModelNeed) -> tuple[str, ...]:
    return ("cuda", "cpu") if need.device_kind == "auto" else (need.device_kind,)


def _place_one(
    inventory: Inventory,
    free: dict[str, int],
    siblings: set[str],
    need: ModelNeed,
    policy: PlacementPolicy,
) -> tuple[DeviceShare, ...] | None:
    size = need.memory_bytes
    for kind in _kinds(need):
        if kind == "cpu":
            cpu = inventory.cpu
            if cpu is not None and free[cpu.id] >= size:
                return (DeviceShare(cpu.id, size),)
            continue
        gpus = inventory.gpus
        roomy = [g for g in gpus if free[g.id] >= size]
        if roomy:
            best = min(roomy, key=lambda g: (g.id in siblings, free[g.id], _index(g)))
            return (DeviceShare(best.id, size),)
        if need.allow_sharding:
            apart = [g for g in gpus if g.id not in siblings]
            for pool in (apart, list(gpus)) if len(apart) < len(gpus) else (apart,):
                shares = _shard(pool, free, size, policy)
                if shares is not None:
                    return shares
    return None


def _shard(
    pool: Sequence[Device], free: dict[str, int], size: int, policy: PlacementPolicy
) -> tuple[DeviceShare, ...] | None:
    """The fewest GPUs of ``pool`` holding ``size`` plus the per-GPU overhead, best fit among them."""
    overhead = policy.shard_overhead_bytes
    usable = sorted((g for g in pool if free[g.id] > overhead), key=lambda g: (-free[g.id], _index(g)))
    for k in range(2, len(usable) + 1):
        need = size + k * overhead
        if sum(free[g.id] for g in usable[:k]) < need:
            continue  # the k largest cannot hold it, so no k GPUs can
        if math.comb(len(usable), k) <= policy.exhaustive_limit:
            feasible = (c for c in combinations(usable, k) if sum(free[g.id] for g in c) >= need)
            chosen = min(feasible, key=lambda c: (sum(free[g.id] for g in c), sorted(_index(g) for g in c)))
        else:
            chosen = tuple(usable[:k])
        return _split(sorted(chosen, key=_index), free, need)
    return None


def _index(gpu: Device) -> int:
    return gpu.index if gpu.index is not None else -1


def _split(gpus: Sequence[Device], free: dict[str, int], need: int) -> tuple[DeviceShare, ...]:
    """``need`` bytes over ``gpus`` in proportion to their free memory (largest remainders)."""
    room = [free[g.id] for g in gpus]
    total = sum(room)
    parts = [need * r // total for r in room]
    remainders = [need * r % total for r in room]  # integers: exact at any size
    short = need - sum(parts)  # < len(gpus), and that many remainders are > 0
    by_remainder = sorted(range(len(gpus)), key=lambda i: (-remainders[i], i))
    for i in by_remainder[:short]:
        parts[i] += 1  # floor < exact <= room, so this never passes the GPU's free memory
    return tuple(DeviceShare(g.id, b) for g, b in zip(gpus, parts, strict=True))


def _no_room(
    inventory: Inventory, free: dict[str, int], need: ModelNeed, placed: int, policy: PlacementPolicy
) -> PlacementError:
    kinds = _kinds(need)
    allowed = [d for d in inventory.devices if d.kind in kinds]
    largest = max(allowed, key=lambda d: free[d.id], default=None)
    overhead = policy.shard_overhead_bytes
    gpus = inventory.gpus if "cuda" in kinds else ()
    capacity = sum(max(0, free[g.id] - overhead) for g in gpus) if len(gpus) > 1 else 0
    which = f" (replica {placed + 1} of {need.replicas})" if need.replicas > 1 else ""
    facts: list[str] = []
    if largest is None:
        facts.append(f"this machine has no {' or '.join(kinds)} device")
    else:
        facts.append(
            f"the device with the most free memory, {largest.id}, has {format_bytes(free[largest.id])} "
            f"free of a {format_bytes(largest.budget_bytes)} budget"
        )
    if len(gpus) > 1:
        if need.allow_sharding:
            facts.append(
                f"sharding over the free GPUs gives at most {format_bytes(capacity)} "
                f"({format_bytes(overhead)} overhead per GPU)"
            )
        else:
            facts.append("sharding over GPUs is off for this model")
    message = (
        f"model {need.name} needs {format_bytes(need.memory_bytes)}{which} on {need.device_kind}; "
        f"{' and '.join(facts)}. Evict idle models, lower its replicas or memory estimate, "
        f"or raise the device budgets."
    )
    return PlacementError(
        message,
        model=need.name,
        need_bytes=need.memory_bytes,
        largest_free_bytes=free[largest.id] if largest is not None else 0,
        shard_capacity_bytes=capacity,
    )
