"""Policy evaluation cost per request with the example library (policies/).

    .venv/bin/python bench/policy.py [--n 2000]

Decides a rotating mix of realistic input documents (roles, tenants, findings, token caps,
time windows; allowed and denied) with the embedded engine: the input decision, the output
decision, and both together (what one request costs). Baseline in the same run: the same
documents through the interpreter's uncompiled query path. Prints p50/p95/p99 in ms.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.policy.bundle import load_bundle  # noqa: E402
from gateway.policy.engine import RegoEngine, RegoSession  # noqa: E402
from gateway.policy.input import ModelInfo, RequestSummary, input_document, output_document  # noqa: E402
from gateway.types import Principal  # noqa: E402

QUERY, OUTPUT_QUERY = "data.llmos.authz.decision", "data.llmos.output.decision"


def documents() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    docs = []
    combos = itertools.product(
        ["user", "admin", "contractor", "auditor"],
        [(), ("internal",), ("tenant:acme",), ("tenant:globex",)],
        [{}, {"EMAIL_ADDRESS": 1}, {"US_SSN": 1}],
        ["2026-11-30T12:00:00.000+00:00", "2026-11-29T03:00:00.000+00:00"],
    )
    for role, labels, found, when in combos:
        principal = Principal(
            id="key:0123456789abcdef", name="n", tenant="acme", roles=(role,), auth_method="api_key"
        )
        summary = RequestSummary(
            endpoint="chat.completions",
            model="demo",
            max_tokens=512,
            message_count=3,
            estimated_input_tokens=250,
            parameters={"temperature": 0.7, "top_p": 1.0, "stop_count": 0, "seed": None},
        )
        doc = input_document(
            principal,
            summary,
            time=when,
            client_address="10.0.0.7",
            model=ModelInfo("demo", labels),
            findings=found,
        )
        out = output_document(
            doc, findings={"EMAIL_ADDRESS": 1} if found else {}, completion_tokens=120, finish_reason="stop"
        )
        docs.append((doc, out))
    return docs


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n
    bundle = load_bundle(ROOT / "policies")
    engine = RegoEngine(bundle, QUERY, OUTPUT_QUERY)
    session = RegoSession(bundle)
    docs = documents()
    rows: dict[str, list[float]] = {
        "input": [],
        "output": [],
        "request (both)": [],
        "uncompiled input (baseline)": [],
    }
    allowed = 0
    for i in range(n):
        doc, out = docs[i % len(docs)]
        t0 = time.perf_counter()
        decision = engine.decide(doc)
        t1 = time.perf_counter()
        engine.decide(out, "output")
        t2 = time.perf_counter()
        session.query(QUERY, doc)
        t3 = time.perf_counter()
        allowed += decision.allow
        rows["input"].append((t1 - t0) * 1000)
        rows["output"].append((t2 - t1) * 1000)
        rows["request (both)"].append((t2 - t0) * 1000)
        rows["uncompiled input (baseline)"].append((t3 - t2) * 1000)
    print(
        f"# policy evaluation, example library ({len(bundle.modules)} modules), {n} decisions,"
        f" {len(docs)} distinct documents, {allowed / n:.0%} allowed"
    )
    print(f"{'what':<30} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, values in rows.items():
        print(
            f"{name:<30} {pct(values, 50):8.3f} {pct(values, 95):8.3f} {pct(values, 99):8.3f}"
            f" {statistics.mean(values):8.3f}"
        )
    ratio = pct(rows["uncompiled input (baseline)"], 50) / pct(rows["input"], 50)
    print(f"compiled input decision vs uncompiled baseline, p50: {ratio:.1f}x faster")


if __name__ == "__main__":
    main()
