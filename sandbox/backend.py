"""What the worker serves requests with: one interface over the kinds of model it can run.

``Backend`` is the seam between the worker's request loop and a model. ``load_backend`` picks the
implementation for a model kind; only ``transformers`` imports torch (lazily, after the model
directory passed its checks), so an ``echo`` worker never loads it. ``batch_engine`` gives the
batched decoder of a backend that has one (``sandbox.batching``); others run one request at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from gateway.types import GenerateEvent, GenerateRequest
from sandbox.echo_model import EchoModel
from sandbox.modeldir import ModelLoadError, check_model_dir

if TYPE_CHECKING:
    from sandbox.batching import BatchEngine
    from sandbox.model import LoadedModel

ModelKind = Literal["transformers", "echo"]
MODEL_KINDS: tuple[ModelKind, ...] = ("transformers", "echo")


class Backend(Protocol):
    """A loaded model as the worker sees it."""

    @property
    def context_length(self) -> int: ...

    def generate(self, request: GenerateRequest, cancelled: Callable[[], bool]) -> Iterator[GenerateEvent]:
        """Stream TokenEvents then one DoneEvent; raise WorkerRequestError before the first token.

        If ``cancelled()`` turns true the iterator simply ends without a DoneEvent.
        """
        ...


@dataclass(frozen=True)
class TransformersBackend:
    """A local Hugging Face causal LM (``sandbox.model``)."""

    loaded: LoadedModel

    @property
    def context_length(self) -> int:
        return self.loaded.context_length

    def generate(self, request: GenerateRequest, cancelled: Callable[[], bool]) -> Iterator[GenerateEvent]:
        from sandbox.model import generate

        return generate(self.loaded, request, cancelled)


def explained_model(model: Backend) -> LoadedModel | None:
    """What attributions run on (``sandbox.explaining``): a transformers model; None for echo."""
    return model.loaded if isinstance(model, TransformersBackend) else None


def batch_engine(model: Backend) -> BatchEngine | None:
    """A batched decoder for ``model``, or None when it can only run one request at a time (the
    echo model, or a transformers model whose KV cache cannot be padded: sliding window, ...)."""
    if not isinstance(model, TransformersBackend):
        return None
    from sandbox.batchdecode import BatchDecoder, supports_batching

    return BatchDecoder(model.loaded) if supports_batching(model.loaded) else None


def load_backend(
    kind: ModelKind,
    model_dir: Path | None,
    *,
    allow_pickle_weights: bool = False,
    max_memory: Mapping[int | str, int] | None = None,
) -> Backend:
    """Load the model of ``kind``; raises ModelLoadError (a WorkerError; UnsafeWeightsError for
    pickle-format files unless ``allow_pickle_weights``)."""
    if kind == "echo":
        return EchoModel()
    if model_dir is None:
        raise ModelLoadError("a transformers model needs a model directory")
    check_model_dir(model_dir, allow_pickle_weights=allow_pickle_weights)  # fail fast, before torch
    from sandbox.model import load_model

    return TransformersBackend(
        load_model(model_dir, allow_pickle_weights=allow_pickle_weights, max_memory=max_memory)
    )
