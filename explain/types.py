"""Attribution values shared by the gateway and the model worker. Pure: no torch here.

:class:`AttributionSettings` travels from the gateway to the worker (what to compute, within
which limits); :class:`Attribution` travels back (what was computed). Both are frozen,
check their invariants when built, and cross the process boundary as plain JSON through
``to_json()`` / ``from_json()``.

Attribution JSON (``Attribution.to_json()``; every member always present)::

    {
      "method": "integrated_gradients" | "feature_ablation" | "gradient_x_activation",
      "scope": "summary" | "full",
      "steps": 16 | null,                  # integrated gradients only
      "baseline_token_id": 2 | null,       # the token that replaced prompt tokens (IG, ablation)
      "prompt": {"ids": [int], "texts": [str], "start": int, "total": int},
      "output": {"ids": [int], "texts": [str], "total": int},
      "scores": [float]                    # summary: one score per prompt token
              | [[float]],                 # full: one row per output token, a score per prompt token
      "convergence_delta": float | [float] | null,  # IG: summary one, full one per row
      "truncated": {"prompt": bool, "output": bool},
      "cut_short": bool,                   # full scope stopped early on the time budget
      "elapsed_ms": int
    }

``prompt.ids`` are the prompt tokens attributed: the last ``len(ids)`` of the ``total`` prompt
tokens the model saw (``start`` is the index of the first). Earlier tokens stay in the model's
input as fixed context, so ``truncated.prompt`` never changes what the model computes, only
which tokens get a score. ``output.ids`` are the output tokens explained: the first ones of the
``total`` generated, fewer when ``truncated.output`` (``max_output_tokens``) or ``cut_short``.
A score is the change in the target (the log-probability of the output tokens, summed over
them in summary scope) attributed to a prompt token: positive pushed the output up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from explain import jsonread as jr
from explain.errors import ExplanationError

AttributionMethod = Literal["integrated_gradients", "feature_ablation", "gradient_x_activation"]
ATTRIBUTION_METHODS: tuple[AttributionMethod, ...] = (
    "integrated_gradients",
    "feature_ablation",
    "gradient_x_activation",
)
AttributionScope = Literal["summary", "full"]
ATTRIBUTION_SCOPES: tuple[AttributionScope, ...] = ("summary", "full")

MAX_STEPS = 1024
MAX_TOKENS = 1 << 16
MAX_TOKEN_TEXT = 1024


def round_score(value: float) -> float:
    """``value`` to 6 significant digits (what a record keeps; idempotent)."""
    if not math.isfinite(value):
        raise ExplanationError(f"attribution score {value!r} is not finite")
    return float(f"{value:.6g}")


@dataclass(frozen=True)
class AttributionSettings:
    """What the worker computes for one request, and the limits it keeps to.

    - ``method``: ``gradient_x_activation`` (one forward and backward pass: the default, cheap
      enough for every request), ``integrated_gradients`` (``steps`` batched passes; scores
      add up to the change in the target, see ``convergence_delta``) or ``feature_ablation``
      (one forward pass per prompt token, batched; no gradients).
    - ``scope``: ``summary`` (one score per prompt token for the whole output) or ``full``
      (a row per output token).
    - ``max_prompt_tokens``: score only the last this many prompt tokens.
    - ``max_output_tokens``: explain only the first this many output tokens.
    - ``time_budget_s``: in full scope, stop between batches of output tokens once the next
      batch would end past the budget (the result says ``cut_short``); the first batch always
      runs. Summary scope is one run and is bounded by the limits above instead. None: no limit.
    - ``batch_size``: the most sequences in one forward pass (IG steps x output tokens,
      ablations, or output tokens).
    - ``baseline_token_id``: the token that replaces prompt tokens for IG and ablation; None
      takes the tokenizer's (else the model config's) pad token, else its eos token, else 0.
    """

    method: AttributionMethod = "gradient_x_activation"
    scope: AttributionScope = "summary"
    steps: int = 16
    max_prompt_tokens: int = 512
    max_output_tokens: int = 64
    time_budget_s: float | None = 10.0
    batch_size: int = 64
    baseline_token_id: int | None = None

    def __post_init__(self) -> None:
        if self.method not in ATTRIBUTION_METHODS:
            raise ExplanationError(
                f"attribution method {self.method!r} is unknown; use one of {', '.join(ATTRIBUTION_METHODS)}"
            )
        if self.scope not in ATTRIBUTION_SCOPES:
            raise ExplanationError(f"attribution scope {self.scope!r} is unknown; use summary or full")
        for name, value, hi in (
            ("steps", self.steps, MAX_STEPS),
            ("max_prompt_tokens", self.max_prompt_tokens, MAX_TOKENS),
            ("max_output_tokens", self.max_output_tokens, MAX_TOKENS),
            ("batch_size", self.batch_size, MAX_TOKENS),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
                raise ExplanationError(f"attribution {name} must be an integer in [1, {hi}], not {value!r}")
        budget = self.time_budget_s
        if budget is not None and (
            isinstance(budget, bool)
            or not isinstance(budget, int | float)
            or not math.isfinite(budget)
            or budget <= 0
        ):
            raise ExplanationError(
                f"attribution time_budget_s must be a positive number or None, not {budget!r}"
            )
        token = self.baseline_token_id
        if token is not None and (isinstance(token, bool) or not isinstance(token, int) or token < 0):
            raise ExplanationError(f"attribution baseline_token_id must be a token id or None, not {token!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "scope": self.scope,
            "steps": self.steps,
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_output_tokens": self.max_output_tokens,
            "time_budget_s": self.time_budget_s,
            "batch_size": self.batch_size,
            "baseline_token_id": self.baseline_token_id,
        }

    @classmethod
    def from_json(cls, value: object) -> AttributionSettings:
        """Parse settings (all members optional: missing ones take the defaults)."""
        fields = cls().to_json()
        data = jr.obj(value, "$", (), fields)
        merged = {**fields, **data}
        return cls(**merged)


def _token_id(value: object, path: str) -> int:
    return jr.integer(value, path, 0, 2**31 - 1)


def _token_text(value: object, path: str) -> str:
    return jr.string(value, path, max_len=MAX_TOKEN_TEXT)


@dataclass(frozen=True)
class Attribution:
    """Scores of prompt tokens for an output (see the module docstring for the JSON form).

    Build it with :func:`explain.attribution.attribute` in the worker, or ``from_json`` where
    it arrives. Scores are kept to 6 significant digits, so ``from_json(a.to_json()) == a``.
    """

    method: AttributionMethod
    scope: AttributionScope
    steps: int | None
    baseline_token_id: int | None
    prompt_ids: tuple[int, ...]
    prompt_texts: tuple[str, ...]
    prompt_start: int
    prompt_total: int
    output_ids: tuple[int, ...]
    output_texts: tuple[str, ...]
    output_total: int
    scores: tuple[float, ...] | tuple[tuple[float, ...], ...]
    convergence_delta: float | tuple[float, ...] | None
    truncated_prompt: bool
    truncated_output: bool
    cut_short: bool
    elapsed_ms: int

    def __post_init__(self) -> None:
        if self.method not in ATTRIBUTION_METHODS or self.scope not in ATTRIBUTION_SCOPES:
            raise ExplanationError(f"attribution method/scope {self.method!r}/{self.scope!r} is unknown")
        if (self.steps is not None) != (self.method == "integrated_gradients"):
            raise ExplanationError("attribution steps are given for integrated gradients, and only for it")
        if (self.baseline_token_id is None) != (self.method == "gradient_x_activation"):
            raise ExplanationError(
                "attribution baseline token is given for IG and ablation, and only for them"
            )
        n_prompt, n_output = len(self.prompt_ids), len(self.output_ids)
        if n_prompt == 0 or len(self.prompt_texts) != n_prompt:
            raise ExplanationError("attribution prompt ids and texts must be non-empty and align")
        if n_output == 0 or len(self.output_texts) != n_output:
            raise ExplanationError("attribution output ids and texts must be non-empty and align")
        if self.prompt_start + n_prompt != self.prompt_total:
            raise ExplanationError(
                "attribution prompt tokens must be the last of the prompt (start + count = total)"
            )
        if self.truncated_prompt != (self.prompt_start > 0):
            raise ExplanationError(
                "attribution truncated.prompt must say whether prompt tokens were left out"
            )
        if n_output > self.output_total:
            raise ExplanationError("attribution explains more output tokens than the output has")
        if n_output < self.output_total and not (self.truncated_output or self.cut_short):
            raise ExplanationError(
                "attribution leaves output tokens out without saying why (truncated, cut_short)"
            )
        if self.cut_short and self.scope != "full":
            raise ExplanationError("only a full-scope attribution can be cut short")
        if self.elapsed_ms < 0:
            raise ExplanationError("attribution elapsed_ms must not be negative")
        if self.scope == "summary":
            if len(self.scores) != n_prompt or not all(isinstance(s, float) for s in self.scores):
                raise ExplanationError("summary attribution needs one score per prompt token")
            if self.convergence_delta is not None and not isinstance(self.convergence_delta, float):
                raise ExplanationError("summary attribution has one convergence delta")
        else:
            rows = self.scores
            if len(rows) != n_output or not all(isinstance(r, tuple) and len(r) == n_prompt for r in rows):
                raise ExplanationError(
                    "full attribution needs a row per output token, a score per prompt token"
                )
            delta = self.convergence_delta
            if delta is not None and not (isinstance(delta, tuple) and len(delta) == n_output):
                raise ExplanationError("full attribution has one convergence delta per row")
        if (self.convergence_delta is not None) != (self.method == "integrated_gradients"):
            raise ExplanationError(
                "attribution convergence delta is given for integrated gradients, and only for it"
            )
        numbers = [s for r in self.score_rows() for s in r]
        delta = self.convergence_delta
        numbers.extend(delta if isinstance(delta, tuple) else () if delta is None else (delta,))
        if any(round_score(s) != s for s in numbers):
            raise ExplanationError("attribution scores must be finite and kept to 6 significant digits")

    def score_rows(self) -> tuple[tuple[float, ...], ...]:
        """The scores as rows: one row in summary scope, a row per output token in full."""
        if self.scope == "summary":
            return (self.scores,)  # type: ignore[return-value]
        return self.scores  # type: ignore[return-value]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (scores already at 6 significant digits)."""
        if self.scope == "summary":
            scores: list[Any] = list(self.scores)
        else:
            scores = [list(row) for row in self.scores]  # type: ignore[arg-type]
        delta = self.convergence_delta
        return {
            "method": self.method,
            "scope": self.scope,
            "steps": self.steps,
            "baseline_token_id": self.baseline_token_id,
            "prompt": {
                "ids": list(self.prompt_ids),
                "texts": list(self.prompt_texts),
                "start": self.prompt_start,
                "total": self.prompt_total,
            },
            "output": {
                "ids": list(self.output_ids),
                "texts": list(self.output_texts),
                "total": self.output_total,
            },
            "scores": scores,
            "convergence_delta": list(delta) if isinstance(delta, tuple) else delta,
            "truncated": {"prompt": self.truncated_prompt, "output": self.truncated_output},
            "cut_short": self.cut_short,
            "elapsed_ms": self.elapsed_ms,
        }

    @classmethod
    def from_json(cls, value: object, path: str = "$") -> Attribution:
        """Parse and check an attribution; raise ExplanationError naming what is wrong."""
        d = jr.obj(
            value,
            path,
            (
                "method",
                "scope",
                "steps",
                "baseline_token_id",
                "prompt",
                "output",
                "scores",
                "convergence_delta",
                "truncated",
                "cut_short",
                "elapsed_ms",
            ),
        )
        method: Any = jr.choice(d["method"], f"{path}.method", ATTRIBUTION_METHODS)
        scope: Any = jr.choice(d["scope"], f"{path}.scope", ATTRIBUTION_SCOPES)
        prompt = jr.obj(d["prompt"], f"{path}.prompt", ("ids", "texts", "start", "total"))
        output = jr.obj(d["output"], f"{path}.output", ("ids", "texts", "total"))
        truncated = jr.obj(d["truncated"], f"{path}.truncated", ("prompt", "output"))

        def score(v: object, p: str) -> float:
            return jr.number(v, p)

        def row(v: object, p: str) -> tuple[float, ...]:
            return jr.array(v, p, score, max_len=MAX_TOKENS)

        scores: tuple[float, ...] | tuple[tuple[float, ...], ...]
        delta: float | tuple[float, ...] | None
        if scope == "summary":
            scores = row(d["scores"], f"{path}.scores")
            delta = jr.optional(d["convergence_delta"], f"{path}.convergence_delta", score)
        else:
            scores = jr.array(d["scores"], f"{path}.scores", row, max_len=MAX_TOKENS)
            delta = jr.optional(d["convergence_delta"], f"{path}.convergence_delta", row)
        try:
            return cls(
                method=method,
                scope=scope,
                steps=jr.optional(d["steps"], f"{path}.steps", lambda v, p: jr.integer(v, p, 1, MAX_STEPS)),
                baseline_token_id=jr.optional(d["baseline_token_id"], f"{path}.baseline_token_id", _token_id),
                prompt_ids=jr.array(prompt["ids"], f"{path}.prompt.ids", _token_id, max_len=MAX_TOKENS),
                prompt_texts=jr.array(
                    prompt["texts"], f"{path}.prompt.texts", _token_text, max_len=MAX_TOKENS
                ),
                prompt_start=jr.integer(prompt["start"], f"{path}.prompt.start"),
                prompt_total=jr.integer(prompt["total"], f"{path}.prompt.total"),
                output_ids=jr.array(output["ids"], f"{path}.output.ids", _token_id, max_len=MAX_TOKENS),
                output_texts=jr.array(
                    output["texts"], f"{path}.output.texts", _token_text, max_len=MAX_TOKENS
                ),
                output_total=jr.integer(output["total"], f"{path}.output.total"),
                scores=scores,
                convergence_delta=delta,
                truncated_prompt=jr.boolean(truncated["prompt"], f"{path}.truncated.prompt"),
                truncated_output=jr.boolean(truncated["output"], f"{path}.truncated.output"),
                cut_short=jr.boolean(d["cut_short"], f"{path}.cut_short"),
                elapsed_ms=jr.integer(d["elapsed_ms"], f"{path}.elapsed_ms"),
            )
        except ExplanationError as exc:
            raise ExplanationError(f"malformed explanation: {path}: {exc}") from exc
