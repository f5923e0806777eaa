"""Which idle models to unload so that a new one fits (pure; true LRU).

Candidates are the loaded models that are neither pinned nor busy and hold memory, oldest
``last_used`` first (ties by name). The plan is the shortest prefix of that order after which
``place`` succeeds, less any model in it whose unloading turns out not to matter (a model on a
GPU the new one cannot use, say): those are spared, the most recently used first. Each step is
checked by simulating placement without the chosen models, so devices and sharding are taken
into account exactly as ``place`` will.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sandbox.inventory import Inventory
from sandbox.placement.fit import DEFAULT_POLICY, PlacementPolicy, fits
from sandbox.placement.values import Allocation, LoadedModel, ModelNeed


def plan_eviction(
    inventory: Inventory,
    allocations: Iterable[Allocation],
    need: ModelNeed,
    loaded: Sequence[LoadedModel],
    policy: PlacementPolicy = DEFAULT_POLICY,
) -> list[str] | None:
    """Model names to unload, oldest first, for ``need`` to fit; [] if it fits as things are.

    None when unloading every evictable model would still not make room: the caller queues
    the request until memory is freed (or refuses it, if ``need`` does not fit an empty
    inventory either: check that with ``fits(inventory, [], need)``).
    """
    allocations = list(allocations)
    names = [m.name for m in loaded]
    if len(set(names)) != len(names):
        raise ValueError(f"loaded models must have distinct names: {sorted(names)}")
    if fits(inventory, allocations, need, policy):
        return []
    holding = {a.model for a in allocations}
    order = [
        m.name
        for m in sorted(loaded, key=lambda m: (m.last_used, m.name))
        if m.evictable and m.name in holding and m.name != need.name
    ]

    def fits_without(evicted: Sequence[str]) -> bool:
        gone = set(evicted)
        return fits(inventory, [a for a in allocations if a.model not in gone], need, policy)

    prefix = next((order[:n] for n in range(1, len(order) + 1) if fits_without(order[:n])), None)
    if prefix is None:
        return None
    chosen = list(prefix)
    for name in reversed(prefix[:-1]):  # the last one is needed: the prefix before it failed
        spared = [n for n in chosen if n != name]
        if fits_without(spared):
            chosen = spared
    return chosen
