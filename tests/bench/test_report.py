"""bench/report.py and the pure parts of bench/gateways.py on synthetic measurements."""

from __future__ import annotations

from typing import Any

from bench import report
from bench.gateways import Target, admin_key, llmos_config
from bench.prompts import WORKLOADS, sizes

NAMES = (report.BASELINE, report.LITELLM, *report.LLMOS_TARGETS)
P50 = {  # ms, the same in every round; the overhead is this minus direct's
    report.BASELINE: 0.2,
    report.LITELLM: 20.2,
    report.LLMOS_OFF: 1.2,
    report.LLMOS_ON: 15.2,
    report.LLMOS_ON_UNIQUE: 40.2,
    report.LLMOS_ON_PATTERNS: 5.2,
}


def _run(name: str, mode: str) -> dict[str, Any]:
    p50 = P50[name]
    run = {"p50": p50, "p95": p50 * 1.5, "p99": p50 * 2, "rps": 1000 / p50, "requests": 100, "errors": 0}
    run["error_sample"] = None
    if mode == "stream":
        run |= {"ttfb_p50": p50 / 2, "ttfb_p95": p50}
    return run


def _result(names: tuple[str, ...] = NAMES) -> dict[str, Any]:
    rounds: report.Rounds = {
        (n, m, c): [_run(n, m)] * 2 for n in names for m in ("json", "stream") for c in (1, 16)
    }
    cells = []
    for mode in ("json", "stream"):
        for c in (1, 16):
            cell = report.summarise_cell(rounds, list(names), mode, c)
            cell["ratios"] = {n: r for n in report.LLMOS_TARGETS if (r := report.ratios(cell, n))}
            cells.append(cell)
    gateways: dict[str, dict[str, Any]] = {
        n: {
            "status": "ok",
            "workload": "chat",
            "init_s": 11.5,
            "startup_s": 2.5,
            "peak_rss_mb": 230.0,
            "rss_end_mb": 220.0,
            "processes": 1,
            "notes": [],
        }
        for n in names
        if n != report.BASELINE
    }
    return {
        "machine": {
            "cpu": "cpu",
            "cpus": 2,
            "memory_gb": 24,
            "kernel": "6",
            "python": "3.11",
            "litellm": "1",
            "llmos_commit": "abc",
            "pinning": "none",
            "other_load": {"others": 0.0, "steal": 0.0},
        },
        "settings": {
            "rounds": 2,
            "duration_s": 1.0,
            "warmup_s": 0.5,
            "chunks": 16,
            "workloads": {w: sizes(w, 200) for w in WORKLOADS},
            "target_workloads": {n: "unique" if n == report.LLMOS_ON_UNIQUE else "chat" for n in names},
        },
        "gateways": gateways,
        "cells": cells,
        "goals": [g.__dict__ for g in report.goals(cells, gateways)],
        "extras": [g.__dict__ for g in report.extras(cells, gateways)],
    }


def test_goals_judge_llmos_off_and_on_only() -> None:
    result = _result()
    names = [g["name"] for g in result["goals"]]
    assert not any(v in name for name in names for v in report.EXTRAS)
    statuses = {g["name"]: g["status"] for g in result["goals"]}
    assert statuses["security on: llmos overhead p50 < LiteLLM's"] == "PASS"  # 15 ms < 20 ms
    assert statuses["security off: llmos overhead p50 <= 1/5 of LiteLLM's"] == "PASS"  # 1 ms vs 20 ms


def test_extras_compare_the_other_variants() -> None:
    extras = {g["name"]: g for g in _result()["extras"]}
    unique = extras["llmos-on-unique: security on: llmos overhead p50 < LiteLLM's"]
    patterns = extras["llmos-on-patterns: security on: llmos overhead p50 < LiteLLM's"]
    assert unique["status"] == "MISS" and "2.00" in unique["detail"]  # 40 ms vs 20 ms
    assert patterns["status"] == "PASS" and "0.25" in patterns["detail"]
    assert len(extras) == 4


def test_extras_only_for_targets_asked_for() -> None:
    names = (report.BASELINE, report.LITELLM, report.LLMOS_ON, report.LLMOS_ON_PATTERNS)
    extras = _result(names)["extras"]
    assert extras and all(g["name"].startswith(report.LLMOS_ON_PATTERNS) for g in extras)


def test_render_names_workloads_init_and_extras() -> None:
    text = report.render(_result())
    assert "workload chat (" in text and "system 664 + user ~323" in text
    assert "targets: direct, litellm, llmos-off, llmos-on, llmos-on-patterns" in text
    assert "targets: llmos-on-unique" in text
    header = next(line for line in text.splitlines() if line.startswith("target") and "init s" in line)
    row = next(
        line for line in text.splitlines() if line.startswith("llmos-on-patterns ") and "11.50" in line
    )
    assert header.index("init s") < header.index("start-up s") and "2.50" in row
    assert "(extra information, not a target)" in text
    info = [line for line in text.splitlines() if line.startswith("info  ")]
    assert len(info) == 4 and all("(would " in line for line in info)
    # Only the judged targets' lines start with PASS or MISS.
    judged = [line for line in text.splitlines() if line.startswith(("PASS", "MISS"))]
    assert judged and not any(v in line for line in judged for v in report.EXTRAS)


def test_admin_key_from_init_output() -> None:
    assert admin_key("sk-llmos-0123-abc\n") == "sk-llmos-0123-abc"
    assert admin_key("policy tests passed\nsk-llmos-0123-abc\n") == "sk-llmos-0123-abc"
    assert admin_key("sk-llmos-0123-abc\n3 policy tests passed\n") == "sk-llmos-0123-abc"
    assert admin_key("\n") is None


def test_llmos_configs(tmp_path: Any) -> None:
    mock = Target("direct", "http://127.0.0.1:9/v1/chat/completions", "k")
    off = llmos_config(tmp_path, mock, secure=False)
    on = llmos_config(tmp_path, mock, secure=True)
    patterns = llmos_config(tmp_path, mock, secure=True, pii_detector="patterns")
    assert "unsafe_disable: [policy, pii, audit]" in off and "unsafe_disable" not in on
    assert "pii:" not in on and "pii: {detector: patterns}" in patterns
    assert "base_url: http://127.0.0.1:9/v1" in on
