"""OpenAI request bodies, parsed once at the boundary into typed objects.

``parse_chat_request`` and ``parse_completion_request`` take the raw body bytes and either
return a typed request or raise ``InvalidRequest`` naming the offending parameter.
Unknown parameters are refused (as OpenAI does) rather than silently ignored.

Chat requests may use OpenAI tool calling: assistant messages with ``tool_calls``, ``tool``
messages with ``tool_call_id``, and the request's ``tools``, ``tool_choice`` and
``parallel_tool_calls``, which go to the worker's chat template. Message content is a string or
an array of ``text`` parts (joined); other part types (images, audio, files) are refused as
not supported. Responses carry ``tool_calls`` only from upstream models (docs/upstreams.md);
the gateway's own models answer with text.
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
    field_validator,
)
from pydantic_core import PydanticCustomError

from gateway import toolargs
from gateway.errors import InvalidRequest
from gateway.jsonsafe import MAX_DEPTH, deeper_than
from gateway.types import (
    ChatMessage,
    GenerateRequest,
    GenerationParams,
    ToolCall,
    ToolChoice,
    ToolSpec,
)

Number = StrictFloat | StrictInt

# Function and participant names, as OpenAI restricts them.
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
# Tool-call ids: OpenAI's "call_...", and the dotted or colon forms other servers generate.
TOOL_CALL_ID_PATTERN = r"^[a-zA-Z0-9_.:-]{1,128}$"
MAX_TOOLS = 128  # OpenAI's limit on functions per request
MAX_TOOL_CALLS = 128  # tool calls in one assistant message
# OpenAI content part types that this gateway (text-only models) does not take.
_UNSUPPORTED_PARTS = frozenset({"image_url", "input_audio", "file", "refusal"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: StrictStr

    @field_validator("type", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, str) and value in _UNSUPPORTED_PARTS:
            raise PydanticCustomError(
                "unsupported_value",
                "Content parts of type '{part}' are not supported: only text is accepted "
                "(a string, or parts of type 'text').",
                {"part": value},
            )
        return value


class FunctionCall(_Strict):
    name: StrictStr = Field(pattern=NAME_PATTERN)
    arguments: StrictStr  # JSON text, as the model wrote it (not necessarily valid JSON)


class ToolCallParam(_Strict):
    id: StrictStr = Field(pattern=TOOL_CALL_ID_PATTERN)
    type: Literal["function"]
    function: FunctionCall


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart] | None = None
    name: StrictStr | None = Field(default=None, pattern=NAME_PATTERN)
    tool_call_id: StrictStr | None = Field(default=None, pattern=TOOL_CALL_ID_PATTERN)
    tool_calls: list[ToolCallParam] | None = Field(default=None, max_length=MAX_TOOL_CALLS)

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)

    def chat_message(self) -> ChatMessage:
        calls = tuple(
            ToolCall(id=c.id, name=c.function.name, arguments=toolargs.canonical(c.function.arguments))
            for c in self.tool_calls or ()
        )
        return ChatMessage(
            role=self.role,
            content=self.text(),
            tool_calls=calls,
            tool_call_id=self.tool_call_id,
            name=self.name,
        )


class FunctionDefinition(_Strict):
    name: StrictStr = Field(pattern=NAME_PATTERN)
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema object
    strict: StrictBool | None = None

    @field_validator("parameters")
    @classmethod
    def _json_numbers(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        try:
            json.dumps(value, allow_nan=False)
        except ValueError as exc:  # Python's decoder reads NaN, Infinity and 1e400; JSON has none
            raise PydanticCustomError("json_number", "it holds NaN or Infinity, which are not JSON") from exc
        return value


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition

    def spec(self) -> ToolSpec:
        f = self.function
        parameters = None if f.parameters is None else json.dumps(f.parameters, ensure_ascii=False)
        return ToolSpec(name=f.name, description=f.description, parameters=parameters, strict=f.strict)


class FunctionName(_Strict):
    name: StrictStr = Field(pattern=NAME_PATTERN)


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: FunctionName


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
    tools: list[Tool] | None = Field(default=None, min_length=1, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None

    @property
    def message_count(self) -> int:
        return len(self.messages)

    def generate_request(self, request_id: str, params: GenerationParams) -> GenerateRequest:
        choice = self.tool_choice
        return GenerateRequest(
            id=request_id,
            params=params,
            messages=tuple(m.chat_message() for m in self.messages),
            tools=tuple(t.spec() for t in self.tools or ()),
            tool_choice=(
                None
                if choice is None
                else ToolChoice(choice)
                if isinstance(choice, str)
                else ToolChoice("function", choice.function.name)
            ),
            parallel_tool_calls=self.parallel_tool_calls,
            stream=self.stream,
        )

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
        return GenerateRequest(id=request_id, params=params, prompt=self.prompt_text(), stream=self.stream)


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
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).",
            code="invalid_json",
        ) from exc
    except RecursionError as exc:
        raise _too_deep() from exc
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        raise InvalidRequest(
            "The request body holds a number that is too large.", code="invalid_json"
        ) from exc
    # Only a body with more brackets than the limit can nest past it: skip the walk otherwise.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and deeper_than(value, MAX_DEPTH):
        raise _too_deep()
    return value


def _too_deep() -> InvalidRequest:
    return InvalidRequest(
        f"The request body is nested too deeply: at most {MAX_DEPTH} levels of arrays and objects.",
        code="invalid_json",
    )


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
        err, param = _first_error(data, exc)
        if err["type"] == "extra_forbidden":
            raise InvalidRequest(
                f"Unrecognized request argument supplied: {param}", code="unknown_parameter", param=param
            ) from exc
        if err["type"] == "missing":
            raise InvalidRequest(
                f"Missing required parameter: '{param}'.", code="missing_required_parameter", param=param
            ) from exc
        if err["type"] == "unsupported_value":
            raise InvalidRequest(err["msg"], code="unsupported_value", param=param) from exc
        raise InvalidRequest(
            f"Invalid value for '{param}': {err['msg']}.", code="invalid_value", param=param
        ) from exc


def _param(data: Any, loc: tuple[int | str, ...], keep_last: bool) -> list[str]:
    """The parameter path of an error location, as the client wrote it: pydantic's union-branch
    labels ("str", "list[TextPart]", "NamedToolChoice") are not keys or indexes of the body, so
    they drop out. ``keep_last``: the last part names what is missing, so it is not in the body."""
    path: list[str] = []
    node = data
    for i, part in enumerate(loc):
        in_dict = isinstance(node, dict) and isinstance(part, str) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
        elif not (keep_last and i == len(loc) - 1):
            continue
        path.append(str(part))
    return path


def _first_error(data: Any, exc: ValidationError) -> tuple[Any, str | None]:
    """The error to report, with its parameter path: an ``unsupported_value`` if there is one,
    else the most specific error of the first failing parameter (a value that fails every
    branch of a union gets one error per branch; the deepest says most)."""
    errors = exc.errors()
    paths = [_param(data, e["loc"], e["type"] == "missing") for e in errors]
    chosen = next((i for i, e in enumerate(errors) if e["type"] == "unsupported_value"), None)
    if chosen is None:
        top = paths[0][:1]
        chosen = max((i for i, p in enumerate(paths) if p[:1] == top), key=lambda i: len(paths[i]))
    return errors[chosen], ".".join(paths[chosen]) or None


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


def _check_tool_messages(messages: list[Message]) -> None:
    for i, m in enumerate(messages):
        if m.tool_calls is not None and m.role != "assistant":
            raise InvalidRequest(
                f"Only assistant messages may carry 'tool_calls'; this one has role '{m.role}'.",
                code="invalid_value",
                param=f"messages.{i}.tool_calls",
            )
        if m.role == "tool" and m.tool_call_id is None:
            raise InvalidRequest(
                "Missing required parameter: a tool message needs 'tool_call_id'.",
                code="missing_required_parameter",
                param=f"messages.{i}.tool_call_id",
            )
        if m.role != "tool" and m.tool_call_id is not None:
            raise InvalidRequest(
                f"Only tool messages carry 'tool_call_id'; this one has role '{m.role}'.",
                code="invalid_value",
                param=f"messages.{i}.tool_call_id",
            )
        seen: set[str] = set()
        for j, call in enumerate(m.tool_calls or ()):
            if call.id in seen:
                raise InvalidRequest(
                    "Duplicate tool call id in one message.",
                    code="invalid_value",
                    param=f"messages.{i}.tool_calls.{j}.id",
                )
            seen.add(call.id)


def _check_tools(req: ChatCompletionRequest) -> None:
    if req.tools is None:
        for name in ("tool_choice", "parallel_tool_calls"):
            if getattr(req, name) is not None:
                raise InvalidRequest(
                    f"'{name}' is only allowed when 'tools' are specified.", code="invalid_value", param=name
                )
        return
    names: set[str] = set()
    for j, tool in enumerate(req.tools):
        if tool.function.name in names:
            raise InvalidRequest(
                f"Duplicate function name '{tool.function.name}' in 'tools'.",
                code="invalid_value",
                param=f"tools.{j}.function.name",
            )
        names.add(tool.function.name)
    choice = req.tool_choice
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise InvalidRequest(
            f"'tool_choice' names function '{choice.function.name}', which is not among 'tools'.",
            code="invalid_value",
            param="tool_choice.function.name",
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
    _check_tool_messages(req.messages)
    _check_tools(req)
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
