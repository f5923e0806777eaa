"""Every failure is a PiiError, never a partial answer, and never quotes the text."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from gateway.errors import ConfigError, LlmosError
from gateway.pii.config import PiiConfig
from gateway.pii.engine import PiiEngine
from gateway.pii.errors import PiiError
from tests.gateway.pii.conftest import build_engine
from tests.gateway.pii.recognizers_for_tests import BOGUS, BOOM, SLOW, MisbehavingRecognizer

SECRET = "AKIAIOSFODNN7EXAMPLE"
SLEEP_S = 1.5
CONFIG = PiiConfig(entities=("PERSON", "AWS_ACCESS_KEY"), timeout_s=0.5, max_text_chars=1000)  # slack for a loaded machine


@pytest.fixture(scope="module")
def engine() -> Iterator[PiiEngine]:
    with build_engine(CONFIG, extra=[MisbehavingRecognizer(sleep_s=SLEEP_S)]) as e:
        yield e


def test_pii_error_is_an_llmos_error() -> None:
    assert issubclass(PiiError, LlmosError)


def test_text_over_the_limit(engine: PiiEngine) -> None:
    text = SECRET + " " + "x" * 1000
    with pytest.raises(PiiError) as info:
        engine.find(text)
    assert info.value.code == "pii_text_too_large"
    assert SECRET not in str(info.value)
    with pytest.raises(PiiError):
        engine.find_many(["fine", text])
    assert engine.find("x" * 1000) == []  # at the limit is fine


def test_a_recognizer_that_raises(engine: PiiEngine) -> None:
    text = f"{BOOM} {SECRET}"
    for _ in range(2):  # a failure is not cached as "nothing found"
        with pytest.raises(PiiError) as info:
            engine.find(text)
        assert info.value.code == "pii_engine_error"
        assert isinstance(info.value.__cause__, RuntimeError)
        assert SECRET not in str(info.value)
    with pytest.raises(PiiError):
        engine.find_many(["fine", text])
    assert [d.type for d in engine.find(f"now {SECRET}")] == ["AWS_ACCESS_KEY"]


def test_bad_offsets_from_a_recognizer(engine: PiiEngine) -> None:
    with pytest.raises(PiiError) as info:
        engine.find(f"{BOGUS} {SECRET}")
    assert isinstance(info.value.__cause__, ValueError)


def test_timeout_fails_closed_then_recovers(engine: PiiEngine) -> None:
    t0 = time.monotonic()
    with pytest.raises(PiiError) as info:
        engine.find(f"{SLOW} {SECRET}")
    assert info.value.code == "pii_timeout"
    assert time.monotonic() - t0 < SLEEP_S  # the caller did not wait for the slow analysis
    time.sleep(SLEEP_S)
    assert [d.type for d in engine.find(f"then {SECRET}")] == ["AWS_ACCESS_KEY"]


def test_closed_engine() -> None:
    engine = build_engine(PiiConfig(entities=("AWS_ACCESS_KEY",)))
    assert engine.find("seen before") == []
    engine.close()
    for call in (lambda: engine.find("seen before"), lambda: engine.find_many(["new"]), engine.warm):
        with pytest.raises(PiiError) as info:
            call()
        assert info.value.code == "pii_closed"


def test_unknown_entity_and_model_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"pii\.entities: no recognizer for NO_SUCH_THING"):
        PiiEngine(PiiConfig(entities=("PERSON", "NO_SUCH_THING")))
    with pytest.raises(ConfigError, match=r"pii\.spacy_model: .* is not installed"):
        PiiEngine(PiiConfig(spacy_model="en_core_web_sm"))


def test_a_failure_presidio_only_logs_fails_the_analysis(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Presidio catches a regex timeout, logs "skipping" and returns what it has (nothing):
    llmos turns the logged failure into an error, caches nothing, and logs no text."""
    import presidio_analyzer.pattern_recognizer as pattern_recognizer

    config = PiiConfig(entities=("AWS_ACCESS_KEY",), patterns=({"type": "TICKET", "regex": "(x|xx)+y"},))
    text = "x" * 40 + "! " + SECRET
    with build_engine(config) as engine:
        assert [d.type for d in engine.find("xxy")] == ["TICKET"]
        monkeypatch.setattr(pattern_recognizer, "REGEX_TIMEOUT_SECONDS", 0.01)
        for _ in range(2):  # not cached as "nothing found"
            with pytest.raises(PiiError) as info:
                engine.find(text)
            assert info.value.code == "pii_engine_error"
        monkeypatch.setattr(pattern_recognizer, "REGEX_TIMEOUT_SECONDS", 60)
        assert [d.type for d in engine.find(f"then {SECRET}")] == ["AWS_ACCESS_KEY"]
    # Presidio's records never reach the gateway's handlers (its messages may quote values).
    assert logging.getLogger("presidio-analyzer").propagate is False
    assert not [r for r in caplog.records if r.name.startswith("llmos") and SECRET in r.getMessage()]
