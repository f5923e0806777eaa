"""Worker cold start: time from spawn to ``ready``, exec'd interpreter vs. fork server.

    .venv/bin/python bench/coldstart.py [--runs 7] [--kind transformers|echo] [--threads N]

Builds the demo model (a tiny Llama, safetensors) in a temporary directory, then starts real
workers through ``sandbox.process.spawn_worker`` (isolation and all) with ``spawner: exec``
(``python -m sandbox.worker``: a fresh interpreter imports torch and transformers, then loads)
and ``spawner: fork_server`` (forked from the shared fork server, which imported them once).
Each run times ``spawn_worker`` until the worker's ``ready`` frame arrives, then shuts the
worker down; runs alternate between the two so that machine drift hits both. The fork server
is started before the first timed run (its own start-up, which a gateway pays once, is printed
separately). Prints every run, the medians and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox.demo_model import build_demo_model  # noqa: E402
from sandbox.process import WorkerSpec, reap_worker, spawn_worker  # noqa: E402
from sandbox.protocol import read_frame  # noqa: E402
from sandbox.spawner import SpawnerKind, close_fork_servers  # noqa: E402

SPAWNERS: tuple[SpawnerKind, ...] = ("exec", "fork_server")


async def time_to_ready(spec: WorkerSpec) -> float:
    start = time.perf_counter()
    process = await spawn_worker(spec)
    try:
        frame = await asyncio.wait_for(read_frame(process.reader), spec.start_timeout_s)
        elapsed = time.perf_counter() - start
        if frame is None or frame.get("type") != "ready":
            raise RuntimeError(f"the worker did not become ready: {frame}")
        return elapsed
    finally:
        process.send_nowait({"type": "shutdown"})
        await reap_worker(process, spec.stop_timeout_s)


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="llmos-bench-coldstart-") as tmp:
        model_dir = None
        if args.kind == "transformers":
            model_dir = Path(tmp) / "demo"
            build_demo_model(model_dir, seed=0)
        specs = {
            spawner: WorkerSpec(
                name="coldstart",
                kind=args.kind,
                model_dir=model_dir,
                log_path=Path(tmp) / "logs" / "worker.log",
                threads=args.threads,
                spawner=spawner,
            )
            for spawner in SPAWNERS
        }
        try:
            server_start = await time_to_ready(specs["fork_server"])  # starts the server: not a run
            times: dict[str, list[float]] = {spawner: [] for spawner in SPAWNERS}
            for n in range(args.runs):
                for spawner in SPAWNERS if n % 2 == 0 else SPAWNERS[::-1]:
                    times[spawner].append(await time_to_ready(specs[spawner]))
        finally:
            await close_fork_servers()
    print(f"{args.kind} worker, spawn -> ready, {args.runs} runs each (alternating)")
    print(f"fork server start + first worker (paid once per gateway): {server_start:.2f} s")
    for spawner, runs in times.items():
        listed = " ".join(f"{t:.2f}" for t in runs)
        print(f"{spawner:<12} median {statistics.median(runs):6.3f} s   runs: {listed}")
    ratio = statistics.median(times["exec"]) / statistics.median(times["fork_server"])
    print(f"ratio        {ratio:6.1f}x faster with the fork server (exec median / fork_server median)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--kind", choices=("transformers", "echo"), default="transformers")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
