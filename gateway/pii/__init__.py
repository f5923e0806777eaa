"""PII and secret detection: Presidio over a trimmed spaCy model, offline (see docs/pii.md).

config.py       PiiConfig, PatternSpec: the `pii:` section (cheap to import: no Presidio)
errors.py       PiiError (a gateway.errors.LlmosError)
detection.py    Detection, resolve_overlaps(): the engine's result type and overlap rule (pure)
normalize.py    normalize(): NFKC, invisible characters, digits, homoglyphs, with an offset map (pure)
offline.py      tldextract on its bundled suffix list: no network
recognizers.py  secret, SSN, card and e-mail recognizers; deny-list and regex builders
nlp.py          the spaCy NLP engine with only `ner` loaded
cache.py        an LRU of results keyed by the SHA-256 of the text
engine.py       PiiEngine: find(), find_many(), warm()

Only config, errors, detection and normalize are imported here; the engine pulls in Presidio
and spaCy (seconds), so import it from ``gateway.pii.engine`` where it is built.
"""

from gateway.pii.config import DEFAULT_ENTITIES, PatternSpec, PiiConfig
from gateway.pii.detection import Detection, resolve_overlaps
from gateway.pii.errors import PiiError
from gateway.pii.normalize import Normalized, normalize

__all__ = [
    "DEFAULT_ENTITIES",
    "Detection",
    "Normalized",
    "PatternSpec",
    "PiiConfig",
    "PiiError",
    "normalize",
    "resolve_overlaps",
]
