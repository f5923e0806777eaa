"""Cost of explanations: gateway throughput at concurrency 16 with an attribution on every
request, against explanations off (evidence-only records), on the demo model.

    .venv/bin/python bench/explain.py [--requests 160] [--concurrency 16] [--max-tokens 16]
        [--rounds 2] [--method gradient_x_activation] [--scope summary] [--threads 1]

Starts two real gateways (`llmos serve`, auth, Rego policy, PII patterns, signed audit) in one
temporary state directory, one after the other per round: the *off* one with the policy's
`explain: none` (every request still gets its evidence record and its audit commitment), the
*on* one with `explain: <scope>` for every request. Each answers the same chat requests from
``--concurrency`` clients; a round ends when every response is in **and every explanation record
is written** (so attributions that lag behind the answers are paid for inside the round).
Prints requests/s both ways, the loss, and the attribution time per request from the records.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.overhead import LLMOS, RawHttp, free_port, wait_http_ready  # noqa: E402

STATUSES: collections.Counter[str] = collections.Counter()  # attribution status:reason, "on" rounds
PROMPTS = (
    "Summarise the benefits of running language models behind a policy-enforcing gateway.",
    "Write a short note to the team about the quarterly numbers and the next planning meeting.",
    "Explain in two sentences why audit trails matter for compliance teams.",
    "List three risks of sending customer data to an external language model.",
)


def write_policy(home: Path, level: str, method: str) -> Path:
    policies = home / f"policies-{level}"
    if not policies.exists():
        shutil.copytree(ROOT / "policies", policies, ignore=shutil.ignore_patterns("__*"))
    data = json.loads((policies / "data.json").read_text())
    data["llmos"]["config"]["explain"] = level if level == "none" else {"level": level, "method": method}
    (policies / "data.json").write_text(json.dumps(data))
    return policies


def explanation_count(home: Path) -> int:
    db = home / "state" / "explanations.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM explanations").fetchone()[0])


def attribution_ms(home: Path, since: int) -> list[int]:
    with sqlite3.connect(home / "state" / "explanations.db") as conn:
        rows = conn.execute(
            "SELECT body FROM explanations ORDER BY rowid LIMIT -1 OFFSET ?", (since,)
        ).fetchall()
    out = []
    for (body,) in rows:
        attribution = json.loads(body)["model_attribution"]
        STATUSES[f"{attribution['status']}:{attribution['reason']}"] += 1
        if attribution["status"] == "ok":
            out.append(int(attribution["attribution"]["elapsed_ms"]))
    return out


async def one_round(
    home: Path, key: str, level: str, args: argparse.Namespace
) -> tuple[float, list[int], dict[str, int]]:
    """(requests/s including every record written, attribution ms per request, statuses)."""
    config = home / f"llmos-{level}.yaml"
    policies = write_policy(home, level, args.method)
    config.write_text(
        f"state_dir: state\npolicy: {{dir: {policies.name}, run_tests_on_load: false}}\n"
        "pii: {detector: patterns}\n"
        f"models:\n  - {{name: demo, path: state/models/demo, threads: {args.threads}}}\n"
    )
    port = free_port()
    server = subprocess.Popen(
        [LLMOS, "serve", "--config", str(config), "--port", str(port)],
        env={**os.environ, "LLMOS_HOME": str(home / "state")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_http_ready(port)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        conns = [RawHttp("127.0.0.1", port) for _ in range(args.concurrency)]
        await asyncio.gather(*(c.post("/v1/chat/completions", body(0, 2), headers) for c in conns))  # warm
        await asyncio.sleep(1.0)
        before = explanation_count(home)
        statuses: dict[str, int] = {}
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(args.requests):
            queue.put_nowait(n)

        async def client(conn: RawHttp) -> None:
            while not queue.empty():
                n = queue.get_nowait()
                status, _ = await conn.post("/v1/chat/completions", body(n, args.max_tokens), headers)
                statuses[str(status)] = statuses.get(str(status), 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in conns))
        deadline = time.monotonic() + 300
        while explanation_count(home) < before + args.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        wall = time.perf_counter() - started
        for c in conns:
            await c.close()
        return args.requests / wall, attribution_ms(home, before), statuses
    finally:
        server.terminate()
        server.wait(timeout=60)


def body(n: int, max_tokens: int) -> bytes:
    prompt = PROMPTS[n % len(PROMPTS)]
    return json.dumps(
        {
            "model": "demo",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
    ).encode()


async def main_async(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="llmos-bench-explain-"))
    env = {**os.environ, "LLMOS_HOME": str(home / "state")}
    (home / "init.yaml").write_text("state_dir: state\n")
    key = subprocess.run(
        [LLMOS, "init", "--config", str(home / "init.yaml")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    off: list[float] = []
    on: list[float] = []
    times: list[int] = []
    try:
        for r in range(args.rounds):
            rps_off, _, s_off = await one_round(home, key, "none", args)
            STATUSES.clear()  # count the "on" round's records only
            rps_on, ms, s_on = await one_round(home, key, args.scope, args)
            off.append(rps_off)
            on.append(rps_on)
            times += ms
            print(f"round {r + 1}: off {rps_off:.1f} req/s {s_off}; on {rps_on:.1f} req/s {s_on};", end=" ")
            print(f"{len(ms)} attributions; records: {dict(STATUSES)}")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    best_off, best_on = statistics.median(off), statistics.median(on)
    print(
        f"# explanations: demo model, concurrency {args.concurrency}, max_tokens {args.max_tokens},"
        f" {args.requests} requests x {args.rounds} rounds, {args.method}/{args.scope},"
        f" worker threads {args.threads}"
    )
    print(f"explain off (evidence records only): {best_off:.1f} req/s (median of rounds)")
    print(f"explain on, every request:            {best_on:.1f} req/s (median of rounds)")
    print(f"throughput loss: {100 * (1 - best_on / best_off):.1f}%  (ratio on/off {best_on / best_off:.3f})")
    paired = statistics.median(b / a for a, b in zip(off, on, strict=True))
    print(f"median of the per-round ratios on/off: {paired:.3f} (loss {100 * (1 - paired):.1f}%)")
    if times:
        ordered = sorted(times)
        print(
            f"attribution time per request (in the worker): p50 {statistics.median(ordered):.0f} ms,"
            f" p95 {ordered[int(0.95 * (len(ordered) - 1))]:.0f} ms, n={len(ordered)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--method",
        default="gradient_x_activation",
        choices=["gradient_x_activation", "integrated_gradients", "feature_ablation"],
    )
    parser.add_argument("--scope", default="summary", choices=["summary", "full"])
    parser.add_argument("--threads", type=int, default=1)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
