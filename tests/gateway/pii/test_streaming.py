"""Presidio behind the output guard: a stream never releases any part of an entity, however
the model's text is cut into chunks, and the hold-back stays bounded."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest

from gateway.outputguard import OutputGuard
from gateway.pii.config import PiiConfig
from gateway.pii.scanner import PresidioScanner
from gateway.types import Obligations, Redaction

from .conftest import build_engine

ENTITIES = (
    "PERSON",
    "LOCATION",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "AWS_ACCESS_KEY",
)
REDACT = Obligations(redact=Redaction(entities=ENTITIES, operator="placeholder"))

# Model output holding every kind of value, multi-word ones included.
VALUES = {
    "PERSON": "Katherine Johnson",
    "LOCATION": "San Francisco",
    "EMAIL_ADDRESS": "katherine.johnson@example.com",
    "PHONE_NUMBER": "+1 (415) 555-0132",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN_CODE": "DE89 3704 0044 0532 0130 00",
    "AWS_ACCESS_KEY": "AKIAIOSFODNN7EXAMPLE",
}
TEXT = (
    f"Sure. I have written to {VALUES['PERSON']} in {VALUES['LOCATION']} at {VALUES['EMAIL_ADDRESS']}, "
    f"and you can call her on {VALUES['PHONE_NUMBER']} today. The card on file is {VALUES['CREDIT_CARD']} "
    f"and the refund goes to {VALUES['IBAN_CODE']} as agreed. Your key {VALUES['AWS_ACCESS_KEY']} "
    "should be rotated now."
)


def _decide(findings: dict[str, int], tokens: int, finish: str | None) -> Obligations:
    return REDACT


@pytest.fixture(scope="module")
def scanner() -> Iterator[PresidioScanner]:
    with build_engine(PiiConfig(entities=ENTITIES)) as engine:
        yield PresidioScanner(engine)


def _chunkings(text: str) -> Iterator[tuple[str, list[str]]]:
    yield "words", re.findall(r"\s*\S+", text)
    yield "characters", list(text)
    rng = random.Random(7)
    for n in range(3):
        cuts = sorted(rng.sample(range(1, len(text)), 40))
        yield f"random-{n}", [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def _stream(scanner: PresidioScanner, pieces: list[str]) -> list[str]:
    guard = OutputGuard(_decide, b"k", scanner.find)
    out = [guard.feed(piece) for piece in pieces]
    out.append(guard.finish(len(pieces), "stop"))
    return out


@pytest.mark.parametrize("name", ["words", "characters", "random-0", "random-1", "random-2"])
def test_no_part_of_any_entity_is_ever_released(scanner: PresidioScanner, name: str) -> None:
    pieces = dict(_chunkings(TEXT))[name]
    assert "".join(pieces) == TEXT
    delivered = "".join(_stream(scanner, pieces))
    for etype, value in VALUES.items():
        assert value not in delivered, etype
        for word in re.findall(r"[A-Za-z]{3,}", value):  # no word of a multi-word value either
            assert word not in delivered, (etype, word)
    # The only digits in TEXT are in values: none may show, whole or in part.
    assert not re.search(r"\d", delivered), delivered
    for etype in VALUES:
        assert f"<{etype}>" in delivered, etype
    assert delivered.startswith("Sure. I have written to <PERSON> in <LOCATION> at")
    assert delivered.endswith("should be rotated now.")


def test_text_is_released_as_it_settles(scanner: PresidioScanner) -> None:
    pieces = re.findall(r"\s*\S+", TEXT)
    out = _stream(scanner, pieces)
    # Released during the stream, not all at the end; the end holds only the tail.
    assert sum(1 for chunk in out[:-1] if chunk) >= 10
    assert len(out[-1]) < 40
