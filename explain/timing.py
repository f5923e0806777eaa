"""``python -m explain.timing``: time :func:`explain.attribution.attribute` on the demo model.

Builds the tiny demo Llama (``sandbox.demo_model``) in a temporary directory, generates 16
tokens greedily after a ~30-token chat prompt, then times every method and scope with the
default settings (``--steps`` for integrated gradients), ``--repeats`` times each after one
warm-up call, and prints min / median / max milliseconds. Imports torch: never run it in the
gateway process. The numbers in docs/explanations.md come from here.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPT = (
    "<s>user: What is the capital of France? Every request is checked by policy, redacted,"
    " and written to a tamper-evident log.\nassistant:"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explain.timing", description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=16, help="integrated gradients steps")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--output-tokens", type=int, default=16)
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from explain.attribution import attribute
    from explain.types import ATTRIBUTION_METHODS, ATTRIBUTION_SCOPES, AttributionSettings
    from sandbox.demo_model import build_demo_model

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        build_demo_model(Path(tmp), seed=0)
        tokenizer: Any = AutoTokenizer.from_pretrained(tmp)
        model: Any = AutoModelForCausalLM.from_pretrained(tmp)
    model.eval()
    prompt = list(tokenizer(PROMPT)["input_ids"])
    with torch.no_grad():
        generated = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=args.output_tokens,
            min_new_tokens=args.output_tokens,
            do_sample=False,
        )
    output = generated[0, len(prompt) :].tolist()
    print(
        f"demo model, {len(prompt)} prompt tokens, {len(output)} output tokens, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, IG steps {args.steps}"
    )
    print(f"{'method':<24}{'scope':<9}{'min ms':>9}{'median ms':>11}{'max ms':>9}")
    sequence = torch.tensor([prompt + output])

    def forward() -> None:
        with torch.no_grad():
            model(input_ids=sequence)

    def generate() -> None:
        with torch.no_grad():
            model.generate(
                torch.tensor([prompt]),
                max_new_tokens=len(output),
                min_new_tokens=len(output),
                do_sample=False,
            )

    for name, call in (("(one forward pass)", forward), (f"(generate {len(output)} tokens)", generate)):
        _report(name, "", call, args.repeats)
    for method in ATTRIBUTION_METHODS:
        for scope in ATTRIBUTION_SCOPES:
            settings = AttributionSettings(method=method, scope=scope, steps=args.steps, time_budget_s=None)
            _report(
                method,
                scope,
                lambda settings=settings: attribute(model, prompt, output, settings, tokenizer=tokenizer),
                args.repeats,
            )
    return 0


def _report(name: str, scope: str, call: Any, repeats: int) -> None:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    print(f"{name:<24}{scope:<9}{min(times):>9.1f}{statistics.median(times):>11.1f}{max(times):>9.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
