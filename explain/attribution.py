"""Token attributions with Captum, inside the model worker (this module imports torch).

The gateway never imports this module (torch and regopy cannot share a process); it sends
:class:`~explain.types.AttributionSettings` to the worker and gets
:class:`~explain.types.Attribution` JSON back. The worker calls, after generating::

    attribution = attribute(model, prompt_ids, output_ids, settings, tokenizer=tokenizer)
    reply["attribution"] = attribution.to_json()

``model`` is a Hugging Face causal LM (or anything alike: ``model(input_ids=ids).logits`` of
shape [batch, sequence, vocabulary], and ``model.get_input_embeddings()``). The output is
teacher-forced after the prompt, and the *target* is the log-probability the model gives the
output tokens: their sum in ``summary`` scope (one Captum run), each token's own in ``full``
scope (a row per output token, several rows batched into one run). Attributions are taken at
the input embedding layer and summed over the embedding dimension, one score per prompt token:

- ``gradient_x_activation``: Captum ``LayerGradientXActivation``: gradient of the target times
  the token's embedding. Summary: one forward and one backward pass. Full: the same, on a batch
  of copies of the sequence, one per output token.
- ``integrated_gradients``: Captum ``LayerIntegratedGradients``: the embeddings of the scored
  prompt tokens move from a baseline token's embedding to their own in ``steps`` steps, all
  batched (``batch_size`` sequences per pass); the output tokens keep their real embeddings.
  Scores add up to F(input) - F(baseline) up to ``convergence_delta``.
- ``feature_ablation``: Captum ``FeatureAblation``: each scored prompt token in turn replaced
  by the baseline token, the drop in the target is its score; no gradients. Full scope costs
  the same as summary (every ablated pass yields every output token's log-probability).

Runs on whatever device the embedding layer lives on, in eval mode (a model in training mode
is switched back afterwards), under ``torch.enable_grad()`` (also inside ``inference_mode``)
with gradients taken by ``torch.autograd.grad``: no ``.grad`` is left on any parameter and no
``requires_grad`` flag changes. Nothing here is random, so equal inputs give equal scores.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from captum.attr import FeatureAblation, LayerGradientXActivation, LayerIntegratedGradients

from explain.errors import ExplanationError
from explain.types import Attribution, AttributionSettings, round_score

__all__ = ["Attribution", "AttributionSettings", "attribute", "attribute_many", "batchable"]


class _Target:
    """The function Captum attributes: log-probabilities of the output tokens, teacher-forced.

    Called with token ids [batch, sequence] (the prompt, then the output). ``summed``: each
    example's sum over the output tokens, [batch]. Otherwise with ``rows`` [batch] (which output
    token each example explains): that token's log-probability, [batch]. With neither: every
    output token's, [batch, outputs] (feature ablation's full scope).
    """

    def __init__(self, model: Any, prompt_len: int, output: torch.Tensor, summed: bool) -> None:
        self.model = model
        self.prompt_len = prompt_len
        self.output = output  # [outputs]
        self.summed = summed
        params = inspect.signature(model.forward).parameters
        # Hugging Face models: no KV cache, and logits only where the output tokens are predicted.
        self.kwargs: dict[str, Any] = {}
        if "use_cache" in params:
            self.kwargs["use_cache"] = False
        if "logits_to_keep" in params:
            self.kwargs["logits_to_keep"] = len(output) + 1

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[batch, outputs, vocabulary]: the logits that predict each output token."""
        logits = self.model(input_ids=input_ids, **self.kwargs).logits
        n = len(self.output)
        if logits.shape[1] == input_ids.shape[1]:
            return logits[:, self.prompt_len - 1 : self.prompt_len - 1 + n]
        return logits[:, -(n + 1) : -1]  # logits_to_keep: the last n + 1 positions

    def __call__(self, input_ids: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.logits(input_ids)
        batch, device = logits.shape[0], logits.device  # a sharded model's logits: its last device
        output = self.output.to(device)
        if rows is not None:
            rows = rows.to(device)
            picked = logits[torch.arange(batch, device=device), rows].float()  # [batch, vocab]
            log_probs = torch.log_softmax(picked, dim=-1)
            return log_probs.gather(-1, output[rows].unsqueeze(-1)).squeeze(-1)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        per_token = log_probs.gather(-1, output.expand(batch, -1).unsqueeze(-1)).squeeze(-1)
        return per_token.sum(-1) if self.summed else per_token


def _baseline_token(model: Any, tokenizer: Any, settings: AttributionSettings) -> int:
    if settings.baseline_token_id is not None:
        return settings.baseline_token_id
    config = getattr(model, "config", None)
    for name in ("pad_token_id", "eos_token_id"):
        for source in (tokenizer, config):
            value = getattr(source, name, None) if source is not None else None
            if isinstance(value, list | tuple):
                value = value[0] if value else None
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return 0


def _texts(tokenizer: Any, ids: Sequence[int]) -> tuple[str, ...]:
    """Each token decoded alone (``[ID]`` without a tokenizer)."""
    if tokenizer is None:
        return tuple(f"[{i}]" for i in ids)
    return tuple(
        str(tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False))[:1024]
        for i in ids
    )


def _check_ids(name: str, ids: Sequence[int], vocab: int) -> None:
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab:
            raise ExplanationError(f"cannot attribute: a {name} token id is not in the model's vocabulary")


def attribute(
    model: Any,
    prompt_ids: Sequence[int],
    output_ids: Sequence[int],
    settings: AttributionSettings | None = None,
    *,
    tokenizer: Any = None,
    clock: Callable[[], float] = time.monotonic,
) -> Attribution:
    """Attribute ``output_ids`` (generated after ``prompt_ids``) to the prompt tokens.

    Raises ExplanationError when there is nothing to attribute (no prompt or no output
    tokens), a token id is outside the vocabulary, or the scores come out non-finite.
    """
    settings = settings or AttributionSettings()
    started = clock()
    if not prompt_ids or not output_ids:
        raise ExplanationError("cannot attribute: the prompt and the output must each have a token")
    embedding = model.get_input_embeddings()
    vocab = int(embedding.weight.shape[0])
    _check_ids("prompt", prompt_ids, vocab)
    _check_ids("output", output_ids, vocab)
    prompt_total, output_total = len(prompt_ids), len(output_ids)
    start = max(0, prompt_total - settings.max_prompt_tokens)
    output = list(output_ids[: settings.max_output_tokens])
    method = settings.method
    baseline = None if method == "gradient_x_activation" else _baseline_token(model, tokenizer, settings)
    if baseline is not None and baseline >= vocab:
        raise ExplanationError("cannot attribute: the baseline token id is not in the model's vocabulary")
    was_training = bool(getattr(model, "training", False))
    if was_training:
        model.eval()
    try:
        # Tensors made here, not in a caller's inference mode: autograd cannot use those.
        with torch.inference_mode(False), torch.enable_grad():
            device = embedding.weight.device
            ids = torch.tensor([list(prompt_ids) + output], dtype=torch.long, device=device)
            output_t = torch.tensor(output, dtype=torch.long, device=device)
            run = _Run(model, embedding, ids, prompt_total, start, output_t, baseline, settings)
            if settings.scope == "summary":
                summary, delta = run.summary()
                scores: Any = tuple(round_score(s) for s in summary)
                deltas: Any = None if delta is None else round_score(delta[0])
                cut_short = False
            else:
                matrix, row_deltas, cut_short = run.full(started, clock)
                output = output[: len(matrix)]
                scores = tuple(tuple(round_score(s) for s in row) for row in matrix)
                deltas = None if row_deltas is None else tuple(round_score(d) for d in row_deltas)
    finally:
        if was_training:
            model.train()
    elapsed_ms = max(0, round((clock() - started) * 1000))
    return Attribution(
        method=method,
        scope=settings.scope,
        steps=settings.steps if method == "integrated_gradients" else None,
        baseline_token_id=baseline,
        prompt_ids=tuple(prompt_ids[start:]),
        prompt_texts=_texts(tokenizer, prompt_ids[start:]),
        prompt_start=start,
        prompt_total=prompt_total,
        output_ids=tuple(output),
        output_texts=_texts(tokenizer, output),
        output_total=output_total,
        scores=scores,
        convergence_delta=deltas,
        truncated_prompt=start > 0,
        truncated_output=output_total > settings.max_output_tokens,
        cut_short=cut_short,
        elapsed_ms=elapsed_ms,
    )


class _Run:
    """One attribution: the sequence, the scored prompt window, and the Captum calls."""

    def __init__(
        self,
        model: Any,
        embedding: torch.nn.Module,
        ids: torch.Tensor,
        prompt_len: int,
        start: int,
        output: torch.Tensor,
        baseline: int | None,
        settings: AttributionSettings,
    ) -> None:
        self.model = model
        self.embedding = embedding
        self.ids = ids  # [1, prompt + outputs]
        self.prompt_len = prompt_len
        self.start = start  # first scored prompt position
        self.output = output
        self.baseline = baseline
        self.settings = settings

    def _baselines(self, batch: int) -> torch.Tensor:
        if self.baseline is None:
            raise ExplanationError("this attribution method has no baseline token")
        baselines = self.ids.expand(batch, -1).clone()
        baselines[:, self.start : self.prompt_len] = self.baseline
        return baselines

    def _window(self, attributions: torch.Tensor) -> torch.Tensor:
        """Embedding attributions [batch, sequence, dim] -> scored prompt tokens [batch, window]."""
        return attributions[:, self.start : self.prompt_len].sum(-1)

    def summary(self) -> tuple[list[float], list[float] | None]:
        method = self.settings.method
        if method == "feature_ablation":
            scores = self._ablate(summed=True)
            return _finite(scores.reshape(-1)), None
        target = _Target(self.model, self.prompt_len, self.output, summed=True)
        if method == "gradient_x_activation":
            attributions = LayerGradientXActivation(target, self.embedding).attribute(self.ids)
            return _finite(self._window(attributions)[0]), None
        steps = self.settings.steps
        attributions, delta = LayerIntegratedGradients(target, self.embedding).attribute(
            self.ids,
            baselines=self._baselines(1),
            n_steps=steps,
            internal_batch_size=min(steps, self.settings.batch_size),
            return_convergence_delta=True,
        )
        return _finite(self._window(attributions)[0]), _finite(delta.reshape(-1))

    def full(
        self, started: float, clock: Callable[[], float]
    ) -> tuple[list[list[float]], list[float] | None, bool]:
        """Rows for the output tokens, in batches; stop early (cut short) on the time budget."""
        method = self.settings.method
        n = len(self.output)
        if method == "feature_ablation":
            matrix = self._ablate(summed=False)  # [outputs, window]
            return [_finite(row) for row in matrix], None, False
        target = _Target(self.model, self.prompt_len, self.output, summed=False)
        batch_size = self.settings.batch_size
        if method == "integrated_gradients":
            per_run = max(1, batch_size // self.settings.steps)
        else:
            per_run = batch_size
        budget = self.settings.time_budget_s
        rows: list[list[float]] = []
        deltas: list[float] = []
        done = 0
        while done < n:
            began = clock()
            chunk = min(per_run, n - done)
            which = torch.arange(done, done + chunk, device=self.ids.device)
            inputs = self.ids.expand(chunk, -1)
            if method == "gradient_x_activation":
                attributions = LayerGradientXActivation(target, self.embedding).attribute(
                    inputs, additional_forward_args=(which,)
                )
            else:
                steps = self.settings.steps
                attributions, delta = LayerIntegratedGradients(target, self.embedding).attribute(
                    inputs,
                    baselines=self._baselines(chunk),
                    additional_forward_args=(which,),
                    n_steps=steps,
                    internal_batch_size=max(chunk, min(chunk * steps, batch_size)),
                    return_convergence_delta=True,
                )
                deltas.extend(_finite(delta.reshape(-1)))
            rows.extend(_finite(row) for row in self._window(attributions))
            done += chunk
            now = clock()
            if budget is not None and done < n and (now - started) + (now - began) > budget:
                break
        return rows, (deltas if method == "integrated_gradients" else None), done < n

    def _ablate(self, summed: bool) -> torch.Tensor:
        """Feature ablation over the scored prompt window: [1, window] summed, [outputs, window]."""
        before = self.ids[:, : self.start]
        after = self.ids[:, self.prompt_len :]
        target = _Target(self.model, self.prompt_len, self.output, summed=summed)

        def forward(window: torch.Tensor) -> torch.Tensor:
            batch = window.shape[0]
            return target(torch.cat([before.expand(batch, -1), window, after.expand(batch, -1)], dim=1))

        window = self.ids[:, self.start : self.prompt_len]
        with torch.no_grad():
            scores = FeatureAblation(forward).attribute(
                window,
                baselines=self.baseline,
                perturbations_per_eval=max(1, min(self.settings.batch_size, window.shape[1])),
            )
        return scores.reshape(-1 if summed else len(self.output), window.shape[1])


def _finite(values: torch.Tensor) -> list[float]:
    result = values.detach().float().cpu()
    if not bool(torch.isfinite(result).all()):
        raise ExplanationError("attribution produced non-finite scores (the model's numbers overflowed)")
    return [float(v) for v in result.tolist()]


# Logits held at once by a batched run: batch x output tokens x vocabulary floats (256 MiB).
MAX_BATCH_LOGITS = 1 << 26


def batchable(settings: AttributionSettings) -> bool:
    """Whether answers with these settings can be attributed together (``attribute_many``)."""
    return settings.method == "gradient_x_activation" and settings.scope == "summary"


def attribute_many(
    model: Any,
    jobs: Sequence[tuple[Sequence[int], Sequence[int], AttributionSettings]],
    *,
    tokenizer: Any = None,
    clock: Callable[[], float] = time.monotonic,
) -> list[Attribution]:
    """Gradient x activation summaries of several answers in one forward and backward pass.

    ``jobs``: (prompt ids, output ids, settings), each ``batchable``. The sequences are padded
    on the right (a causal model's real positions never see the padding) and each example's
    target is the sum of its own output tokens' log-probabilities, so each row's gradients are
    its own: the scores equal ``attribute`` for each job alone, up to floating-point rounding.
    Raises ExplanationError as ``attribute`` does (for the whole batch).
    """
    if not jobs:
        return []
    if not all(batchable(settings) for _, _, settings in jobs):
        raise ExplanationError("only gradient x activation summaries are attributed in batches")
    started = clock()
    embedding = model.get_input_embeddings()
    vocab = int(embedding.weight.shape[0])
    device = embedding.weight.device
    rows = []
    for prompt_ids, output_ids, settings in jobs:
        if not prompt_ids or not output_ids:
            raise ExplanationError("cannot attribute: the prompt and the output must each have a token")
        _check_ids("prompt", prompt_ids, vocab)
        _check_ids("output", output_ids, vocab)
        rows.append((list(prompt_ids), list(output_ids[: settings.max_output_tokens]), settings))
    length = max(len(p) + len(o) for p, o, _ in rows)
    outputs = max(len(o) for _, o, _ in rows)
    batch = len(rows)
    ids = torch.zeros((batch, length), dtype=torch.long, device=device)
    mask = torch.zeros((batch, length), dtype=torch.long, device=device)
    positions = torch.zeros((batch, outputs), dtype=torch.long, device=device)  # predicting each output
    targets = torch.zeros((batch, outputs), dtype=torch.long, device=device)
    valid = torch.zeros((batch, outputs), dtype=torch.bool, device=device)
    for b, (prompt, output, _) in enumerate(rows):
        n = len(prompt) + len(output)
        ids[b, :n] = torch.tensor(prompt + output, dtype=torch.long, device=device)
        mask[b, :n] = 1
        k = len(output)
        positions[b, :k] = torch.arange(len(prompt) - 1, len(prompt) - 1 + k, device=device)
        targets[b, :k] = torch.tensor(output, dtype=torch.long, device=device)
        valid[b, :k] = True
    kwargs: dict[str, Any] = {"attention_mask": mask}
    if "use_cache" in inspect.signature(model.forward).parameters:
        kwargs["use_cache"] = False

    def target(input_ids: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=input_ids, **kwargs).logits
        at = positions.to(logits.device)
        picked = logits.gather(1, at.unsqueeze(-1).expand(-1, -1, logits.shape[-1])).float()
        log_probs = torch.log_softmax(picked, dim=-1)
        per_token = log_probs.gather(-1, targets.to(logits.device).unsqueeze(-1)).squeeze(-1)
        return (per_token * valid.to(logits.device)).sum(-1)  # [batch]

    was_training = bool(getattr(model, "training", False))
    if was_training:
        model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            attributions = (
                LayerGradientXActivation(target, embedding).attribute(ids).sum(-1)
            )  # [batch, length]
    finally:
        if was_training:
            model.train()
    elapsed_ms = max(0, round((clock() - started) * 1000 / batch))  # each answer's share
    results = []
    for b, ((prompt, output, settings), (_, output_ids, _)) in enumerate(zip(rows, jobs, strict=True)):
        start = max(0, len(prompt) - settings.max_prompt_tokens)
        scores = tuple(round_score(s) for s in _finite(attributions[b, start : len(prompt)]))
        results.append(
            Attribution(
                method="gradient_x_activation",
                scope="summary",
                steps=None,
                baseline_token_id=None,
                prompt_ids=tuple(prompt[start:]),
                prompt_texts=_texts(tokenizer, prompt[start:]),
                prompt_start=start,
                prompt_total=len(prompt),
                output_ids=tuple(output),
                output_texts=_texts(tokenizer, output),
                output_total=len(output_ids),
                scores=scores,
                convergence_delta=None,
                truncated_prompt=start > 0,
                truncated_output=len(output_ids) > settings.max_output_tokens,
                cut_short=False,
                elapsed_ms=elapsed_ms,
            )
        )
    return results


def batch_limit(model: Any, outputs: int, requested: int) -> int:
    """How many answers of up to ``outputs`` tokens one batched run may take."""
    vocab = int(model.get_input_embeddings().weight.shape[0])
    return max(1, min(requested, MAX_BATCH_LOGITS // max(1, outputs * vocab)))
