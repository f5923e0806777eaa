"""The spaCy side of the PII engine: only the NER component, and lemmas without a lemmatizer.

``en_core_web_sm`` runs ``tok2vec, tagger, parser, attribute_ruler, lemmatizer, ner`` (plus a
disabled ``senter``). Its ``ner`` has its own embedding layer (``spacy.Tok2Vec.v2``); only the
tagger and parser listen to the shared ``tok2vec``. So loading with everything but ``ner``
excluded gives the same entities, and halves the time per text (docs/pii.md has numbers).

What Presidio takes from the other components is lemmas: ``LemmaContextAwareEnhancer`` raises
a score when a recognizer's context word ("ssn", "card", "phone", ...) appears among the
lemmas of the five tokens before a match. The rule lemmatizer needs POS tags from the tagger
and attribute ruler. Here the lemma is the lower-cased token instead; Presidio matches context
words as *substrings* of lemmas, so "cards" still contains "card". On the benchmark corpus
(bench/pii.py) this gave identical results to the full pipeline.

When no configured entity comes from NER (no PERSON, LOCATION, NRP, DATE_TIME, ORGANIZATION),
``ner`` is excluded too and spaCy only tokenises (for context words).

The NER label mapping is Presidio's ``conf/default.yaml`` (ORGANIZATION and numeric labels
ignored), so no label is logged as "not mapped".
"""

from __future__ import annotations

from typing import Any, cast

import spacy
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from spacy.tokens import Doc

from gateway.errors import ConfigError

# Everything in the spaCy en_core_web_* pipelines except NER; names a model lacks are ignored.
EXCLUDED_COMPONENTS: tuple[str, ...] = (
    "tok2vec",
    "tagger",
    "morphologizer",
    "parser",
    "senter",
    "attribute_ruler",
    "lemmatizer",
)

_ENTITY_MAPPING = {
    "PER": "PERSON",
    "PERSON": "PERSON",
    "NORP": "NRP",
    "FAC": "LOCATION",
    "LOC": "LOCATION",
    "GPE": "LOCATION",
    "LOCATION": "LOCATION",
    "ORG": "ORGANIZATION",
    "ORGANIZATION": "ORGANIZATION",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
}
_LABELS_TO_IGNORE = [
    "ORGANIZATION",  # many false positives (Presidio's default)
    "CARDINAL",
    "EVENT",
    "LANGUAGE",
    "LAW",
    "MONEY",
    "ORDINAL",
    "PERCENT",
    "PRODUCT",
    "QUANTITY",
    "WORK_OF_ART",
]


NER_ENTITIES: frozenset[str] = frozenset(_ENTITY_MAPPING.values()) - frozenset(_LABELS_TO_IGNORE)


def ner_model_configuration() -> NerModelConfiguration:
    return NerModelConfiguration(
        model_to_presidio_entity_mapping=dict(_ENTITY_MAPPING),
        labels_to_ignore=list(_LABELS_TO_IGNORE),
    )


class TrimmedSpacyNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine over an installed model loaded with only ``ner`` (or, with
    ``ner=False``, only the tokenizer); never downloads a model."""

    def __init__(self, model: str, language: str = "en", *, ner: bool = True) -> None:
        super().__init__(
            models=[{"lang_code": language, "model_name": model}],
            ner_model_configuration=ner_model_configuration(),
        )
        self.model = model
        self.language = language
        self.ner = ner

    def load(self) -> None:
        if not spacy.util.is_package(self.model):
            raise ConfigError(
                f"pii.spacy_model: the spaCy model package {self.model!r} is not installed "
                "(llmos never downloads models; install it with pip)"
            )
        exclude = list(EXCLUDED_COMPONENTS) if self.ner else [*EXCLUDED_COMPONENTS, "ner"]
        try:
            nlp = spacy.load(self.model, exclude=exclude)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"pii.spacy_model: cannot load {self.model!r}: {exc}") from exc
        if self.ner and "ner" not in nlp.pipe_names:
            raise ConfigError(f"pii.spacy_model: {self.model!r} has no 'ner' component")
        # Presidio declares ``nlp`` as None until loaded (no annotation), hence the cast.
        self.nlp = cast(Any, {self.language: nlp})

    def get_supported_entities(self) -> list[str]:
        return sorted(NER_ENTITIES) if self.ner else []

    def _doc_to_nlp_artifact(self, doc: Doc, language: str) -> NlpArtifacts:
        entities, scores = self._get_updated_entities(
            self._get_entities(doc), self._get_scores_for_entities(doc)
        )
        return NlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=[token.idx for token in doc],
            lemmas=[token.lower_ for token in doc],
            nlp_engine=self,
            language=language,
            scores=scores,
        )
