from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.pii.cache import DetectionCache, text_key
from gateway.pii.config import PiiConfig
from gateway.pii.detection import Detection
from gateway.pii.engine import PiiEngine
from tests.gateway.pii.conftest import build_engine
from tests.gateway.pii.recognizers_for_tests import CountingRecognizer

CONFIG = PiiConfig(entities=("PERSON", "EMAIL_ADDRESS"), cache_entries=8)


@pytest.fixture(scope="module")
def counted() -> Iterator[tuple[PiiEngine, CountingRecognizer]]:
    counter = CountingRecognizer()
    with build_engine(CONFIG, extra=[counter]) as engine:
        yield engine, counter


def test_same_text_runs_presidio_once(counted: tuple[PiiEngine, CountingRecognizer]) -> None:
    engine, counter = counted
    engine.cache_clear()
    before = counter.calls
    text = "Mail john.doe@example.com about the invoice, Maria Garcia."
    first = engine.find(text)
    second = engine.find(text)
    assert first == second
    assert [d.type for d in first] == ["EMAIL_ADDRESS", "PERSON"]
    assert counter.calls - before == 1
    stats = engine.cache_stats()
    assert (stats.hits, stats.size) == (1, 1)


def test_chat_history_only_analyses_the_new_message(counted: tuple[PiiEngine, CountingRecognizer]) -> None:
    engine, counter = counted
    engine.cache_clear()
    history = ["Hi, I am Maria Garcia.", "Sure, how can I help?"]
    engine.find_many(history)
    before = counter.calls
    turn = [*history, "My e-mail is maria@example.org.", history[0]]
    results = engine.find_many(turn)
    assert counter.calls - before == 1  # only the new message; the repeat is not analysed twice
    assert results[0] == results[3]
    assert [d.type for d in results[2]] == ["EMAIL_ADDRESS"]


def test_cache_is_bounded(counted: tuple[PiiEngine, CountingRecognizer]) -> None:
    engine, counter = counted
    engine.cache_clear()
    for i in range(20):
        engine.find(f"message number {i}")
    assert engine.cache_stats().size == 8
    before = counter.calls
    engine.find("message number 0")  # evicted long ago
    engine.find("message number 19")  # still there
    assert counter.calls - before == 1


def test_cache_disabled() -> None:
    counter = CountingRecognizer()
    with build_engine(CONFIG.model_copy(update={"cache_entries": 0}), extra=[counter]) as engine:
        before = counter.calls
        engine.find("the same words")
        engine.find("the same words")
        assert counter.calls - before == 2
        assert engine.cache_stats().size == 0


def test_lru_order_and_keys() -> None:
    cache = DetectionCache(2)
    a, b, c = (text_key(t) for t in ("a", "b", "c"))
    hit = (Detection("X", 0, 1, "r", 1.0),)
    cache.put(a, hit)
    cache.put(b, ())
    assert cache.get(a) == hit  # a is now the most recent
    cache.put(c, ())
    assert cache.get(b) is None
    assert cache.get(a) == hit
    assert len(a) == 32 and text_key("a") == a and text_key("\ud800") != a  # lone surrogates hash
    with pytest.raises(ValueError, match=">= 0"):
        DetectionCache(-1)
