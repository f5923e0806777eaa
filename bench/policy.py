"""Policy evaluation cost per request with the example library (policies/).

    .venv/bin/python bench/policy.py [--n 20000] [--keys 300] [--zipf 1] [--seed 7]

Replays a synthetic day of traffic (seeded, so every run decides the same requests) through
the embedded engine as the gateway runs it, with its decision cache, and reports what a
request pays for its input and output decisions. Every request differs from the last in
what varies in real traffic: the clock (spread over 24 hours), the token estimate, the
message count, the client address and the sampling parameters. What repeats is what repeats
in real traffic too: ``--keys`` API keys with Zipf-distributed popularity (``--zipf 0``: all
equally busy), each with one role and tenant, mostly one model and one habitual ``max_tokens``;
most prompts and answers carry no sensitive data.

Rows, all over the same requests (the slow paths over a sample):
- ``cached``: the engine as configured by default (decision cache on); its hit rate is printed;
- ``uncached``: the same engine with ``decision_cache: 0``, so every decision is evaluated;
  this is also what a cache miss costs;
- ``uncompiled``: the baseline, the interpreter's uncompiled query path (input decision only).
Prints p50/p95/p99/mean in ms and the ratios against the baselines.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.policy.bundle import load_bundle  # noqa: E402
from gateway.policy.engine import RegoEngine, RegoSession  # noqa: E402
from gateway.policy.input import ModelInfo, RequestSummary, input_document, output_document  # noqa: E402
from gateway.types import Principal  # noqa: E402

QUERY, OUTPUT_QUERY = "data.llmos.authz.decision", "data.llmos.output.decision"
MODELS = [ModelInfo("demo"), ModelInfo("internal-7b", ("internal",)), ModelInfo("acme-ft", ("tenant:acme",))]
ROLES = ["user"] * 6 + ["contractor"] * 2 + ["admin", "auditor"]
TENANTS = ["acme", "globex", "initech"]
PROMPT_FINDINGS = [({}, 85), ({"EMAIL_ADDRESS": 1}, 9), ({"CREDIT_CARD": 1}, 3), ({"US_SSN": 1}, 3)]
OUTPUT_FINDINGS = [({}, 94), ({"EMAIL_ADDRESS": 1}, 5), ({"API_KEY": 1}, 1)]

Request = tuple[dict[str, Any], dict[str, Any]]


def pick(rng: random.Random, weighted: list[tuple[dict[str, int], int]]) -> dict[str, int]:
    return rng.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]


def traffic(n: int, keys: int, zipf: float, seed: int) -> list[Request]:
    rng = random.Random(seed)
    popularity = [1 / (rank + 1) ** zipf for rank in range(keys)]
    callers = []
    for k in range(keys):
        principal = Principal(
            id=f"key:{k:016x}",
            name=f"app-{k}",
            tenant=rng.choice(TENANTS),
            roles=(rng.choice(ROLES),),
            auth_method="api_key",
        )
        habit = (rng.choice(MODELS), rng.choice([None, 256, 512, 1024, 2048]))
        callers.append((principal, habit))
    start = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday
    requests = []
    for i in range(n):
        principal, (model, max_tokens) = rng.choices(callers, popularity)[0]
        if rng.random() < 0.1:  # now and then another model or limit than usual
            model, max_tokens = rng.choice(MODELS), rng.choice([None, 128, 4096, 8192])
        when = start + timedelta(seconds=86400 * i / n + rng.random())
        summary = RequestSummary(
            endpoint="chat.completions",
            model=model.name,
            max_tokens=max_tokens,
            stream=rng.random() < 0.5,
            message_count=rng.randint(1, 24),
            estimated_input_tokens=rng.randint(10, 6000),
            parameters={
                "temperature": rng.choice([0.0, 0.2, 0.7, 1.0]),
                "top_p": 1.0,
                "stop_count": 0,
                "seed": None,
            },
        )
        doc = input_document(
            principal,
            summary,
            time=when.isoformat(timespec="milliseconds"),
            client_address=f"10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            model=model,
            findings=pick(rng, PROMPT_FINDINGS),
        )
        out = output_document(
            doc,
            findings=pick(rng, OUTPUT_FINDINGS),
            completion_tokens=rng.randint(1, max_tokens or 2048),
            finish_reason=rng.choice(["stop", "length"]),
        )
        requests.append((doc, out))
    return requests


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def timed(engine: RegoEngine, requests: list[Request]) -> dict[str, list[float]]:
    rows: dict[str, list[float]] = {"input": [], "output": [], "request": []}
    for doc, out in requests:
        t0 = time.perf_counter()
        engine.decide(doc)
        t1 = time.perf_counter()
        engine.decide(out, "output")
        t2 = time.perf_counter()
        rows["input"].append((t1 - t0) * 1000)
        rows["output"].append((t2 - t1) * 1000)
        rows["request"].append((t2 - t0) * 1000)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="requests in the simulated day")
    ap.add_argument("--keys", type=int, default=300, help="distinct API keys calling")
    ap.add_argument("--zipf", type=float, default=1.0, help="key popularity exponent (0: uniform)")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    bundle = load_bundle(ROOT / "policies")
    requests = traffic(args.n, args.keys, args.zipf, args.seed)
    sample = requests[:: max(1, args.n // 2000)]

    cached = RegoEngine(bundle, QUERY, OUTPUT_QUERY)
    rows = {f"cached {k}": v for k, v in timed(cached, requests).items()}
    uncached = RegoEngine(bundle, QUERY, OUTPUT_QUERY, cache_size=0)
    rows |= {f"uncached {k}": v for k, v in timed(uncached, sample).items()}
    session = RegoSession(bundle)
    baseline = []
    for doc, _ in sample[::4]:
        t0 = time.perf_counter()
        session.query(QUERY, doc)
        baseline.append((time.perf_counter() - t0) * 1000)
    rows["uncompiled input (baseline)"] = baseline

    allowed = sum(uncached.decide(doc).allow for doc, _ in sample) / len(sample)
    lookups = cached.cache.hits + cached.cache.misses
    print(
        f"# policy evaluation, example library ({len(bundle.modules)} modules): {args.n} requests from"
        f" {args.keys} keys (Zipf {args.zipf:g}) over a simulated day, {allowed:.0%} allowed"
    )
    print(
        f"# decision cache: {cached.cache.hits / lookups:.1%} hits over {lookups} decisions,"
        f" {len(cached.cache)} entries at the end; uncached rows over {len(sample)} requests"
    )
    print(f"{'what':<30} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, values in rows.items():
        print(
            f"{name:<30} {pct(values, 50):8.3f} {pct(values, 95):8.3f} {pct(values, 99):8.3f}"
            f" {statistics.mean(values):8.3f}"
        )
    for what, base in (("uncached", "uncached request"), ("uncompiled", "uncompiled input (baseline)")):
        ratio = pct(rows[base], 50) / pct(rows["cached request"], 50)
        print(f"cached request vs {what}, p50: {ratio:.1f}x faster")
    ratio = pct(rows["uncompiled input (baseline)"], 50) / pct(rows["uncached input"], 50)
    print(f"uncached (compiled) input decision vs uncompiled baseline, p50: {ratio:.1f}x faster")


if __name__ == "__main__":
    main()
