"""The engine's non-blocking path: ``find_many_future`` and ``PresidioScanner.find_many_async``,
which the gateway awaits without holding a thread while texts queue for the PII worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.pii.config import PiiConfig
from gateway.pii.engine import PiiEngine
from gateway.pii.errors import PiiError
from gateway.pii.scanner import PresidioScanner
from gateway.scanner import ScanFailed, TextTooLarge, scan_texts
from tests.gateway.pii.conftest import build_engine
from tests.gateway.pii.recognizers_for_tests import BOOM, SLOW, CountingRecognizer, MisbehavingRecognizer

SLEEP_S = 0.5
CONFIG = PiiConfig(entities=("PERSON", "EMAIL_ADDRESS"), timeout_s=5, max_text_chars=1000)
counter = CountingRecognizer()


@pytest.fixture(scope="module")
def engine() -> Iterator[PiiEngine]:
    with build_engine(CONFIG, extra=[MisbehavingRecognizer(sleep_s=SLEEP_S), counter]) as e:
        yield e


def test_the_future_gives_what_find_many_gives(engine: PiiEngine) -> None:
    texts = ["Mail alice@example.com now.", "nothing here", "Mail alice@example.com now."]
    got = engine.find_many_future(texts).result(timeout=5)
    assert got == engine.find_many(texts)
    assert [d.type for d in got[0]] == ["EMAIL_ADDRESS"] and got[1] == []


def test_cached_texts_are_answered_at_once_without_the_worker(engine: PiiEngine) -> None:
    text = "Write to bob@example.org today."
    engine.find(text)
    before = counter.calls
    future = engine.find_many_future([text, text])
    assert future.done() and counter.calls == before
    assert [d.type for d in future.result()[0]] == ["EMAIL_ADDRESS"]


def test_an_oversized_text_is_refused_before_anything_is_queued(engine: PiiEngine) -> None:
    with pytest.raises(PiiError) as info:
        engine.find_many_future(["fine", "x" * 1001])
    assert info.value.code == "pii_text_too_large"


def test_a_failed_analysis_completes_the_future_with_a_pii_error(engine: PiiEngine) -> None:
    future = engine.find_many_future([f"secret text {BOOM}"])
    with pytest.raises(PiiError) as info:
        future.result(timeout=5)
    assert "secret text" not in str(info.value)


def test_a_cancelled_future_drops_its_texts_before_they_are_analysed(engine: PiiEngine) -> None:
    blocker = engine.find_many_future([f"hold the worker {SLOW} {time.time()}"])
    time.sleep(0.1)  # the worker is busy with it (or about to be)
    never = f"never analysed {time.time()}"
    dropped = engine.find_many_future([never])
    assert dropped.cancel()
    blocker.result(timeout=5)
    after = f"after {time.time()}"
    engine.find_many([after])  # queued behind the dropped job: the worker has moved past it
    assert after in counter.texts
    assert never not in counter.texts


def test_async_scanning_holds_no_thread_while_texts_wait(engine: PiiEngine) -> None:
    """With a one-thread default executor, scans queued behind a slow analysis leave that
    thread free for other blocking calls (a thread per waiting scan would starve them)."""
    scanner = PresidioScanner(engine)

    async def main() -> tuple[int, list[list[list[str]]]]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        # Fixed texts, used by no other test of this module, so none is answered from the
        # cache; no timestamp in them, since NER can read a random number as part of a name.
        scans = [
            asyncio.create_task(scan_texts(scanner, [f"{SLOW} queue test"], 5)),
            *(
                asyncio.create_task(scan_texts(scanner, [f"Mail c{i}@example.com please."], 5))
                for i in range(3)
            ),
        ]
        await asyncio.sleep(0.1)
        other = await asyncio.wait_for(asyncio.to_thread(lambda: 42), SLEEP_S / 2)
        done = await asyncio.gather(*scans)
        return other, [[[f.type for f in per_text] for per_text in r] for r in done]

    other, found = asyncio.run(main())
    assert other == 42
    assert found == [[[]], [["EMAIL_ADDRESS"]], [["EMAIL_ADDRESS"]], [["EMAIL_ADDRESS"]]]


def test_async_scanning_maps_errors_like_the_thread_path(engine: PiiEngine) -> None:
    scanner = PresidioScanner(engine)

    async def scan(texts: list[str], timeout: float) -> object:
        return await scan_texts(scanner, texts, timeout)

    with pytest.raises(TextTooLarge):
        asyncio.run(scan(["x" * 1001], 5))
    with pytest.raises(ScanFailed, match="failed: PiiError"):
        asyncio.run(scan([f"private {BOOM}"], 5))
    with pytest.raises(ScanFailed, match="timed out"):
        asyncio.run(scan([f"{SLOW} {time.time()}"], 0.1))
    assert asyncio.run(scan(["Mail d@example.com"], 5)) != [[]]  # usable afterwards
