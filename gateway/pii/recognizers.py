"""llmos's own Presidio recognizers: secrets, US SSNs and card numbers as llmos always found
them, e-mail addresses without the network, and builders for configured deny lists and regexes.

Secrets (case-sensitive patterns, high scores: a match is a leak, not a guess):

    AWS_ACCESS_KEY  AKIA/ASIA + 16 upper-case letters or digits                          0.95
    PRIVATE_KEY     a whole PEM block BEGIN ... END (same label); else the header with     1.0
                    any base64 lines after it (a truncated paste), or the header alone
    JWT             three base64url segments, the first ``eyJ...`` decoding to a JSON      1.0
                    object with ``alg`` (the check drops look-alikes)
    LLMOS_API_KEY   ``sk-llmos-<16 hex>-<secret>`` (gateway/keys.py)                        1.0
    API_KEY         ``sk-...``, ``ghp_...``, ``xox[abp]-...``                               0.9

Presidio's own US_SSN recognizer scores a bare ``123-45-6789`` 0.5 and *drops* well-known
sample numbers such as ``123-45-6789``; its card recognizer only knows some issuer prefixes.
``LlmosSsnRecognizer`` and ``LlmosCardRecognizer`` keep what ``gateway/findings.py`` found
(any dashed SSN outside the never-issued ranges; any 13-19 digit group run that passes Luhn),
so the Presidio engine finds at least what the regex detectors did. Presidio's recognizers
still run beside them; for one span, the higher score wins.

Presidio's ``EmailRecognizer`` validates the domain with ``tldextract.extract``, the module
global that downloads the public suffix list on first use. ``OfflineEmailRecognizer`` uses an
extractor built on the bundled snapshot instead (see ``offline.py``), and also keeps addresses
whose top-level label is alphabetic but not public (``alice@corp.internal``) at the pattern's
score, as the regex detector did.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

import tldextract
from presidio_analyzer import (
    AnalysisExplanation,
    LocalRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerResult,
)
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import EmailRecognizer, PhoneRecognizer

from gateway.errors import ConfigError
from gateway.findings import card_spans
from gateway.pii.config import PatternSpec
from gateway.pii.normalize import normalize

# Flags for Presidio's ``regex`` compile (same values as ``re``'s). Presidio's default adds
# IGNORECASE, which would let ``akia...`` or ``-----begin private key-----`` through.
CASE_SENSITIVE = int(re.DOTALL | re.MULTILINE)
CASE_INSENSITIVE = int(re.DOTALL | re.MULTILINE | re.IGNORECASE)

_PEM_LABEL = r"((?:[A-Z0-9]{1,16} ){0,2})"  # "", "RSA ", "OPENSSH ", "ENCRYPTED ", ...
_PEM_BODY = r"[A-Za-z0-9+/=\s:,.\-]{0,65536}?"  # base64 and RFC 1421 headers (Proc-Type, DEK-Info)

SSN_CONTEXT = ["social", "security", "ssn", "ssns", "ssid"]
CARD_CONTEXT = ["credit", "card", "visa", "mastercard", "cc ", "amex", "discover", "jcb", "diners", "maestro"]


def _pattern_recognizer(
    entity: str, name: str, patterns: list[Pattern], language: str, flags: int = CASE_SENSITIVE
) -> PatternRecognizer:
    return PatternRecognizer(
        supported_entity=entity,
        name=name,
        patterns=patterns,
        supported_language=language,
        global_regex_flags=flags,
    )


def aws_access_key_recognizer(language: str = "en") -> PatternRecognizer:
    return _pattern_recognizer(
        "AWS_ACCESS_KEY",
        "LlmosAwsAccessKeyRecognizer",
        [Pattern("AWS access key id", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", 0.95)],
        language,
    )


def private_key_recognizer(language: str = "en") -> PatternRecognizer:
    header = rf"-----BEGIN {_PEM_LABEL}PRIVATE KEY-----"
    return _pattern_recognizer(
        "PRIVATE_KEY",
        "LlmosPrivateKeyRecognizer",
        [
            Pattern("PEM private key block", rf"{header}{_PEM_BODY}-----END \1PRIVATE KEY-----", 1.0),
            # No END: the header, and the base64 that follows it, as far as it goes.
            Pattern("PEM private key header", rf"{header}(?:\s{{1,4}}[A-Za-z0-9+/=]{{8,}}){{0,1024}}", 1.0),
        ],
        language,
    )


def llmos_api_key_recognizer(language: str = "en") -> PatternRecognizer:
    return _pattern_recognizer(
        "LLMOS_API_KEY",
        "LlmosApiKeyRecognizer",
        [Pattern("llmos API key", r"\bsk-llmos-[0-9a-f]{16}-[A-Za-z0-9_-]{8,}", 1.0)],
        language,
    )


def api_key_recognizer(language: str = "en") -> PatternRecognizer:
    return _pattern_recognizer(
        "API_KEY",
        "LlmosGenericApiKeyRecognizer",
        [
            Pattern(
                "API key",
                r"\b(?:sk-[A-Za-z0-9_-]{20,}|ghp_[A-Za-z0-9]{36}|xox[abp]-[A-Za-z0-9-]{10,})",
                0.9,
            )
        ],
        language,
    )


class JwtRecognizer(PatternRecognizer):
    """JSON Web Tokens (JWS compact form; the signature may be empty for ``alg: none``)."""

    PATTERN = r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*(?![A-Za-z0-9_-])"

    def __init__(self, language: str = "en") -> None:
        super().__init__(
            supported_entity="JWT",
            name="LlmosJwtRecognizer",
            patterns=[Pattern("JWT", self.PATTERN, 0.5)],
            supported_language=language,
            global_regex_flags=CASE_SENSITIVE,
        )

    def validate_result(self, pattern_text: str) -> bool:
        """The header must be base64url of a JSON object with an ``alg``."""
        header = pattern_text.split(".", 1)[0]
        try:
            decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
        except (binascii.Error, ValueError):
            return False
        return isinstance(decoded, dict) and "alg" in decoded


class LlmosSsnRecognizer(PatternRecognizer):
    """Dashed US SSNs outside the never-issued ranges (000, 666, 9xx; 00 group; 0000 serial)."""

    PATTERN = r"\b(?!000|666|9[0-9]{2})[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}\b"

    def __init__(self, language: str = "en") -> None:
        super().__init__(
            supported_entity="US_SSN",
            name="LlmosSsnRecognizer",
            patterns=[Pattern("US SSN (dashed)", self.PATTERN, 0.85)],
            context=SSN_CONTEXT,
            supported_language=language,
            global_regex_flags=CASE_SENSITIVE,
        )


class LlmosCardRecognizer(LocalRecognizer):
    """Card numbers as ``gateway/findings.py`` finds them: inside each run of digit groups
    (separated by one space or dash), from each group start, the shortest span ending at a
    group end that holds 13-19 digits and passes the Luhn check."""

    NAME = "LlmosCardRecognizer"
    SCORE = 0.7
    _RUN = re.compile(r"\b[0-9](?:[ -]?[0-9])*\b")

    def __init__(self, language: str = "en") -> None:
        super().__init__(
            supported_entities=["CREDIT_CARD"],
            name=self.NAME,
            supported_language=language,
            context=CARD_CONTEXT,
        )

    def load(self) -> None:
        return None

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = []
        for run in self._RUN.finditer(text):
            for start, end in card_spans(run.group()):
                results.append(self._result(run.start() + start, run.start() + end))
        return results

    def _result(self, start: int, end: int) -> RecognizerResult:
        explanation = AnalysisExplanation(
            recognizer=self.NAME,
            original_score=self.SCORE,
            textual_explanation="13-19 digits passing the Luhn check",
        )
        return RecognizerResult(
            entity_type="CREDIT_CARD",
            start=start,
            end=end,
            score=self.SCORE,
            analysis_explanation=explanation,
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.NAME,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


_ALPHA_TLD = re.compile(r"\.[A-Za-z]{2,24}$")


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer, validating domains against a given (offline) extractor.

    A domain under a public suffix scores 1.0; one ending in an alphabetic label that is not a
    public suffix keeps the pattern's 0.5; anything else is dropped.
    """

    def __init__(self, extractor: tldextract.TLDExtract, language: str = "en") -> None:
        self._extractor = extractor
        super().__init__(supported_language=language, name="OfflineEmailRecognizer")

    def validate_result(self, pattern_text: str) -> bool | None:
        if self._extractor(pattern_text).fqdn:
            return True
        if _ALPHA_TLD.search(pattern_text):
            return None
        return False


class LlmosPhoneRecognizer(PhoneRecognizer):
    """Presidio's phone recognizer (python-phonenumbers, its default regions) scoring 0.6, not 0.4.

    At 0.4 a phone number is only reported with a context word before it ("phone", "mobile",
    ...; "call" never counts: it is a spaCy stop word, filtered out of the context), which on
    the benchmark corpus left 1 phone number in 29 found. Numbers python-phonenumbers accepts
    as valid for a region are a strong enough signal for a gateway that would rather redact.
    """

    SCORE = 0.6
    MIN_DIGITS = 5  # no region's valid numbers are shorter; most texts have fewer digits in all

    def __init__(self, language: str = "en") -> None:
        super().__init__(supported_language=language, name="LlmosPhoneRecognizer")

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        # python-phonenumbers scans the text once per region (a fifth of the analysis time);
        # skip it when the text cannot hold a number. The text is normalised: digits are ASCII.
        if sum(ch.isdigit() for ch in text) < self.MIN_DIGITS:
            return []
        # Presidio annotates the argument as NlpArtifacts with a None default; it accepts None.
        results: list[RecognizerResult] = super().analyze(text, entities, cast(NlpArtifacts, nlp_artifacts))
        return results


def secret_recognizers(language: str = "en") -> list[LocalRecognizer]:
    """One recognizer per secret type, plus llmos's SSN and card recognizers."""
    return [
        aws_access_key_recognizer(language),
        private_key_recognizer(language),
        JwtRecognizer(language),
        llmos_api_key_recognizer(language),
        api_key_recognizer(language),
        LlmosSsnRecognizer(language),
        LlmosCardRecognizer(language),
    ]


def deny_list_recognizers(
    deny_lists: Mapping[str, Sequence[str]], language: str = "en"
) -> list[PatternRecognizer]:
    """One recognizer per entity type: its terms, case-insensitive, as whole words, score 1.0.

    Terms are normalised like the text they are matched against (``normalize.py``), so a
    full-width or homoglyph spelling in the configuration still matches.
    """
    recognizers: list[PatternRecognizer] = []
    for entity, terms in deny_lists.items():
        normalized = list(dict.fromkeys(normalize(t.strip()).text for t in terms))
        recognizers.append(
            PatternRecognizer(
                supported_entity=entity,
                name=f"LlmosDenyList[{entity}]",
                deny_list=normalized,
                deny_list_score=1.0,
                supported_language=language,
                global_regex_flags=CASE_INSENSITIVE,
            )
        )
    return recognizers


def pattern_recognizers(patterns: Iterable[PatternSpec], language: str = "en") -> list[PatternRecognizer]:
    """One recognizer per entity type holding all of its configured regexes (case-sensitive).

    Raises ``ConfigError`` naming ``pii.patterns.<i>.regex`` if Presidio's ``regex`` module
    refuses a pattern that Python's ``re`` accepted when the configuration was read.
    """
    by_type: dict[str, list[Pattern]] = {}
    for i, spec in enumerate(patterns):
        try:
            pattern = Pattern(f"pii.patterns.{i}", spec.regex, spec.score)
        except ValueError as exc:
            raise ConfigError(f"pii.patterns.{i}.regex: not a valid regular expression") from exc
        by_type.setdefault(spec.type, []).append(pattern)
    return [
        _pattern_recognizer(entity, f"LlmosPattern[{entity}]", pats, language)
        for entity, pats in by_type.items()
    ]
