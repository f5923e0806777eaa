from __future__ import annotations

import contextlib
import threading
from concurrent.futures import CancelledError

import pytest

from gateway.pii.batcher import Batcher, BatcherClosed


class Recorder:
    """Upper-cases texts; the first call blocks until released; a text "bad" makes a call fail."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.started.set()
            assert self.release.wait(5)
        if "bad" in texts:
            raise ValueError("bad text")
        return [t.upper() for t in texts]


def test_waiting_callers_share_one_batch_and_get_their_own_results() -> None:
    fn = Recorder()
    batcher = Batcher(fn, max_texts=64)
    first = batcher.submit(["a"])
    assert fn.started.wait(5)
    waiting = [batcher.submit([f"b{i}", f"c{i}"]) for i in range(5)]
    fn.release.set()
    assert first.result(5) == ["A"]
    assert [f.result(5) for f in waiting] == [[f"B{i}", f"C{i}"] for i in range(5)]
    assert len(fn.calls) == 2  # the five waiting callers went through together
    assert fn.calls[1] == [t for i in range(5) for t in (f"b{i}", f"c{i}")]
    batcher.close()


def test_a_batch_is_capped_at_max_texts() -> None:
    fn = Recorder()
    batcher = Batcher(fn, max_texts=3)
    batcher.submit(["x"])
    assert fn.started.wait(5)
    futures = [batcher.submit([str(i)]) for i in range(6)]
    fn.release.set()
    assert [f.result(5) for f in futures] == [[str(i)] for i in range(6)]
    assert [len(c) for c in fn.calls[1:]] == [3, 3]
    batcher.close()


def test_one_bad_text_fails_only_its_caller() -> None:
    fn = Recorder()
    batcher = Batcher(fn)
    batcher.submit(["x"])
    assert fn.started.wait(5)
    good, bad, other = batcher.submit(["ok"]), batcher.submit(["bad"]), batcher.submit(["fine"])
    fn.release.set()
    assert good.result(5) == ["OK"]
    assert other.result(5) == ["FINE"]
    with pytest.raises(ValueError):
        bad.result(5)
    batcher.close()


def test_a_cancelled_caller_is_skipped_and_close_cancels_the_queue() -> None:
    fn = Recorder()
    batcher = Batcher(fn)
    running = batcher.submit(["x"])
    assert fn.started.wait(5)
    gave_up = batcher.submit(["gave-up"])
    assert gave_up.cancel()
    queued = batcher.submit(["queued"])
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.submit(["late"])
    fn.release.set()
    assert running.result(5) == ["X"]
    # The close marker came after "queued": it still ran (the batch took it) or was cancelled.
    with contextlib.suppress(CancelledError):
        assert queued.result(5) == ["QUEUED"]
    assert all("gave-up" not in c for c in fn.calls)
