"""Detection table, evasions and batching, against one engine built for this module."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from gateway.pii.config import PatternSpec, PiiConfig
from gateway.pii.detection import Detection
from gateway.pii.engine import PiiEngine
from gateway.pii.scanner import PresidioScanner
from gateway.scanner import PatternScanner, TextTooLarge, build_scanner
from tests.gateway.pii.conftest import build_engine

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
LLMOS_KEY = "sk-llmos-0123456789abcdef-AbCdEfGhIjKlMnOpQrStUvWxYz012345"
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACB=\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
TRUNCATED_PEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\nAwEHoUQDQgAEZ"
GHP = "ghp_" + "A1b2" * 9

CONFIG = PiiConfig(
    deny_lists={"PROJECT": ("Project Bluebird",)},
    patterns=(PatternSpec(type="TICKET", regex=r"\bTCK-[0-9]{6}\b", score=0.9),),
)

# text -> [(entity type, the exact substring expected)], in order of position.
TABLE: list[tuple[str, list[tuple[str, str]]]] = [
    ("My name is John Smith.", [("PERSON", "John Smith")]),
    ("She moved to Berlin last year.", [("LOCATION", "Berlin")]),
    ("Please email jane.doe@example.com today.", [("EMAIL_ADDRESS", "jane.doe@example.com")]),
    ("My phone number is (415) 555-2671.", [("PHONE_NUMBER", "(415) 555-2671")]),
    ("Visa 4111 1111 1111 1111 expires soon.", [("CREDIT_CARD", "4111 1111 1111 1111")]),
    ("My card is 5500-0000-0000-0004.", [("CREDIT_CARD", "5500-0000-0000-0004")]),
    ("Pay with 2223000048410010 please.", [("CREDIT_CARD", "2223000048410010")]),  # 2-series: llmos's own
    ("Card 4111 1111 1111 1112 expires soon.", []),  # fails Luhn
    ("My SSN is 123-45-6789.", [("US_SSN", "123-45-6789")]),  # Presidio alone drops this sample
    ("SSN: 078-05-1120", [("US_SSN", "078-05-1120")]),
    ("ids 000-12-3456 and 666-12-3456 are never issued", []),
    ("IBAN GB82 WEST 1234 5698 7654 32 please", [("IBAN_CODE", "GB82 WEST 1234 5698 7654 32")]),
    ("The server at 10.0.0.12 is down.", [("IP_ADDRESS", "10.0.0.12")]),
    ("Ping 2001:db8::1 from the host.", [("IP_ADDRESS", "2001:db8::1")]),
    ("aws key AKIAIOSFODNN7EXAMPLE rotated", [("AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE")]),
    ("temporary ASIAY34FZKBOKMUTVV7A here", [("AWS_ACCESS_KEY", "ASIAY34FZKBOKMUTVV7A")]),
    ("lower akiaiosfodnn7example is not a key", []),
    (f"key:\n{PEM}\nthanks", [("PRIVATE_KEY", PEM)]),
    (
        "here -----BEGIN PRIVATE KEY----- and the rest is gone",
        [("PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----")],
    ),
    (TRUNCATED_PEM, [("PRIVATE_KEY", TRUNCATED_PEM)]),
    (f"token {JWT} ok", [("JWT", JWT)]),
    ("eyJub3QiOiJqd3QifQ.eyJzdWIiOiIxIn0.abc", []),  # header without "alg"
    (f"use {LLMOS_KEY} now", [("LLMOS_API_KEY", LLMOS_KEY)]),
    (
        f"openai sk-proj-abcdefghijklmnopqrstuvwxyz123456 github {GHP} slack xoxb-1234567890-abcdefghij",
        [
            ("API_KEY", "sk-proj-abcdefghijklmnopqrstuvwxyz123456"),
            ("API_KEY", GHP),
            ("API_KEY", "xoxb-1234567890-abcdefghij"),
        ],
    ),
    ("We discussed project bluebird at lunch.", [("PROJECT", "project bluebird")]),
    ("The Project Bluebirds are singing.", []),  # whole words only
    ("Ticket TCK-123456 was closed.", [("TICKET", "TCK-123456")]),
    ("Ticket TCK-1234567 was closed.", []),
]

CLEAN = [
    "The weather is nice today.",
    "Version 1.2.3 was released on schedule.",
    "Order 12 items at 3 pm.",
    "Run pip install requests and restart the service.",
    "The meeting is at 10:30 in room 4.",
    "Refactor the parser so that it returns a list of tokens.",
    "",
    "   \n\t",
]

# Evasions: invisible characters, full-width forms and homoglyphs inside the value.
EVASIONS: list[tuple[str, str, str]] = [
    ("Write to j\u200bohn@exa\u200bmple.com now", "EMAIL_ADDRESS", "j\u200bohn@exa\u200bmple.com"),
    ("Write to \ufeffjohn@example\u2060.com now", "EMAIL_ADDRESS", "john@example\u2060.com"),
    ("Card 4111\u200b1111\u200b1111\u200b1111 ok", "CREDIT_CARD", "4111\u200b1111\u200b1111\u200b1111"),
    ("Card ４１１１ １１１１ １１１１ １１１１ ok", "CREDIT_CARD", "４１１１ １１１１ １１１１ １１１１"),
    ("My SSN is １２３-４５-６７８９.", "US_SSN", "１２３-４５-６７８９"),
    ("SSN 123\u00ad-45-6789 ok", "US_SSN", "123\u00ad-45-6789"),
    ("SSN ١٢٣-٤٥-٦٧٨٩ ok", "US_SSN", "١٢٣-٤٥-٦٧٨٩"),
    ("Write to јоhn@ехаmple.com please", "EMAIL_ADDRESS", "јоhn@ехаmple.com"),
    ("key АКІАIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY", "АКІАIOSFODNN7EXAMPLE"),
]


@pytest.fixture(scope="module")
def engine() -> Iterator[PiiEngine]:
    with build_engine(CONFIG) as e:
        yield e


def spans(text: str, expected: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    out = []
    for etype, value in expected:
        start = text.index(value)
        out.append((etype, start, start + len(value)))
    return out


def found(detections: list[Detection]) -> list[tuple[str, int, int]]:
    return [(d.type, d.start, d.end) for d in detections]


@pytest.mark.parametrize(("text", "expected"), TABLE, ids=[t[:40] for t, _ in TABLE])
def test_detection_table(engine: PiiEngine, text: str, expected: list[tuple[str, str]]) -> None:
    detections = engine.find(text)
    assert found(detections) == spans(text, expected)
    for d in detections:
        assert 0.5 <= d.score <= 1.0
        assert d.recognizer


@pytest.mark.parametrize("text", CLEAN)
def test_clean_text_has_no_findings(engine: PiiEngine, text: str) -> None:
    assert engine.find(text) == []


@pytest.mark.parametrize(("text", "etype", "value"), EVASIONS, ids=[e[2] for e in EVASIONS])
def test_evasions_found_with_original_offsets(engine: PiiEngine, text: str, etype: str, value: str) -> None:
    detections = [d for d in engine.find(text) if d.type == etype]
    assert found(detections) == spans(text, [(etype, value)])


def test_secret_beats_generic_key_and_ssn_context_raises_score(engine: PiiEngine) -> None:
    (key,) = engine.find(f"use {LLMOS_KEY} now")
    assert (key.type, key.recognizer, key.score) == ("LLMOS_API_KEY", "LlmosApiKeyRecognizer", 1.0)
    (plain,) = engine.find("number 219-09-9999 here")
    (with_context,) = engine.find("my ssn 219-09-9999 here")
    assert plain.score < with_context.score


def test_find_many_matches_find_and_batches() -> None:
    texts = [t for t, _ in TABLE] + CLEAN + [t for t, _, _ in EVASIONS]
    with build_engine(CONFIG.model_copy(update={"cache_entries": 0})) as uncached:
        one_by_one = [uncached.find(t) for t in texts]
        assert uncached.find_many(texts) == one_by_one
        assert uncached.find_many([]) == []


def test_concurrent_callers_get_the_same_answers(engine: PiiEngine) -> None:
    texts = [t for t, _ in TABLE]
    expected = {t: engine.find(t) for t in texts}
    engine.cache_clear()
    errors: list[str] = []

    def worker(offset: int) -> None:
        for t in texts[offset:] + texts[:offset]:
            if engine.find(t) != expected[t]:
                errors.append(t)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_entities_include_deny_list_and_pattern_types(engine: PiiEngine) -> None:
    assert engine.entities[-2:] == ("PROJECT", "TICKET")
    assert set(CONFIG.entities) <= set(engine.entities)


def test_the_configured_scanner_is_built() -> None:
    patterns = build_scanner(PiiConfig(detector="patterns"))
    assert isinstance(patterns, PatternScanner)
    presidio = build_scanner(PiiConfig(entities=("PERSON", "EMAIL_ADDRESS"), cache_entries=0))
    try:
        assert isinstance(presidio, PresidioScanner)
        (person, email) = presidio.find("Ada Lovelace wrote to ada@example.com")
        assert (person.type, email.type) == ("PERSON", "EMAIL_ADDRESS")
        assert (email.recognizer, email.start, email.end) == ("OfflineEmailRecognizer", 22, 37)
        assert presidio.find_many(["nothing here", "ada@example.com"])[1][0].type == "EMAIL_ADDRESS"
        with pytest.raises(TextTooLarge):
            presidio.find("x" * (PiiConfig().max_text_chars + 1))
    finally:
        presidio.close()


def test_a_context_word_that_raised_a_score_is_kept_as_evidence(engine: PiiEngine) -> None:
    """Presidio raises a phone number's score when a context word stands near it; the detection
    says which word (the recogniser's own, never text of the finding)."""
    phones = [
        d for d in engine.find("Please call my phone 212-555-0147 tomorrow") if d.type == "PHONE_NUMBER"
    ]
    assert phones and phones[0].context == ("phone",), phones
    assert all(d.context == () for d in engine.find("212-555-0147"))
