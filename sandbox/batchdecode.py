"""Continuous batching for a Hugging Face causal LM: many sequences share each forward pass.

``BatchDecoder`` holds the running batch: one row per sequence, a KV cache whose rows are
left-padded to a common length, and an attention mask (1 for a real token, 0 for padding).

* ``admit`` prefills a new request on its own (batch of one, no padding: the same computation
  as the one-at-a-time loop, so its first token is the same), then joins it to the batch: the
  shorter of the two caches is padded on the left with zero keys and values, masked out.
* ``step`` runs one decoding step for every row at once: each row's last token, the mask grown by
  one column, and ``position_ids`` counted from the mask (the number of real tokens before the
  new one), so a padded row sees the positions it would see alone. Each row then chooses its
  token with its own sampling parameters and RNG (``SequenceDecoder``); rows that finished leave.
* ``drop`` removes a row (a cancelled request). Leading columns that are padding in every
  remaining row are cut off, so a long sequence that left does not keep costing.

Only caches made of plain ``DynamicLayer``s (full attention) can be padded and merged this way;
``supports_batching`` says whether a model qualifies (sliding-window or linear-attention layers
do not), and the worker runs the others one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from gateway.types import GenerateEvent, GenerateRequest
from sandbox.batching import StepOutcome
from sandbox.model import LoadedModel, SequenceDecoder


def supports_batching(loaded: LoadedModel) -> bool:
    """Whether this model's KV cache is plain full attention (rows may be padded and merged)."""
    cache = DynamicCache(config=loaded.model.config)
    return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)


@dataclass
class _Row:
    key: str
    sequence: SequenceDecoder
    token: int  # the last chosen token, the input of the next step


class BatchDecoder:
    """The running batch of one worker (used from one thread); a ``sandbox.batching.BatchEngine``."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros((0, 0), dtype=torch.long, device=loaded.device)

    def __len__(self) -> int:
        return len(self._rows)

    def active(self) -> list[str]:
        return [row.key for row in self._rows]

    def admit(self, key: str, request: GenerateRequest) -> list[GenerateEvent]:
        """Prefill ``request``, join it to the batch unless its first token already finished it,
        and return that token's events. Raises WorkerRequestError (nothing joins) for a request
        the model refuses, e.g. ``context_length_exceeded``."""
        loaded = self.loaded
        sequence = SequenceDecoder(loaded, request)
        cache = DynamicCache(config=loaded.model.config)
        with torch.inference_mode():
            outputs = loaded.model(
                input_ids=torch.tensor([sequence.prompt_ids], dtype=torch.long, device=loaded.device),
                use_cache=True,
                **{loaded.cache_kwarg: cache},
            )
            token = sequence.choose(outputs.logits[0, -1])
        events = sequence.accept(token)
        if not sequence.finished:
            self._join(_Row(key, sequence, token), cache, len(sequence.prompt_ids))
        return events

    def step(self) -> list[StepOutcome]:
        """One token for every row; rows that finish (or fail) leave the batch."""
        if not self._rows:
            return []
        loaded = self.loaded
        ones = torch.ones((len(self._rows), 1), dtype=torch.long, device=loaded.device)
        mask = torch.cat([self._mask, ones], dim=1)
        with torch.inference_mode():
            outputs = loaded.model(
                input_ids=torch.tensor(
                    [[row.token] for row in self._rows], dtype=torch.long, device=loaded.device
                ),
                attention_mask=mask,
                position_ids=mask.sum(dim=1, keepdim=True) - 1,
                use_cache=True,
                **{loaded.cache_kwarg: self._cache},
            )
            logits = outputs.logits[:, -1]
        self._mask = mask
        keep: list[int] = []
        outcomes: list[StepOutcome] = []
        for index, row in enumerate(self._rows):
            try:
                row.token = row.sequence.choose(logits[index])
                events = row.sequence.accept(row.token)
            except Exception as exc:  # this row's failure (e.g. bad probabilities) ends it alone
                outcomes.append(StepOutcome(row.key, [], exc))
                continue
            outcomes.append(StepOutcome(row.key, events))
            if not row.sequence.finished:
                keep.append(index)
        if len(keep) != len(self._rows):
            self._select(keep)
        return outcomes

    def drop(self, key: str) -> None:
        """Remove a row (its request was cancelled); unknown keys are ignored."""
        keep = [i for i, row in enumerate(self._rows) if row.key != key]
        if len(keep) != len(self._rows):
            self._select(keep)

    def clear(self) -> None:
        """Forget every row (after a failed forward pass, whose cache state is unknown)."""
        self._select([])

    # -- cache surgery ----------------------------------------------------------------------------

    def _join(self, row: _Row, cache: DynamicCache, length: int) -> None:
        new_mask = torch.ones((1, length), dtype=torch.long, device=self.loaded.device)
        if self._cache is None or not self._rows:
            self._rows, self._cache, self._mask = [row], cache, new_mask
            return
        width = max(self._mask.shape[1], length)
        for old, new in zip(_layers(self._cache), _layers(cache), strict=True):
            old.keys = torch.cat([_pad_left(_kv(old)[0], width), _pad_left(_kv(new)[0], width)], dim=0)
            old.values = torch.cat([_pad_left(_kv(old)[1], width), _pad_left(_kv(new)[1], width)], dim=0)
        self._mask = torch.cat([_pad_left(self._mask, width), _pad_left(new_mask, width)], dim=0)
        self._rows.append(row)

    def _select(self, keep: list[int]) -> None:
        if not keep:
            self._rows, self._cache = [], None
            self._mask = torch.zeros((0, 0), dtype=torch.long, device=self.loaded.device)
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.loaded.device)
        mask = self._mask.index_select(0, index)
        start = int(mask.any(dim=0).long().argmax())  # leading columns that are padding everywhere
        self._mask = mask[:, start:]
        if self._cache is not None:
            for layer in _layers(self._cache):
                keys, values = _kv(layer)
                at = index.to(keys.device)  # sharded: each layer's cache lives on its layer's GPU
                layer.keys = keys.index_select(0, at)[:, :, start:]
                layer.values = values.index_select(0, at)[:, :, start:]
        self._rows = [self._rows[i] for i in keep]


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    """The cache's layers, all plain DynamicLayers (``supports_batching`` checked the model)."""
    layers = [layer for layer in cache.layers if type(layer) is DynamicLayer]
    if len(layers) != len(cache.layers):
        raise TypeError("only plain DynamicLayer caches can be batched")
    return layers


def _kv(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    if layer.keys is None or layer.values is None:
        raise ValueError("a cache layer was not filled by the prefill")
    return layer.keys, layer.values


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Zero-pad the sequence dimension (-2 for KV tensors [B, H, T, D], -1 for a mask [B, T])."""
    dim = -2 if tensor.dim() == 4 else -1
    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    pad = (0, 0, missing, 0) if dim == -2 else (missing, 0)
    return F.pad(tensor, pad)
