"""A small thread-safe LRU of analysis results, keyed by the SHA-256 of the text.

Chat clients resend the whole conversation every turn, so most messages of a request have been
analysed before. Keys are digests, so the cache holds no prompt text; values are the immutable
detections (offsets and types, never values).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

from gateway.pii.detection import Detection


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    size: int
    capacity: int


class DetectionCache:
    """LRU of ``text_key(text) -> detections``; a capacity of 0 stores nothing."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("cache capacity must be >= 0")
        self._capacity = capacity
        self._items: OrderedDict[bytes, tuple[Detection, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def get(self, key: bytes) -> tuple[Detection, ...] | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return found

    def put(self, key: bytes, detections: tuple[Detection, ...]) -> None:
        if self._capacity == 0:
            return
        with self._lock:
            self._items[key] = detections
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._hits = 0
            self._misses = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, len(self._items), self._capacity)
