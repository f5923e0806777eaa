"""A bounded cache of policy decisions, keyed by the part of the input the policy reads.

Real traffic repeats the same caller, model, limits and findings with a different clock
reading, token estimate and client address each time. When the policy set never reads those
fields (``gateway.policy.deps`` finds out from its source), requests that agree on the rest
get the same decision, and evaluating it again is waste. Only successful decisions are kept;
an engine error is never cached. A cache belongs to one engine, so one policy set and one
``data`` document: a reload builds a new engine and starts empty.
"""

from __future__ import annotations

from typing import Any

from gateway.lru import LruCache
from gateway.policy.deps import InputDeps, project
from gateway.types import Decision


class DecisionCache:
    """Least-recently-used, thread-safe; ``size`` 0 or an uncacheable policy set disables it."""

    def __init__(self, deps: InputDeps, size: int) -> None:
        self._paths = deps.paths
        self.enabled = size > 0 and deps.cacheable
        self.reason = deps.uncacheable or ("the policy reads the whole input" if () in deps.paths else None)
        self._entries: LruCache[tuple[str, str], Decision] = LruCache(size if self.enabled else 0)

    @property
    def hits(self) -> int:
        return self._entries.hits

    @property
    def misses(self) -> int:
        return self._entries.misses

    def key(self, phase: str, document: dict[str, Any]) -> tuple[str, str] | None:
        if not self.enabled:
            return None
        try:
            return phase, project(document, self._paths)
        except (TypeError, ValueError):  # not canonical JSON (odd keys, NaN): just evaluate
            return None

    def get(self, key: tuple[str, str]) -> Decision | None:
        return self._entries.get(key)

    def put(self, key: tuple[str, str], decision: Decision) -> None:
        self._entries.put(key, decision)

    def __len__(self) -> int:
        return len(self._entries)
