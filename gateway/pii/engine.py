"""``PiiEngine``: Presidio over a trimmed spaCy model, offline, cached, bounded in time.

Built once from ``PiiConfig`` (nothing happens at import time). Per text: normalise
(``normalize.py``), analyse with the configured entities and threshold, map the spans back to
the original text, resolve overlaps (``detection.py``). Every failure is a ``PiiError``; the
engine never returns a partial answer, and refusing the request is the pipeline's job.

All spaCy and Presidio work runs on one worker thread (``batcher.py``): the texts of every
caller waiting at once go through spaCy in one ``nlp.pipe`` call, and spaCy is never entered
concurrently. A caller can stop waiting: ``find`` gives up after ``timeout_s`` (time queued
behind other callers included) with a ``PiiError``. A Python thread cannot be interrupted, so
an analysis that overran finishes in the background and later callers queue behind it; they
time out too, and fail closed, until it is done.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import Future, InvalidStateError, wait
from types import TracebackType
from typing import Any

from gateway.pii.notorch import without_torch

with without_torch():  # before anything imports spaCy (thinc): see notorch.py
    import spacy  # noqa: F401
    from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult

from gateway.errors import ConfigError
from gateway.pii.batcher import Batcher, BatcherClosed
from gateway.pii.cache import CacheStats, DetectionCache, text_key
from gateway.pii.config import PiiConfig
from gateway.pii.detection import Detection, resolve_overlaps
from gateway.pii.errors import PiiError
from gateway.pii.nlp import NER_ENTITIES, TrimmedSpacyNlpEngine
from gateway.pii.normalize import Normalized, normalize
from gateway.pii.offline import install_offline_extractor
from gateway.pii.recognizers import (
    LlmosPhoneRecognizer,
    OfflineEmailRecognizer,
    deny_list_recognizers,
    pattern_recognizers,
    secret_recognizers,
)

log = logging.getLogger("llmos.gateway.pii")

# A normalised text may grow (NFKC expands some characters); beyond this factor it is refused.
NORMALIZED_GROWTH_LIMIT = 2
WARM_TIMEOUT_S = 60.0
WARM_TEXT = "Alice Smith in Paris, alice@example.com, +1 212 555 0100, SSN 219-09-9999."
_BATCH_SIZE = 32  # spaCy's nlp.pipe batch size
MAX_BATCH_TEXTS = 64  # texts of concurrent callers analysed in one go


class _PresidioFailures(logging.Handler):
    """Presidio logs and carries on where llmos must fail: a regex that timed out is "skipped"
    (its matches lost), an allow-list error keeps going. Every record at WARNING or above that
    Presidio logs while this thread analyses marks the analysis failed (fail closed). The
    records themselves are dropped: Presidio puts matched values in some messages (the IBAN
    recogniser), so none of them may reach the gateway's logs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "watching", False):
            self._local.failed = f"{record.module}:{record.lineno}"

    def watch(self) -> None:
        self._local.watching, self._local.failed = True, None

    def done(self) -> str | None:
        """Stop watching; where a failure was logged, if one was."""
        self._local.watching = False
        failed: str | None = self._local.failed
        return failed


_FAILURES = _PresidioFailures()
_presidio_log = logging.getLogger("presidio-analyzer")
_presidio_log.addHandler(_FAILURES)
_presidio_log.propagate = False  # never to the gateway's handlers (values may be in the text)


class PiiEngine:
    """Finds PII and secrets in texts. Thread-safe; build once, share, ``close()`` at shutdown.

    ``extra_recognizers`` are added to the registry as they are (their entities are looked for
    too): an extension seam, and how tests inject failing or counting recognizers.
    """

    def __init__(self, config: PiiConfig, *, extra_recognizers: Sequence[EntityRecognizer] = ()) -> None:
        self._config = config
        language = config.language
        extractor = install_offline_extractor()
        entities = list(config.all_entities())
        for recognizer in extra_recognizers:
            entities.extend(e for e in recognizer.supported_entities if e not in entities)
        uses_ner = bool(NER_ENTITIES & set(entities))
        nlp_engine = TrimmedSpacyNlpEngine(config.spacy_model, language, ner=uses_ner)
        nlp_engine.load()

        registry = RecognizerRegistry(supported_languages=[language])
        # (Its warnings here, one per recognizer of another language, are dropped: see above.)
        registry.load_predefined_recognizers(languages=[language], nlp_engine=nlp_engine)
        registry.remove_recognizer("EmailRecognizer")
        registry.remove_recognizer("PhoneRecognizer")
        ours: list[EntityRecognizer] = [
            OfflineEmailRecognizer(extractor, language),
            LlmosPhoneRecognizer(language),
            *secret_recognizers(language),
            *deny_list_recognizers(config.deny_lists, language),
            *pattern_recognizers(config.patterns, language),
            *extra_recognizers,
        ]
        for recognizer in ours:
            registry.add_recognizer(recognizer)

        # Only recognizers for wanted entities stay: less work per call, and nothing else can run.
        wanted = set(entities)
        registry.recognizers = [r for r in registry.recognizers if wanted & set(r.supported_entities)]

        self._analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=nlp_engine,
            supported_languages=[language],
            default_score_threshold=config.score_threshold,
        )
        supported = set(self._analyzer.get_supported_entities(language))
        missing = [e for e in entities if e not in supported]
        if missing:
            raise ConfigError(
                f"pii.entities: no recognizer for {', '.join(missing)} "
                "(add a deny list or a pattern for it, or remove it)"
            )
        self._nlp_engine = nlp_engine
        self._entities = entities
        self._cache = DetectionCache(config.cache_entries)
        self._batcher: Batcher[tuple[Detection, ...]] = Batcher(
            self._analyze_batch, max_texts=MAX_BATCH_TEXTS, name="llmos-pii"
        )
        self._closed = False

    @property
    def config(self) -> PiiConfig:
        return self._config

    @property
    def entities(self) -> tuple[str, ...]:
        """Every entity type this engine looks for."""
        return tuple(self._entities)

    # -- public API -------------------------------------------------------------------------

    def find(self, text: str) -> list[Detection]:
        """Detections in ``text``, non-overlapping, ordered by start; offsets into ``text``."""
        return self.find_many([text])[0]

    def find_many(self, texts: Sequence[str]) -> list[list[Detection]]:
        """``find`` for each text; the uncached ones go through spaCy together (``nlp.pipe``).

        The time limit is ``timeout_s`` for all of them.
        """
        future = self.find_many_future(texts)
        _wait(future, self._config.timeout_s)
        try:
            return future.result()
        except FutureCancelled as exc:  # closed while it waited
            raise PiiError("the PII engine is closed", code="pii_closed") from exc

    def find_many_future(self, texts: Sequence[str]) -> Future[list[list[Detection]]]:
        """``find_many`` without blocking the caller: cached texts are answered at once, the
        rest are queued for the worker thread, and the future completes when they are done.

        For an event loop (``asyncio.wrap_future``): no thread waits on the analysis. The time
        limit is the caller's; cancelling the future drops texts not yet started. Texts over
        ``max_text_chars`` and a closed engine raise ``PiiError`` here; failures of the
        analysis complete the future with a ``PiiError``.
        """
        self._check_open()
        for text in texts:
            self._check_size(text)
        keys = [text_key(t) for t in texts]
        results: dict[bytes, tuple[Detection, ...]] = {}
        todo: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key in results or key in todo:
                continue
            cached = self._cache.get(key)
            if cached is None:
                todo[key] = text
            else:
                results[key] = cached
        out: Future[list[list[Detection]]] = Future()
        if not todo:
            out.set_result([list(results[key]) for key in keys])
            return out

        def done(inner: Future[list[tuple[Detection, ...]]]) -> None:
            with contextlib.suppress(InvalidStateError):  # the caller cancelled it meanwhile
                try:
                    found = _analysis_result(inner)
                    for key, detections in zip(todo, found, strict=True):
                        self._cache.put(key, detections)
                        results[key] = detections
                except PiiError as exc:
                    out.set_exception(exc)
                    return
                except Exception as exc:  # a bug here must still answer the caller, closed
                    log.warning("PII result handling failed: %s", type(exc).__name__)
                    out.set_exception(PiiError(f"PII analysis failed ({type(exc).__name__})"))
                    return
                out.set_result([list(results[k]) for k in keys])

        inner = self._submit(list(todo.values()))
        out.add_done_callback(lambda f: inner.cancel() if f.cancelled() else None)
        inner.add_done_callback(done)
        return out

    def warm(self) -> None:
        """One small analysis (bypassing the cache): loads lazily built state (tldextract's
        suffix trie, regex compilation) so the first request is not the slow one."""
        self._run([WARM_TEXT], max(WARM_TIMEOUT_S, self._config.timeout_s))

    def cache_stats(self) -> CacheStats:
        return self._cache.stats()

    def cache_clear(self) -> None:
        self._cache.clear()

    def close(self) -> None:
        """Stop the worker thread; later calls raise ``PiiError`` (code ``pii_closed``)."""
        self._closed = True
        self._batcher.close()

    def __enter__(self) -> PiiEngine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PiiError("the PII engine is closed", code="pii_closed")

    def _check_size(self, text: str) -> None:
        if len(text) > self._config.max_text_chars:
            raise PiiError(
                f"text of {len(text)} characters is over pii.max_text_chars ({self._config.max_text_chars})",
                code="pii_text_too_large",
            )

    def _submit(self, texts: list[str]) -> Future[list[tuple[Detection, ...]]]:
        """``_analyze_batch`` over ``texts`` on the worker thread (batched with other callers')."""
        self._check_open()
        try:
            return self._batcher.submit(texts)
        except BatcherClosed as exc:  # closed between the check and the submit
            raise PiiError("the PII engine is closed", code="pii_closed") from exc

    def _run(self, texts: list[str], timeout: float) -> list[tuple[Detection, ...]]:
        """``_submit``, waiting at most ``timeout`` seconds."""
        future = self._submit(texts)
        _wait(future, timeout)
        return _analysis_result(future)

    def _analyze_batch(self, texts: list[str]) -> list[tuple[Detection, ...]]:
        """On the worker thread: normalise, run spaCy (batched), Presidio, map back; a failure
        Presidio only logged fails the batch."""
        _FAILURES.watch()
        try:
            out = self._analyze(texts)
        finally:
            failed = _FAILURES.done()
        if failed is not None:
            raise PiiError(f"a recognizer failed during the analysis ({failed})")
        return out

    def _analyze(self, texts: list[str]) -> list[tuple[Detection, ...]]:
        language = self._config.language
        limit = self._config.max_text_chars * NORMALIZED_GROWTH_LIMIT
        normalized = [normalize(t) for t in texts]
        if any(len(n.text) > limit for n in normalized):
            raise PiiError("the normalised text is over the size limit", code="pii_text_too_large")
        scan = [i for i, n in enumerate(normalized) if n.text.strip()]
        out: list[tuple[Detection, ...]] = [() for _ in texts]
        if not scan:
            return out
        if len(scan) == 1:
            artifacts = [self._nlp_engine.process_text(normalized[scan[0]].text, language)]
        else:
            batch = self._nlp_engine.process_batch(
                [normalized[i].text for i in scan], language, batch_size=_BATCH_SIZE
            )
            artifacts = [item[1] for item in batch]  # (text, artifacts) pairs
        for i, nlp_artifacts in zip(scan, artifacts, strict=True):
            results = self._analyzer.analyze(
                text=normalized[i].text,
                language=language,
                entities=self._entities,
                score_threshold=self._config.score_threshold,
                nlp_artifacts=nlp_artifacts,
                return_decision_process=True,  # keeps the context word that raised a score
            )
            out[i] = _detections(normalized[i], results)
        return out


def _wait(future: Future[Any], timeout: float) -> None:
    """Wait for ``future`` at most ``timeout`` seconds; past that, cancel it (texts not yet
    started are dropped) and raise ``PiiError`` (``pii_timeout``)."""
    done, _ = wait([future], timeout=timeout)
    if not done:
        future.cancel()
        raise PiiError(f"PII analysis took longer than {timeout:g} s", code="pii_timeout")


def _analysis_result(future: Future[list[tuple[Detection, ...]]]) -> list[tuple[Detection, ...]]:
    """The result of a finished (or cancelled) analysis; every failure as a ``PiiError``."""
    try:
        return future.result(timeout=0)
    except FutureCancelled as exc:  # closed while it waited
        raise PiiError("the PII engine is closed", code="pii_closed") from exc
    except PiiError:
        raise
    except Exception as exc:
        # Only the type: a third-party message may quote the analysed text.
        log.warning("PII analysis failed: %s", type(exc).__name__)
        raise PiiError(f"PII analysis failed ({type(exc).__name__})") from exc


def _detections(normalized: Normalized, results: list[RecognizerResult]) -> tuple[Detection, ...]:
    found = []
    for r in results:
        start, end = normalized.span(r.start, r.end)
        recognizer = (r.recognition_metadata or {}).get(RecognizerResult.RECOGNIZER_NAME_KEY, "unknown")
        word = getattr(r.analysis_explanation, "supportive_context_word", "") or ""
        context = (word[:64],) if isinstance(word, str) and word.strip() else ()
        found.append(Detection(r.entity_type, start, end, str(recognizer), float(r.score), context))
    return tuple(resolve_overlaps(found))
