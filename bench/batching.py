"""Worker batching: completion throughput at concurrency 16, batched vs. one at a time.

    .venv/bin/python bench/batching.py [--requests 96] [--concurrency 16] [--max-tokens 32]
        [--rounds 2] [--threads N]

Builds the demo model in a temporary directory and starts two real workers through
``sandbox.client.ModelWorker`` (isolation and all): one with the default batching
(``--max-batch 16``) and one with ``--max-batch 1`` (the one-at-a-time baseline). Each answers
the same completion requests (greedy, fixed ``max_tokens``, prompts of different lengths) from
``--concurrency`` concurrent clients. Rounds alternate baseline and batched so that machine drift
hits both. Prints requests/s, completion tokens/s and p50/p95 latency per worker and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.types import DoneEvent, GenerateRequest, GenerationParams  # noqa: E402
from sandbox.client import ModelWorker, WorkerSpec  # noqa: E402
from sandbox.demo_model import build_demo_model  # noqa: E402

PROMPTS = (
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "user: What is the capital of France?\nassistant:",
    "An authenticated, audited gateway to sandboxed local language models. " * 3,
)


@dataclass
class Result:
    latencies: list[float]
    tokens: int
    wall: float

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall

    @property
    def tps(self) -> float:
        return self.tokens / self.wall

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run_load(worker: ModelWorker, requests: int, concurrency: int, max_tokens: int) -> Result:
    latencies: list[float] = []
    tokens = 0
    counter = iter(range(requests))

    async def client() -> None:
        nonlocal tokens
        for n in counter:
            request = GenerateRequest(
                id=f"bench{n}",
                params=GenerationParams(max_tokens=max_tokens, temperature=0.0),
                prompt=PROMPTS[n % len(PROMPTS)],
            )
            start = time.perf_counter()
            done = None
            async for event in worker.generate(request):
                if isinstance(event, DoneEvent):
                    done = event
            latencies.append(time.perf_counter() - start)
            if done is None or done.completion_tokens != max_tokens:
                raise RuntimeError(f"unexpected end of request {n}: {done}")
            tokens += done.completion_tokens

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return Result(latencies, tokens, time.perf_counter() - start)


def merge(results: list[Result]) -> Result:
    return Result(
        [x for r in results for x in r.latencies],
        sum(r.tokens for r in results),
        sum(r.wall for r in results),
    )


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="llmos-bench-batching-") as tmp:
        model_dir = Path(tmp) / "demo"
        build_demo_model(model_dir, seed=0)
        common = {
            "model_dir": model_dir,
            "log_path": Path(tmp) / "worker.log",
            "max_queue": args.concurrency,
            "threads": args.threads,
        }
        workers = {
            "one-at-a-time": ModelWorker(WorkerSpec(name="serial", max_batch=1, **common)),  # type: ignore[arg-type]
            "batched": ModelWorker(WorkerSpec(name="batched", max_batch=16, **common)),  # type: ignore[arg-type]
        }
        for worker in workers.values():
            await worker.start()
            await worker.wait_ready(120)
        try:
            for worker in workers.values():  # warm-up
                await run_load(worker, args.concurrency, args.concurrency, args.max_tokens)
            results: dict[str, list[Result]] = {name: [] for name in workers}
            for _ in range(args.rounds):
                for name, worker in workers.items():
                    results[name].append(
                        await run_load(worker, args.requests, args.concurrency, args.max_tokens)
                    )
        finally:
            for worker in workers.values():
                await worker.stop()
    print(
        f"concurrency {args.concurrency}, {args.requests} requests x {args.rounds} rounds, "
        f"max_tokens {args.max_tokens}, greedy, demo model"
    )
    print(f"{'worker':<15}{'req/s':>9}{'tokens/s':>11}{'p50 ms':>10}{'p95 ms':>10}")
    merged = {name: merge(rs) for name, rs in results.items()}
    for name, r in merged.items():
        print(f"{name:<15}{r.rps:>9.1f}{r.tps:>11.1f}{r.pct(0.5):>10.1f}{r.pct(0.95):>10.1f}")
    base, batched = merged["one-at-a-time"], merged["batched"]
    print(
        f"{'ratio':<15}{batched.rps / base.rps:>9.2f}{batched.tps / base.tps:>11.2f}"
        f"{batched.pct(0.5) / base.pct(0.5):>10.2f}{batched.pct(0.95) / base.pct(0.95):>10.2f}"
        "   (batched / one-at-a-time)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
