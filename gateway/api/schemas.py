"""OpenAI request bodies, parsed once at the boundary into typed objects.

``parse_chat_request`` and ``parse_completion_request`` take the raw body bytes and either
return a typed request or raise ``InvalidRequest`` naming the offending parameter.
Unknown parameters are refused (as OpenAI does) rather than silently ignored.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from gateway.errors import InvalidRequest
from gateway.types import ChatMessage, GenerateRequest, GenerationParams

Number = StrictFloat | StrictInt


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: StrictStr


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = None
    tool_call_id: StrictStr | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: StrictBool = False


class _GenerationFields(_Strict):
    model: StrictStr = Field(min_length=1, max_length=256)
    max_tokens: StrictInt | None = Field(default=None, ge=1, le=2**31 - 1)
    temperature: Number | None = Field(default=None, ge=0, le=2)
    top_p: Number | None = Field(default=None, gt=0, le=1)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    user: StrictStr | None = Field(default=None, max_length=256)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: StrictInt | None = None

    def stop_sequences(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def params(self, default_max_tokens: int) -> GenerationParams:
        return GenerationParams(
            max_tokens=self.requested_max_tokens or default_max_tokens,
            temperature=1.0 if self.temperature is None else float(self.temperature),
            top_p=1.0 if self.top_p is None else float(self.top_p),
            stop=self.stop_sequences(),
            seed=self.seed,
        )

    def policy_parameters(self) -> dict[str, Any]:
        """Sampling parameters as policy sees them (no text)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop_count": len(self.stop_sequences()),
            "seed": self.seed,
        }

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_GenerationFields):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1, le=2**31 - 1)

    @property
    def message_count(self) -> int:
        return len(self.messages)

    def generate_request(self, request_id: str, params: GenerationParams) -> GenerateRequest:
        messages = tuple(ChatMessage(role=m.role, content=m.text()) for m in self.messages)
        return GenerateRequest(id=request_id, params=params, messages=messages)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens


class CompletionRequest(_GenerationFields):
    prompt: StrictStr | list[StrictStr]
    echo: StrictBool = False

    @property
    def message_count(self) -> int:
        return 0

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def generate_request(self, request_id: str, params: GenerationParams) -> GenerateRequest:
        return GenerateRequest(id=request_id, params=params, prompt=self.prompt_text())


_R = TypeVar("_R", bound=_Strict)


def decode_json_body(body: bytes) -> Any:
    """Strict UTF-8 JSON decoding with errors a client can act on."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid UTF-8 (bad byte at offset {exc.start}).", code="invalid_encoding"
        ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
            code="invalid_json",
        ) from exc
    except RecursionError as exc:
        raise InvalidRequest("The request body is nested too deeply.", code="invalid_json") from exc
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        raise InvalidRequest(
            "The request body holds a number that is too large.", code="invalid_json"
        ) from exc


def _check_surrogates(value: Any) -> None:
    """JSON may spell unpaired UTF-16 surrogates (\\ud800); they are not text: refuse them."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRequest(
                "The request body holds an unpaired UTF-16 surrogate escape; send valid Unicode text.",
                code="invalid_encoding",
            ) from exc
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_surrogates(k)
            _check_surrogates(v)
    elif isinstance(value, list):
        for v in value:
            _check_surrogates(v)


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _parse(model: type[_R], body: bytes) -> _R:
    data = decode_json_body(body)
    if _SURROGATE_ESCAPE.search(body):  # the walk is only needed when the body spells one
        _check_surrogates(data)
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        # Drop pydantic's union-branch labels such as "str" or "list[TextPart]".
        loc = [p for p in loc if not (p[:1].isalpha() and ("[" in p or p in {"str", "int", "float", "bool"}))]
        param = ".".join(loc) or None
        if err["type"] == "extra_forbidden":
            raise InvalidRequest(
                f"Unrecognized request argument supplied: {param}", code="unknown_parameter", param=param
            ) from exc
        if err["type"] == "missing":
            raise InvalidRequest(
                f"Missing required parameter: '{param}'.", code="missing_required_parameter", param=param
            ) from exc
        raise InvalidRequest(
            f"Invalid value for '{param}': {err['msg']}.", code="invalid_value", param=param
        ) from exc


def _check_common(req: _GenerationFields) -> None:
    if req.n is not None and req.n != 1:
        raise InvalidRequest("Only n=1 is supported.", code="unsupported_value", param="n")
    stops = req.stop_sequences()
    if len(stops) > 4 or any(not s for s in stops):
        raise InvalidRequest("'stop' takes up to 4 non-empty strings.", code="invalid_value", param="stop")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest(
            "'stream_options' is only allowed when 'stream' is true.",
            code="invalid_value",
            param="stream_options",
        )


def parse_chat_request(body: bytes, *, max_messages: int) -> ChatCompletionRequest:
    req = _parse(ChatCompletionRequest, body)
    _check_common(req)
    if len(req.messages) > max_messages:
        raise InvalidRequest(
            f"Too many messages: {len(req.messages)} (at most {max_messages}).",
            code="too_many_messages",
            param="messages",
        )
    return req


def parse_completion_request(body: bytes) -> CompletionRequest:
    req = _parse(CompletionRequest, body)
    _check_common(req)
    if isinstance(req.prompt, list) and len(req.prompt) != 1:
        raise InvalidRequest("'prompt' must be a string or a list of exactly one string.", param="prompt")
    if req.echo:
        raise InvalidRequest("'echo' is not supported.", code="unsupported_value", param="echo")
    return req


class CreateKeyRequest(_Strict):
    """``POST /admin/keys``: the same choices as ``llmos keys create``."""

    name: StrictStr
    role: StrictStr
    tenant: StrictStr = "default"
    models: list[StrictStr] | None = None  # null or absent: every model
    endpoints: list[StrictStr] | None = None  # null or absent: every endpoint
    rpm: StrictInt | None = None
    tpm: StrictInt | None = None
    daily_tokens: StrictInt | None = None
    expires_in_days: StrictInt | None = Field(default=None, ge=1, le=36500)


def parse_create_key(body: bytes) -> CreateKeyRequest:
    return _parse(CreateKeyRequest, body)
