from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

import gateway.gctune as gctune
from gateway.gctune import OLDER_THRESHOLDS, YOUNG_THRESHOLD, tune_for_serving


@pytest.fixture
def restored_gc() -> Iterator[None]:
    if gc.get_freeze_count():
        pytest.skip("something in this process froze objects already; unfreezing them would change it")
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_what_start_up_built_is_frozen_and_the_young_threshold_raised() -> None:
    built_at_start_up: list[list[object]] = [[]]  # a container the collector tracks
    assert any(o is built_at_start_up for o in gc.get_objects())
    tune_for_serving((3, 11))
    assert not any(o is built_at_start_up for o in gc.get_objects())  # frozen: out of every pass
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ((3, 11, 7), [("collect", ()), ("freeze", ()), ("set_threshold", (YOUNG_THRESHOLD, *OLDER_THRESHOLDS))]),
        ((3, 14, 0), [("collect", ()), ("freeze", ())]),  # another collector: only the freeze
    ],
)
def test_collects_before_freezing_and_sets_thresholds_only_where_measured(
    monkeypatch: pytest.MonkeyPatch, version: tuple[int, ...], expected: list[tuple[str, tuple[Any, ...]]]
) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(gctune, "gc", recorder)
    tune_for_serving(version)
    assert recorder.calls == expected
