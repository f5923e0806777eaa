"""Garbage-collector settings for a serving process (``llmos serve``).

Two things, both measured with bench/proxies.py's workloads (docs/benchmarks.md):

- ``gc.freeze()`` once start-up is done: everything built so far (Presidio's model, the
  policy, FastAPI's routes) lives as long as the process, and full collections that walk it all
  paused requests for tens to hundreds of milliseconds (p99 spikes under load).
- A young-generation threshold of 10,000 allocations instead of CPython's 700. With 700, the
  security-on gateway ran a young collection about every fourth request (0.2 ms each) and a
  middle one about every fiftieth (0.4 ms at p50, 3.3 ms at p99), which a request waited for.
  With 10,000 (older generations at their usual ratio of 10), in A/B runs of two gateways side by
  side, latency fell about 5% at p50 and p99 at concurrency 1, and at concurrency 16 throughput
  rose 3.5% and p99 fell 11%.

Both were measured on CPython 3.11. Python 3.14's collector is incremental with two
generations, where these thresholds mean something else: there only the freeze is done.
"""

from __future__ import annotations

import gc
import sys

YOUNG_THRESHOLD = 10_000
OLDER_THRESHOLDS = (10, 10)
THRESHOLDS_MEASURED_BEFORE = (3, 14)  # the generational collector these numbers are for


def tune_for_serving(version: tuple[int, ...] = sys.version_info[:3]) -> None:
    """Collect once, freeze what start-up built, and (before Python 3.14) raise the
    young-generation threshold."""
    gc.collect()
    gc.freeze()
    if version < THRESHOLDS_MEASURED_BEFORE:
        gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
