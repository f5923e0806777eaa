"""Gateway overhead, throughput, start-up and memory: llmos (security off and on) against LiteLLM,
both in front of the same fast mock OpenAI upstream, against the upstream reached directly.

    .venv/bin/python bench/proxies.py [--quick] [--json results.json]
        [--rounds 3] [--duration 2.5] [--concurrency 1 16 64] [--modes json stream]
        [--targets direct litellm llmos-off llmos-on llmos-on-unique llmos-on-patterns]

Everything listens on 127.0.0.1. It starts
  direct             bench/mock_upstream.py (raw asyncio + uvloop): the baseline, no gateway;
  litellm            LiteLLM proxy 1.108.7 from .bench/litellm-venv (installed on first use,
                     about a minute), master key on, the one model routed to the mock, one
                     process, offline;
  llmos-off          `llmos serve`, API-key auth, with ``unsafe_disable: [policy, pii, audit]``;
  llmos-on           `llmos serve` on its defaults: Rego policy, Presidio PII scanning in and
                     out, synchronous signed audit;
  llmos-on-unique    the same as llmos-on (its own process), driven with the unique workload;
  llmos-on-patterns  llmos-on with ``pii: {detector: patterns}`` (regular expressions, no NER).
Each llmos is first set up with `llmos init --config FILE` (timed apart: "init s"), then
`llmos serve` is timed from spawn to its first authenticated 200 (start-up).
Workloads (bench/prompts.py), both ~1 KB per request and never the same user message twice:
``chat`` (every target but one) is a fixed ~660-character system prompt plus a new
~325-character user turn; ``unique`` (llmos-on-unique) is a new ~1 KB user message, the worst
case for llmos's per-message PII detection cache.
A gateway that will not start (or whose answers are not the upstream's) is skipped with the
reason. With two or more CPUs the gateway under test runs on the first, and the load generator
(bench/loadgen.py: aiohttp, its own process), the mock upstream and this script on the second.
Each round measures every target in turn for each mode (JSON, SSE stream) and concurrency
(closed loop, one keep-alive connection per client, a new user message per request). While
one gateway is measured the others are paused (SIGSTOP, then SIGCONT and 0.2 s to settle),
so their idle timers do not run on its core.
Prints latency percentiles, the overhead over the direct baseline, throughput, time to the
first streamed content, init and start-up times, peak RSS (VmHWM summed over the serve process
tree), the llmos/LiteLLM ratios, a PASS/MISS line per target (judged on llmos-off and llmos-on)
and the security-on comparisons for llmos-on-unique and llmos-on-patterns as extra information.
The default run takes about 7 minutes on two cores (plus the LiteLLM install the first
time); ``--quick`` about 3. Every child process is stopped on exit, Ctrl-C and errors included.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.gateways import (  # noqa: E402
    LITELLM_VENV,
    MODEL,
    GatewayError,
    Target,
    installed_litellm,
    start_litellm,
    start_llmos,
    start_mock,
)
from bench.mock_upstream import answer_pieces  # noqa: E402
from bench.procs import CpuAudit, Processes, pause  # noqa: E402
from bench.prompts import WORKLOADS, sizes  # noqa: E402

MODES = ("json", "stream")
TARGETS = (report.BASELINE, report.LITELLM, *report.LLMOS_TARGETS)
WORKLOAD = {name: "chat" for name in TARGETS} | {report.LLMOS_ON_UNIQUE: "unique"}  # bench/prompts.py
LLMOS_SETUPS: dict[str, dict[str, Any]] = {  # start_llmos's options per llmos target
    report.LLMOS_OFF: {"secure": False},
    report.LLMOS_ON: {"secure": True},
    report.LLMOS_ON_UNIQUE: {"secure": True},
    report.LLMOS_ON_PATTERNS: {"secure": True, "pii_detector": "patterns"},
}
CHUNKS = 16  # the mock's default content chunks per stream
SETTLE_S = 0.2  # after a paused gateway is continued, before it is measured


class LoadGen:
    """bench/loadgen.py in its own process, driven by JSON lines."""

    def __init__(self, procs: Processes, cpus: frozenset[int] | None, log: Path) -> None:
        self.proc = procs.spawn(
            [sys.executable, str(ROOT / "bench" / "loadgen.py")], cpus=cpus, pipes=True, log=log
        )
        self.log = log

    def call(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator died; its log: {self.log}")
        return dict(json.loads(line))


def cpu_plan(no_pin: bool) -> tuple[frozenset[int] | None, frozenset[int] | None, str]:
    """(gateway CPUs, load CPUs, description)."""
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin or len(cpus) < 2:
        why = "" if no_pin else " (fewer than 2 CPUs)"
        return None, None, f"none{why}; the gateways not under test paused"
    gateway, load = frozenset({cpus[0]}), frozenset({cpus[1]})
    return (
        gateway,
        load,
        f"gateway under test on CPU {cpus[0]} (the others paused); load generator, mock upstream,"
        f" this script on CPU {cpus[1]}",
    )


def machine(pinning: str) -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    meminfo = Path("/proc/meminfo").read_text().split()
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return {
        "cpu": cpu or platform.processor() or "unknown CPU",
        "cpus": os.cpu_count(),
        "memory_gb": int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "litellm": installed_litellm(LITELLM_VENV / "bin" / "python") or "not installed",
        "llmos_commit": (commit or "unknown") + (" with uncommitted changes" if dirty.stdout.strip() else ""),
        "pinning": pinning,
    }


def check(gen: LoadGen, target: Target) -> str | None:
    """None if the target answers both modes with the upstream's text; else why not."""
    for mode in MODES:
        cmd = {
            "op": "check",
            "url": target.url,
            "key": target.key,
            "model": MODEL,
            "stream": mode == "stream",
            "workload": target.workload,
        }
        answer = gen.call({**cmd, "expect": "".join(answer_pieces(CHUNKS))})
        if not answer["ok"]:
            return f"its {mode} answer is wrong: {answer['error']}"
    return None


def start_targets(
    args: argparse.Namespace,
    procs: Processes,
    work: Path,
    gen: LoadGen,
    mock: Target,
    cpus: frozenset[int] | None,
) -> tuple[list[Target], dict[str, dict[str, Any]]]:
    def start(name: str) -> Target:
        if name == report.LITELLM:
            return start_litellm(procs, work, mock, cpus, "sk-bench-" + secrets.token_urlsafe(16))
        return start_llmos(procs, work, mock, cpus, name, **LLMOS_SETUPS[name])

    targets = [mock]
    info: dict[str, dict[str, Any]] = {}
    for name in (n for n in TARGETS if n in args.targets and n != report.BASELINE):
        print(f"starting {name} ...", flush=True)
        try:
            target = start(name)
        except GatewayError as exc:
            info[name] = {"status": "skipped", "reason": str(exc)}
            print(f"  {name} skipped: {exc}", flush=True)
            continue
        target.workload = WORKLOAD[name]
        problem = check(gen, target)
        if problem is not None:
            info[name] = {"status": "skipped", "reason": problem}
            print(f"  {name} skipped: {problem}", flush=True)
            continue
        assert target.startup_s is not None
        init = "" if target.init_s is None else f" (`llmos init` before it: {target.init_s:.2f} s)"
        print(f"  {name} answered after {target.startup_s:.2f} s{init}", flush=True)
        targets.append(target)
        info[name] = {
            "status": "ok",
            "workload": target.workload,
            "init_s": target.init_s,
            "startup_s": target.startup_s,
            "notes": target.notes,
        }
    return targets, info


def measure(
    args: argparse.Namespace, gen: LoadGen, targets: list[Target]
) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    gateways = [t for t in targets if t.memory is not None]
    running: list[Target | None] = [None]

    def focus(target: Target) -> None:
        """Only ``target`` of the gateways runs (the others are paused; all of them for the
        direct baseline); let it settle if it was paused, so the timers it missed do not land
        in the measurement."""
        if running[0] is target:
            return
        for other in gateways:
            if other is not target:
                assert other.memory is not None
                pause(other.memory.root, True)
        running[0] = target
        if target.memory is not None:
            pause(target.memory.root, False)
            time.sleep(SETTLE_S)

    def load(target: Target, mode: str, c: int, seconds: float) -> dict[str, Any]:
        focus(target)
        cmd = {"op": "run", "url": target.url, "key": target.key, "model": MODEL, "stream": mode == "stream"}
        result = gen.call({**cmd, "workload": target.workload, "concurrency": c, "duration": seconds})
        target.sample_memory()
        return result

    for target in targets:
        for mode in args.modes:
            load(target, mode, 16, args.warmup)
    rounds: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    started = time.monotonic()
    for r in range(args.rounds):
        order = targets[r % len(targets) :] + targets[: r % len(targets)]  # who goes first rotates
        for mode in args.modes:
            for c in args.concurrency:
                for target in order:
                    rounds[(target.name, mode, c)].append(load(target, mode, c, args.duration))
        print(f"round {r + 1}/{args.rounds} done ({time.monotonic() - started:.0f} s)", flush=True)
    for gateway in gateways:  # all running again (memory at the end, shutdown)
        assert gateway.memory is not None
        pause(gateway.memory.root, False)
    return rounds


def run(args: argparse.Namespace, procs: Processes, work: Path) -> dict[str, Any]:
    gateway_cpus, load_cpus, pinning = cpu_plan(args.no_pin)
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)
    mock = start_mock(procs, secrets.token_urlsafe(16), load_cpus)
    mock.workload = WORKLOAD[report.BASELINE]
    gen = LoadGen(procs, load_cpus, work / "loadgen.log")
    problem = check(gen, mock)
    if problem is not None:
        raise RuntimeError(f"the mock upstream is broken: {problem}")
    targets, gateways = start_targets(args, procs, work, gen, mock, gateway_cpus)
    runs = len(targets) * len(args.modes) * len(args.concurrency) * args.rounds
    print(f"measuring {', '.join(t.name for t in targets)}: {runs} runs of {args.duration:g} s", flush=True)
    audit = CpuAudit()
    rounds = measure(args, gen, targets)
    quiet = audit.cores()
    for target in targets:
        if target.memory is not None:
            target.sample_memory()
            gateways[target.name]["peak_rss_mb"] = target.memory.peak_mb
            gateways[target.name]["rss_end_mb"] = target.memory.rss_now_mb()
            gateways[target.name]["processes"] = target.memory.processes
            gateways[target.name]["process_peaks"] = target.memory.breakdown()
    cells = []
    for mode in args.modes:
        for c in args.concurrency:
            cell = report.summarise_cell(rounds, [t.name for t in targets], mode, c)
            cell["ratios"] = {name: r for name in report.LLMOS_TARGETS if (r := report.ratios(cell, name))}
            cells.append(cell)
    return {
        "machine": {**machine(pinning), "other_load": quiet},
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "modes": args.modes,
            "chunks": CHUNKS,
            "workloads": {w: sizes(w) for w in WORKLOADS},
            "target_workloads": {t.name: t.workload for t in targets},
        },
        "gateways": gateways,
        "cells": cells,
        "goals": [dataclasses.asdict(g) for g in report.goals(cells, gateways)],
        "extras": [dataclasses.asdict(g) for g in report.extras(cells, gateways)],
        "raw": [{"target": k[0], "mode": k[1], "concurrency": k[2], "rounds": v} for k, v in rounds.items()],
    }


def no_nan(value: Any) -> Any:
    """JSON without NaN (not valid JSON): None instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [no_nan(v) for v in value]
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 rounds of 1 s runs (about 3 minutes)")
    ap.add_argument("--rounds", type=int, help="rounds (default 3; --quick 2)")
    ap.add_argument("--duration", type=float, help="seconds per run (default 2.5; --quick 1)")
    ap.add_argument(
        "--warmup", type=float, help="warm-up seconds per target and mode (default 2; --quick 0.5)"
    )
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    ap.add_argument("--json", type=Path, help="also write the results to this JSON file")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary directory (configs, logs)")
    args = ap.parse_args(argv)
    quick = {"rounds": 2, "duration": 1.0, "warmup": 0.5}
    full = {"rounds": 3, "duration": 2.5, "warmup": 2.0}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if report.BASELINE not in args.targets:
        ap.error("the overhead is measured against direct: keep it in --targets")
    return args


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    print(f"\nstopping on signal {signum}: every process it started is stopped", file=sys.stderr)
    raise SystemExit(128 + signum)  # unwinds through Processes.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    work = Path(tempfile.mkdtemp(prefix="llmos-bench-proxies-"))
    ok = False
    try:
        with Processes() as procs:
            result = run(args, procs, work)
        ok = True
    except KeyboardInterrupt:
        print("\ninterrupted: every process it started is stopped", file=sys.stderr)
        return 130
    finally:
        if ok and not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"configs and logs kept in {work}", file=sys.stderr)
    print(report.render(result))
    if args.json:
        args.json.write_text(json.dumps(no_nan(result), indent=1) + "\n")
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
