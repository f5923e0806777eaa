"""Load balancing over a model's replicas: least outstanding requests (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from sandbox.placement.values import ReplicaLoad


def pick_replica(replicas: Sequence[ReplicaLoad], rotation: int = 0) -> int | None:
    """The ready replica with the fewest outstanding requests; None when none is ready.

    Ties go round the tied replicas in id order: the caller passes a counter it increments
    per request as ``rotation`` (0 always picks the lowest id), so equal replicas share the
    load instead of the first one taking every request that finds them all idle.
    """
    ready = [r for r in replicas if r.ready]
    if not ready:
        return None
    least = min(r.outstanding for r in ready)
    tied = sorted(r.id for r in ready if r.outstanding == least)
    return tied[rotation % len(tied)]
