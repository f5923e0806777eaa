"""A small thread-safe LRU of analysis results, keyed by the SHA-256 of the text.

Chat clients resend the whole conversation every turn, so most messages of a request have been
analysed before. Keys are digests, so the cache holds no prompt text; values are the immutable
detections (offsets and types, never values).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.lru import LruCache
from gateway.pii.detection import Detection


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    size: int
    capacity: int


class DetectionCache(LruCache[bytes, tuple[Detection, ...]]):
    """LRU of ``text_key(text) -> detections``; a capacity of 0 stores nothing."""

    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses, len(self), self.capacity)
