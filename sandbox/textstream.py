"""Incremental detokenisation with stop strings: decide which new text may be streamed.

The model side re-decodes all generated tokens after each step and calls ``push`` with that
text. Two things are held back until a later token settles them:

* a trailing run of U+FFFD, which is how an incomplete UTF-8 sequence of a byte-level BPE
  decodes until its remaining bytes arrive;
* the longest suffix that is a prefix of some stop string (it may still become that string).

When a stop string appears, the text before it is emitted and the stream is finished; the stop
string itself is never emitted.
"""

from __future__ import annotations

REPLACEMENT_CHAR = "\ufffd"


class StopTextStream:
    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        if any(not s for s in stop):
            raise ValueError("stop strings must be non-empty")
        self._stop = stop
        self._emitted = 0  # characters of the decoded text already handed out
        self.stopped = False

    def push(self, text: str) -> str:
        """Take the decoded text so far; return the new text that is safe to emit."""
        if self.stopped:
            return ""
        start = self._emitted
        hit = min((i for i in (text.find(s, start) for s in self._stop) if i >= 0), default=-1)
        if hit >= 0:
            self.stopped = True
            self._emitted = hit
            return text[start:hit]
        end = len(text)
        while end > start and text[end - 1] == REPLACEMENT_CHAR:
            end -= 1
        end -= self._held_stop_prefix(text, start, end)
        self._emitted = end
        return text[start:end]

    def finish(self, text: str) -> str:
        """The generation ended (EOS or length): return everything not yet emitted."""
        piece = self.push(text)
        if self.stopped:
            return piece
        rest = text[self._emitted :]
        self._emitted = len(text)
        return piece + rest

    def _held_stop_prefix(self, text: str, start: int, end: int) -> int:
        """Length of the longest suffix of text[start:end] that is a proper prefix of a stop string."""
        longest = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, end - start), longest, -1):
                if text.startswith(s[:n], end - n):
                    longest = n
                    break
        return longest
