from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pii.detection import Detection, resolve_overlaps


def d(t: str, start: int, end: int, score: float = 0.5, rec: str = "r") -> Detection:
    return Detection(t, start, end, rec, score)


def test_higher_score_wins_then_longer_span() -> None:
    assert resolve_overlaps([d("A", 0, 10, 0.6), d("B", 5, 8, 0.9)]) == [d("B", 5, 8, 0.9)]
    assert resolve_overlaps([d("A", 0, 4, 0.8), d("B", 0, 10, 0.8)]) == [d("B", 0, 10, 0.8)]


def test_touching_spans_both_kept_and_sorted() -> None:
    found = resolve_overlaps([d("B", 5, 9), d("A", 0, 5), d("C", 20, 21)])
    assert [x.type for x in found] == ["A", "B", "C"]


def test_empty_spans_dropped() -> None:
    assert resolve_overlaps([d("A", 3, 3)]) == []


spans = st.lists(
    st.tuples(st.integers(0, 50), st.integers(1, 10), st.sampled_from([0.3, 0.5, 0.85, 1.0])),
    max_size=30,
)


@settings(max_examples=300, deadline=None, database=None)
@given(spans)
def test_result_is_sorted_disjoint_and_dominant(raw: list[tuple[int, int, float]]) -> None:
    given_ = [d(f"T{i}", s, s + n, score) for i, (s, n, score) in enumerate(raw)]
    kept = resolve_overlaps(given_)
    assert all(a.end <= b.start for a, b in itertools.pairwise(kept))
    # Every dropped detection overlaps a kept one that is at least as preferred.
    for x in given_:
        if x in kept:
            continue
        blockers = [k for k in kept if k.start < x.end and x.start < k.end]
        assert blockers
        assert any((k.score, k.end - k.start) >= (x.score, x.end - x.start) for k in blockers)
    assert resolve_overlaps(list(reversed(given_))) == kept
