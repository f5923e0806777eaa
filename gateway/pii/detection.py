"""What the engine reports, and how overlapping detections are resolved. Pure.

``Detection`` is the engine's own value type; the pipeline converts it to
``gateway.types.Finding``. Offsets are into the *original* text (before normalisation).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Detection:
    """One sensitive span: entity type, ``[start, end)`` in the original text, who found it, how sure."""

    type: str
    start: int
    end: int
    recognizer: str
    score: float
    # Words near the span that raised its score (Presidio's context enhancement): the
    # recogniser's own context words, never text of the finding (explanation records).
    context: tuple[str, ...] = ()


def resolve_overlaps(detections: Iterable[Detection]) -> list[Detection]:
    """Keep a set of non-overlapping detections, ordered by start.

    Greedy by preference: higher score first, then the longer span, then the earlier start
    (then type name, so the result does not depend on input order). A detection is kept when it
    overlaps none already kept. Touching spans (one ends where the next starts) do not overlap.
    """
    ranked = sorted(detections, key=lambda d: (-d.score, -(d.end - d.start), d.start, d.type, d.recognizer))
    # The kept spans never overlap, so sorted by start they are sorted by end too: a new span
    # can only collide with its neighbours in that order.
    starts: list[int] = []
    kept: list[Detection] = []
    for d in ranked:
        if d.end <= d.start:
            continue
        i = bisect.bisect_right(starts, d.start)
        if i > 0 and kept[i - 1].end > d.start:
            continue
        if i < len(kept) and kept[i].start < d.end:
            continue
        starts.insert(i, d.start)
        kept.insert(i, d)
    return kept
