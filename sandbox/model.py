"""Loading a local Hugging Face causal LM (safetensors only) and streaming generations from it."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jinja2.exceptions import TemplateError
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.utils import logging as hf_logging

from gateway.errors import WorkerRequestError
from gateway.jsonsafe import JsonRejected, loads_strict
from gateway.types import (
    ChatMessage,
    DoneEvent,
    FinishReason,
    GenerateEvent,
    GenerateRequest,
    TokenEvent,
    ToolSpec,
)
from sandbox.devicemap import assigned_gpus, load_options
from sandbox.modeldir import ModelLoadError, check_model_dir
from sandbox.sampling import make_generator, sample_next_token
from sandbox.textstream import StopTextStream

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # a transformers PreTrainedModel in eval mode
    tokenizer: Any  # a transformers tokenizer
    context_length: int
    eos_token_ids: frozenset[int]
    cache_kwarg: str  # "cache" (transformers >= 5.2x) or the older "past_key_values"
    device: torch.device = field(
        default_factory=lambda: torch.device("cpu")
    )  # where inputs go: the input embeddings' device


def _visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def load_model(
    model_dir: Path,
    *,
    allow_pickle_weights: bool = False,
    max_memory: Mapping[int | str, int] | None = None,
) -> LoadedModel:
    """Load tokenizer and model from a local directory; raises ModelLoadError.

    The model goes on the GPU(s) the gateway gave the worker (``CUDA_VISIBLE_DEVICES``), sharded
    by layer with ``max_memory`` over several (``sandbox.devicemap``), else on the CPU.

    safetensors only (``use_safetensors=True``: transformers never falls back to ``torch.load``),
    unless ``allow_pickle_weights`` (the model's ``unsafe_allow_pickle_weights``) lets it prefer
    safetensors and fall back to pickle-format weights.
    """
    path = check_model_dir(model_dir, allow_pickle_weights=allow_pickle_weights)
    hf_logging.disable_progress_bar()
    assigned = assigned_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"))
    placement = load_options(assigned, _visible_gpus() if assigned else 0, max_memory)
    if placement.get("device_map") == "auto":  # sharded: whole layers per GPU, nothing off them
        from sandbox.sharding import shard_map

        placement = {"device_map": shard_map(path, placement["max_memory"])}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            path,
            use_safetensors=None if allow_pickle_weights else True,
            trust_remote_code=False,
            local_files_only=True,
            **placement,
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ModelLoadError(f"could not load the model in {path}: {type(exc).__name__}: {exc}") from exc
    model.eval()
    context_length = next(
        (v for k in _CONTEXT_KEYS if isinstance(v := getattr(model.config, k, None), int) and v > 0), None
    )
    if context_length is None:
        raise ModelLoadError(
            f"the config in {path} does not say the context length (max_position_embeddings)"
        )
    eos: set[int] = set()
    for source in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(source, int):
            eos.add(source)
        elif isinstance(source, list):
            eos.update(i for i in source if isinstance(i, int))
    params = inspect.signature(model.forward).parameters
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        context_length=context_length,
        eos_token_ids=frozenset(eos),
        cache_kwarg="cache" if "cache" in params else "past_key_values",
        device=next(model.get_input_embeddings().parameters()).device,
    )


def _as_id_list(encoded: Any) -> list[int]:
    """apply_chat_template returns a list in transformers 5, a tensor or BatchEncoding on request."""
    if hasattr(encoded, "keys") and "input_ids" in encoded:
        encoded = encoded["input_ids"]
    if isinstance(encoded, torch.Tensor):
        encoded = encoded.tolist()
    if encoded and isinstance(encoded[0], list):
        encoded = encoded[0]
    return [int(i) for i in encoded]


def _json_or_text(text: str) -> Any:
    """Tool-call arguments as chat templates expect them: the decoded JSON value when the text is
    strict JSON (templates serialise it with ``tojson``), else the text itself."""
    try:
        return loads_strict(text)
    except JsonRejected:
        return text


def chat_message(m: ChatMessage) -> dict[str, Any]:
    """A message in the Hugging Face chat format (keys without a value are left out)."""
    message: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": _json_or_text(c.arguments)},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        message["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        message["name"] = m.name
    return message


def chat_tool(t: ToolSpec) -> dict[str, Any]:
    """A tool in the JSON Schema form ``apply_chat_template(tools=...)`` takes."""
    function: dict[str, Any] = {"name": t.name}
    if t.description is not None:
        function["description"] = t.description
    if t.parameters is not None:
        function["parameters"] = loads_strict(t.parameters)  # checked by the protocol
    return {"type": "function", "function": function}


def chat_template_kwargs(request: GenerateRequest) -> dict[str, Any]:
    """``tools`` and, when the client set them, ``tool_choice`` (in OpenAI's shape) and
    ``parallel_tool_calls`` as template variables; templates that do not use them ignore them."""
    kwargs: dict[str, Any] = {}
    if request.tools:
        kwargs["tools"] = [chat_tool(t) for t in request.tools]
    choice = request.tool_choice
    if choice is not None:
        kwargs["tool_choice"] = (
            {"type": "function", "function": {"name": choice.function}}
            if choice.mode == "function"
            else choice.mode
        )
    if request.parallel_tool_calls is not None:
        kwargs["parallel_tool_calls"] = request.parallel_tool_calls
    return kwargs


def encode_prompt(loaded: LoadedModel, request: GenerateRequest) -> list[int]:
    tokenizer = loaded.tokenizer
    if request.messages is not None:
        if not getattr(tokenizer, "chat_template", None):
            raise WorkerRequestError(
                "this model has no chat template; send a raw prompt (completions) instead",
                code="invalid_request",
            )
        messages = [chat_message(m) for m in request.messages]
        try:
            encoded = tokenizer.apply_chat_template(
                messages,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
                **chat_template_kwargs(request),
            )
        except TemplateError as exc:  # the template refused the conversation (raise_exception)
            raise WorkerRequestError(
                f"this model's chat template refused the conversation: {exc}", code="invalid_request"
            ) from exc
        ids = _as_id_list(encoded)
    else:
        ids = _as_id_list(tokenizer(request.prompt or "", add_special_tokens=True)["input_ids"])
    if not ids and tokenizer.bos_token_id is not None:
        ids = [int(tokenizer.bos_token_id)]
    if not ids:
        raise WorkerRequestError("the prompt is empty", code="invalid_request")
    return ids


def check_context(loaded: LoadedModel, prompt_tokens: int, max_tokens: int) -> None:
    if prompt_tokens + max_tokens > loaded.context_length:
        raise WorkerRequestError(
            f"this model's maximum context length is {loaded.context_length} tokens; the request has "
            f"{prompt_tokens} prompt tokens and asks for up to {max_tokens} completion tokens. "
            "Shorten the prompt or lower max_tokens.",
            code="context_length_exceeded",
        )


def _decode(loaded: LoadedModel, ids: Sequence[int]) -> str:
    return str(loaded.tokenizer.decode(list(ids), skip_special_tokens=True))


class SequenceDecoder:
    """One request's decoding state, apart from the model's forward pass: its prompt, its RNG,
    the tokens chosen so far and the text already streamed. Both the one-at-a-time loop below and
    the batched loop (``sandbox.batchdecode``) feed it one set of logits per step.

    Raises WorkerRequestError (an unusable prompt, ``context_length_exceeded``) when built.
    """

    def __init__(self, loaded: LoadedModel, request: GenerateRequest) -> None:
        self.loaded = loaded
        self.params = request.params
        self.prompt_ids = encode_prompt(loaded, request)
        check_context(loaded, len(self.prompt_ids), self.params.max_tokens)
        self.generator = make_generator(self.params.seed)
        self.stream = StopTextStream(self.params.stop)
        self.out_ids: list[int] = []
        self.finished = False

    def choose(self, logits: torch.Tensor) -> int:
        """The next token from this sequence's 1-D logits, with its own sampling parameters."""
        return sample_next_token(logits, self.params.temperature, self.params.top_p, self.generator)

    def accept(self, token: int) -> list[GenerateEvent]:
        """Take the chosen token; the events it releases (ending with a DoneEvent when finished)."""
        loaded, out_ids = self.loaded, self.out_ids
        out_ids.append(token)
        if token in loaded.eos_token_ids:
            return self._end(self.stream.finish(_decode(loaded, out_ids[:-1])), "stop")
        text = _decode(loaded, out_ids)
        if len(out_ids) >= self.params.max_tokens:
            piece = self.stream.finish(text)
            return self._end(piece, "stop" if self.stream.stopped else "length")
        piece = self.stream.push(text)
        if self.stream.stopped:
            return self._end(piece, "stop")
        return [TokenEvent(piece)] if piece else []

    def _end(self, piece: str, reason: FinishReason) -> list[GenerateEvent]:
        self.finished = True
        done = DoneEvent(
            finish_reason=reason,
            prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.out_ids),
            prompt_ids=tuple(self.prompt_ids),
            output_ids=tuple(self.out_ids),
        )
        return [TokenEvent(piece), done] if piece else [done]


def generate(
    loaded: LoadedModel, request: GenerateRequest, cancelled: Callable[[], bool]
) -> Iterator[GenerateEvent]:
    """Stream TokenEvents then one DoneEvent; raises WorkerRequestError before the first token.

    If ``cancelled()`` turns true the iterator simply ends without a DoneEvent.
    """
    sequence = SequenceDecoder(loaded, request)
    cache = DynamicCache(config=loaded.model.config)
    step_input = torch.tensor([sequence.prompt_ids], dtype=torch.long, device=loaded.device)
    while True:
        if cancelled():
            return
        with torch.inference_mode():
            outputs = loaded.model(input_ids=step_input, use_cache=True, **{loaded.cache_kwarg: cache})
            token = sequence.choose(outputs.logits[0, -1])
        yield from sequence.accept(token)
        if sequence.finished:
            return
        step_input = torch.tensor([[token]], dtype=torch.long, device=loaded.device)
