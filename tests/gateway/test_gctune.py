from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.gctune import OLDER_THRESHOLDS, YOUNG_THRESHOLD, tune_for_serving


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_serving_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    built_at_start_up = [{"model": index} for index in range(1000)]
    gc.unfreeze()
    tune_for_serving()
    assert gc.get_freeze_count() >= len(built_at_start_up)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
    assert YOUNG_THRESHOLD > 700  # CPython's default, which it replaces
