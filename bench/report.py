"""Summaries, ratios, targets and the printed report of bench/proxies.py (pure: no I/O).

A *cell* is one (mode, concurrency). Each round of a cell measures every target once, so each
gateway's overhead is taken per round against the direct run of the same round (paired), then
summarised over rounds as the median with its range.

The targets are judged on llmos-off and llmos-on (the chat workload). The two other llmos-on
variants, llmos-on-unique (every prompt all new) and llmos-on-patterns (regular-expression PII
detector), get the same security-on comparisons printed as extra information, not as targets.
"""

from __future__ import annotations

import math
import operator
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BASELINE = "direct"
LITELLM = "litellm"
LLMOS_OFF = "llmos-off"
LLMOS_ON = "llmos-on"
LLMOS_ON_UNIQUE = "llmos-on-unique"
LLMOS_ON_PATTERNS = "llmos-on-patterns"
LLMOS_TARGETS = (LLMOS_OFF, LLMOS_ON, LLMOS_ON_UNIQUE, LLMOS_ON_PATTERNS)
EXTRAS = (LLMOS_ON_UNIQUE, LLMOS_ON_PATTERNS)  # reported, not judged
NAME_W = max(len(n) for n in LLMOS_TARGETS)  # the target column of the tables
QUANTILES = ("p50", "p95", "p99")
MODE_TITLES = {"json": "non-streaming", "stream": "streaming (16 content chunks)"}
STARTUP_LIMIT_S = 5.0
RSS_LIMIT_MB = 500.0
NOISY_CORES = 0.05  # CPU taken by others beyond this makes a run noisy

Rounds = dict[tuple[str, str, int], list[dict[str, Any]]]  # (target, mode, concurrency) -> per round


def spread(values: list[float]) -> dict[str, float]:
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean)}


def summarise_cell(rounds: Rounds, targets: list[str], mode: str, c: int) -> dict[str, Any]:
    """Per target: latency, throughput and time to first content (median and range over rounds),
    and, for gateways, the per-round overhead over the direct baseline."""
    base = rounds.get((BASELINE, mode, c), [])
    out: dict[str, Any] = {"mode": mode, "concurrency": c, "targets": {}}
    for name in targets:
        runs = rounds.get((name, mode, c), [])
        if not runs:
            continue
        keys = [*QUANTILES, "rps"] + (["ttfb_p50", "ttfb_p95"] if mode == "stream" else [])
        entry: dict[str, Any] = {k: spread([r[k] for r in runs]) for k in keys}
        entry["requests"] = sum(r["requests"] for r in runs)
        entry["errors"] = sum(r["errors"] for r in runs)
        entry["error_sample"] = next((r["error_sample"] for r in runs if r["error_sample"]), None)
        if name != BASELINE and len(base) == len(runs):
            over = [k for k in keys if k != "rps"]
            entry["overhead"] = {
                k: spread([r[k] - b[k] for r, b in zip(runs, base, strict=True)]) for k in over
            }
            entry["per_round"] = {
                "overhead_p50": [r["p50"] - b["p50"] for r, b in zip(runs, base, strict=True)],
                "overhead_p99": [r["p99"] - b["p99"] for r, b in zip(runs, base, strict=True)],
                "rps": [r["rps"] for r in runs],
            }
        out["targets"][name] = entry
    return out


def ratios(cell: dict[str, Any], llmos: str) -> dict[str, dict[str, float]] | None:
    """llmos / LiteLLM for overhead p50 and p99 (ratio of medians, range of per-round ratios)
    and for throughput."""
    t = cell["targets"]
    if llmos not in t or LITELLM not in t or "per_round" not in t[llmos] or "per_round" not in t[LITELLM]:
        return None
    mine, theirs = t[llmos]["per_round"], t[LITELLM]["per_round"]
    out = {}
    for key in ("overhead_p50", "overhead_p99", "rps"):
        paired = [a / b if b else math.nan for a, b in zip(mine[key], theirs[key], strict=True)]
        base = statistics.median(theirs[key])
        # LiteLLM may finish no request inside a short run (--quick at concurrency 64): no ratio.
        head = statistics.median(mine[key]) / base if base else math.nan
        out[key] = {**spread(paired), "median": head}
    return out


@dataclass(frozen=True)
class Goal:
    name: str
    status: str  # PASS, MISS or n/a
    detail: str


def _worst(cells: list[dict[str, Any]], llmos: str, key: str, high_is_bad: bool) -> tuple[float, str] | None:
    found = []
    for cell in cells:
        r = cell.get("ratios", {}).get(llmos)
        if r is not None and not math.isnan(r[key]["median"]):  # nan: LiteLLM finished nothing there
            found.append((r[key]["median"], f"{cell['mode']} c={cell['concurrency']}"))
    if not found:
        return None
    return max(found) if high_is_bad else min(found)


def _missing(gateways: dict[str, dict[str, Any]], *names: str) -> str:
    """Why a goal could not be checked: the first of ``names`` that did not run, and why."""
    for name in names:
        status = gateways.get(name, {}).get("status", "not in --targets")
        if status == "skipped":
            return f"{name} skipped (why: under gateways above)"
        if status != "ok":
            return f"{name} {status}"
    return "no measurement"


SECURITY_ON_CHECKS = (  # ratio to LiteLLM, the test its worst cell must pass, goal
    ("overhead_p50", operator.lt, 1.0, "security on: llmos overhead p50 < LiteLLM's"),
    ("overhead_p99", operator.lt, 1.0, "security on: llmos overhead p99 < LiteLLM's"),
)


def _ratio_goals(
    cells: list[dict[str, Any]],
    gateways: dict[str, dict[str, Any]],
    checks: tuple[tuple[str, str, Callable[[float, float], bool], float, str], ...],
) -> list[Goal]:
    out: list[Goal] = []
    for llmos, key, test, limit, name in checks:
        high_is_bad = test is not operator.ge
        worst = _worst(cells, llmos, key, high_is_bad)
        if worst is None:
            out.append(Goal(name, "n/a", _missing(gateways, llmos, LITELLM)))
            continue
        value, where = worst
        ok = test(value, limit)
        label = "worst ratio" if high_is_bad else "lowest ratio"
        out.append(Goal(name, "PASS" if ok else "MISS", f"{label} {value:.2f} ({where}), every cell counts"))
    return out


def goals(cells: list[dict[str, Any]], gateways: dict[str, dict[str, Any]]) -> list[Goal]:
    """The targets, judged on llmos-off and llmos-on."""
    off = "security off: llmos"
    checks: tuple[tuple[str, str, Callable[[float, float], bool], float, str], ...] = (
        (LLMOS_OFF, "overhead_p50", operator.le, 0.2, f"{off} overhead p50 <= 1/5 of LiteLLM's"),
        (LLMOS_OFF, "overhead_p99", operator.le, 0.2, f"{off} overhead p99 <= 1/5 of LiteLLM's"),
        (LLMOS_OFF, "rps", operator.ge, 3.0, f"{off} throughput >= 3x LiteLLM's"),
        *((LLMOS_ON, *check) for check in SECURITY_ON_CHECKS),
    )
    out = _ratio_goals(cells, gateways, checks)
    for llmos in (LLMOS_OFF, LLMOS_ON):
        name = f"{llmos}: start-up < {STARTUP_LIMIT_S:g} s"
        out.append(_below(gateways, llmos, "startup_s", STARTUP_LIMIT_S, name, "{:.2f} s"))
    name = f"llmos-on (PII engine loaded): peak RSS < {RSS_LIMIT_MB:g} MB"
    out.append(_below(gateways, LLMOS_ON, "peak_rss_mb", RSS_LIMIT_MB, name, "{:.0f} MB"))
    return out


def _below(
    gateways: dict[str, dict[str, Any]], target: str, key: str, limit: float, name: str, fmt: str
) -> Goal:
    """PASS when ``target``'s ``key`` is below ``limit``; n/a when it was not measured."""
    value = gateways.get(target, {}).get(key)
    if value is None:
        return Goal(name, "n/a", _missing(gateways, target))
    return Goal(name, "PASS" if value < limit else "MISS", fmt.format(value))


def extras(cells: list[dict[str, Any]], gateways: dict[str, dict[str, Any]]) -> list[Goal]:
    """The security-on comparisons for the llmos-on variants that are not judged (those asked
    for in --targets): information, not targets."""
    checks = tuple(
        (llmos, key, test, limit, f"{llmos}: {name}")
        for llmos in EXTRAS
        if llmos in gateways
        for key, test, limit, name in SECURITY_ON_CHECKS
    )
    return _ratio_goals(cells, gateways, checks)


def _ms(value: float | None, width: int = 8, sign: bool = False) -> str:
    """A duration in ms in ``width`` characters: 2 decimals below 100, 1 below 1000, else none."""
    if value is None or math.isnan(value):
        return f"{'-':>{width}}"
    digits = 2 if abs(value) < 100 else 1 if abs(value) < 1000 else 0
    return f"{value:{'+' if sign else ''}{width}.{digits}f}"


def _rng(s: dict[str, float], fmt: str = ".3g") -> str:
    if math.isnan(s["median"]):
        return ""
    return f"[{s['min']:{fmt}}..{s['max']:{fmt}}]"


def render_cell(cell: dict[str, Any]) -> list[str]:
    stream = cell["mode"] == "stream"
    lines = [f"\n{MODE_TITLES[cell['mode']]}, concurrency {cell['concurrency']}"]
    head = f"{'target':<{NAME_W}} {'p50':>8}{'p95':>8}{'p99':>8}   {'overhead p50 [range]':<26}"
    head += f"{'ovh p95':>8}{'ovh p99':>8}"
    if stream:
        head += f"   {'ttfb p50':>8}{'ttfb p95':>9}{'ovh ttfb':>9}"
    lines.append(head + f"   {'req/s [range]':<20}{'errors':>6}")
    for name, t in cell["targets"].items():
        row = f"{name:<{NAME_W}} " + "".join(_ms(t[q]["median"]) for q in QUANTILES)
        o = t.get("overhead")
        if o:
            row += f"   {_ms(o['p50']['median'], 8, True)} {_rng(o['p50']):<17}"
            row += _ms(o["p95"]["median"], 8, True) + _ms(o["p99"]["median"], 8, True)
        else:
            row += f"   {'(baseline)':<26}{'':>16}"
        if stream:
            row += f"   {_ms(t['ttfb_p50']['median'])}{_ms(t['ttfb_p95']['median'], 9)}"
            row += _ms(o["ttfb_p50"]["median"], 9, True) if o else f"{'':>9}"
        row += f"   {t['rps']['median']:7.0f} {_rng(t['rps'], '.0f'):<12}{t['errors']:>6}"
        lines.append(row)
        if t["errors"]:
            lines.append(f"{'':<{NAME_W + 1}}first error: {t['error_sample']}")
    for llmos, r in cell.get("ratios", {}).items():
        o50, o99, rps = r["overhead_p50"], r["overhead_p99"], r["rps"]
        lines.append(
            f"  {llmos} / LiteLLM: overhead p50 {o50['median']:.2f} {_rng(o50, '.2f')},"
            f" p99 {o99['median']:.2f} {_rng(o99, '.2f')}; throughput {rps['median']:.2f}x {_rng(rps, '.2f')}"
            + ("  (extra information, not a target)" if llmos in EXTRAS else "")
        )
    return lines


def workload_lines(settings: dict[str, Any]) -> list[str]:
    """Which workload each target got, and its sizes in characters."""
    sizes, given = settings.get("workloads", {}), settings.get("target_workloads", {})
    what = {
        "chat": "fixed system prompt + a new user turn every request",
        "unique": "short fixed system line + a new ~1 KB user message every request, nearly all text new",
    }
    lines = []
    for workload, z in sizes.items():
        targets = [name for name, w in given.items() if w == workload]
        if not targets:
            continue
        lines.append(
            f"workload {workload} ({what.get(workload, '')}): system {z['system']} + user"
            f" ~{z['user']:.0f} [{z['user_min']}..{z['user_max']}] = ~{z['total']:.0f} characters;"
            f" targets: {', '.join(targets)}"
        )
    return lines


def render(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    load = m["other_load"]
    lines = [
        "# Gateway overhead over a mock OpenAI upstream: llmos vs LiteLLM (bench/proxies.py)",
        f"machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gb']:.0f} GB, Linux {m['kernel']},"
        f" Python {m['python']}",
        f"pinning: {m['pinning']}",
        f"versions: LiteLLM {m['litellm']}, llmos {m['llmos_commit']}",
        f"CPU taken by others while measuring: {load['others']:.2f} cores by other processes,"
        f" {load['steal']:.2f} stolen by the hypervisor"
        + (" (the machine was not quiet: expect noisy numbers)" if max(load.values()) > NOISY_CORES else ""),
        f"runs: {s['rounds']} rounds x {s['duration_s']:g} s per target, mode and concurrency, targets"
        f" alternating; warm-up {s['warmup_s']:g} s per target and mode",
        *workload_lines(s),
        f"no two user messages in a run are equal; {s['chunks']}-chunk streams; the upstream's answer is"
        " the same text every time",
        "latencies in ms, medians over rounds [range]; overhead = target minus direct (chat workload) in the"
        " same round; ttfb = time to the first content chunk",
    ]
    for cell in result["cells"]:
        lines += render_cell(cell)
    lines.append("\ngateways")
    lines.append(
        "init s: `llmos init --config FILE` on a new state directory, run before and not part of start-up"
        "\nstart-up s: `llmos serve` (or LiteLLM) from spawn to its first authenticated 200;"
        " memory: the serve process tree only"
    )
    lines.append(
        f"{'target':<{NAME_W}}{'init s':>8}{'start-up s':>11}{'peak RSS MB':>13}{'RSS at end':>13}"
        f"{'processes':>11}  notes"
    )
    for name, g in result["gateways"].items():
        init = _ms(g.get("init_s"), 8)
        start = _ms(g.get("startup_s"), 11)
        rss = f"{g['peak_rss_mb']:13.0f}" if g.get("peak_rss_mb") is not None else f"{'-':>13}"
        rss += f"{g['rss_end_mb']:13.0f}" if g.get("rss_end_mb") is not None else f"{'-':>13}"
        notes = "; ".join([*([] if g["status"] == "ok" else [g["status"]]), *g.get("notes", [])])
        lines.append(f"{name:<{NAME_W}}{init}{start}{rss}{g.get('processes', 0):>11}  {notes}")
        lines += [f"{'':<{NAME_W}}  {line}" for line in g.get("reason", "").splitlines()[-12:]]
        peaks = g.get("process_peaks", [])
        if len(peaks) > 1:
            lines += [
                f"{'':<{NAME_W}}{p['peak_mb']:32.0f}  pid {p['pid']}: {p['command'][:70]}" for p in peaks
            ]
    lines.append("\ntargets (judged on llmos-off and llmos-on, chat workload)")
    for goal in result["goals"]:
        lines.append(f"{goal['status']:<5} {goal['name']}: {goal['detail']}")
    if result.get("extras"):
        lines.append(
            "\nextra information, not targets: the same security-on comparisons for the other llmos-on"
            "\nvariants (llmos-on-unique: all-new ~1 KB prompts; llmos-on-patterns: regex PII detector)"
        )
        for goal in result["extras"]:
            verdict = "" if goal["status"] == "n/a" else f" (would {goal['status']})"
            lines.append(f"info  {goal['name']}: {goal['detail']}{verdict}")
    return "\n".join(lines)
