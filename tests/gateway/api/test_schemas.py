from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.schemas import (
    MAX_TOOL_CALLS,
    MAX_TOOLS,
    ChatCompletionRequest,
    CompletionRequest,
    parse_chat_request,
    parse_completion_request,
)
from gateway.errors import InvalidRequest
from gateway.jsonsafe import MAX_DEPTH
from gateway.types import ChatMessage, GenerationParams, ToolCall, ToolChoice, ToolSpec

MSGS = [{"role": "user", "content": "hi"}]
MAX_MESSAGES = 4


def chat(**fields: Any) -> bytes:
    return json.dumps({"model": "demo", "messages": MSGS, **fields}).encode()


def completion(**fields: Any) -> bytes:
    return json.dumps({"model": "demo", "prompt": "Once upon", **fields}).encode()


def _chat_error(body: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(body, max_messages=MAX_MESSAGES)
    return info.value


def _completion_error(body: bytes) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        parse_completion_request(body)
    return info.value


# --- body decoding (both endpoints) ------------------------------------------------------------

BODY_ERRORS = [
    (b"", "invalid_json", "empty"),
    (b" \n\t ", "invalid_json", "empty"),
    (b'{"model": "m\xff"}', "invalid_encoding", "offset 12"),
    (b"\xef\xbb\xbf{}", "invalid_json", "BOM"),
    (b"{", "invalid_json", "line 1, column 2"),
    (b'{"model": "demo",\n "messages": [}', "invalid_json", "line 2"),
    (b"[]", "invalid_json", "must be a JSON object"),
    (b'[{"model": "demo"}]', "invalid_json", "must be a JSON object"),
    (b"null", "invalid_json", "must be a JSON object"),
    (b'"text"', "invalid_json", "must be a JSON object"),
    (b"42", "invalid_json", "must be a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, "invalid_json", "nested too deeply"),
]


@pytest.mark.parametrize(("body", "code", "text"), BODY_ERRORS, ids=[t for _, _, t in BODY_ERRORS])
@pytest.mark.parametrize("endpoint", ["chat", "completion"])
def test_undecodable_bodies(body: bytes, code: str, text: str, endpoint: str) -> None:
    err = _chat_error(body) if endpoint == "chat" else _completion_error(body)

    assert (err.code, err.param, err.status, err.type) == (code, None, 400, "invalid_request_error")
    assert text in err.message


# --- chat: (body, code, param) -----------------------------------------------------------------

CHAT_ERRORS = [
    ("missing model", json.dumps({"messages": MSGS}).encode(), "missing_required_parameter", "model"),
    ("missing messages", json.dumps({"model": "demo"}).encode(), "missing_required_parameter", "messages"),
    ("model int", json.dumps({"model": 1, "messages": MSGS}).encode(), "invalid_value", "model"),
    ("model empty", json.dumps({"model": "", "messages": MSGS}).encode(), "invalid_value", "model"),
    ("model null", json.dumps({"model": None, "messages": MSGS}).encode(), "invalid_value", "model"),
    (
        "messages string",
        json.dumps({"model": "demo", "messages": "hi"}).encode(),
        "invalid_value",
        "messages",
    ),
    ("messages empty", json.dumps({"model": "demo", "messages": []}).encode(), "invalid_value", "messages"),
    ("temperature str", chat(temperature="1"), "invalid_value", "temperature"),
    ("temperature 3", chat(temperature=3), "invalid_value", "temperature"),
    ("temperature -0.1", chat(temperature=-0.1), "invalid_value", "temperature"),
    ("max_tokens 1.5", chat(max_tokens=1.5), "invalid_value", "max_tokens"),
    ("max_tokens 0", chat(max_tokens=0), "invalid_value", "max_tokens"),
    ("max_tokens str", chat(max_tokens="10"), "invalid_value", "max_tokens"),
    ("max_tokens bool", chat(max_tokens=True), "invalid_value", "max_tokens"),
    ("max_completion_tokens 0", chat(max_completion_tokens=0), "invalid_value", "max_completion_tokens"),
    ("stream yes", chat(stream="yes"), "invalid_value", "stream"),
    ("stream 1", chat(stream=1), "invalid_value", "stream"),
    ("top_p 0", chat(top_p=0), "invalid_value", "top_p"),
    ("top_p 1.5", chat(top_p=1.5), "invalid_value", "top_p"),
    ("seed float", chat(seed=1.0), "invalid_value", "seed"),
    ("user too long", chat(user="u" * 257), "invalid_value", "user"),
    ("unknown parameter", chat(functions=[]), "unknown_parameter", "functions"),
    (
        "unknown message field",
        chat(messages=[{"role": "user", "content": "x", "foo": 1}]),
        "unknown_parameter",
        "messages.0.foo",
    ),
    (
        "unknown stream option",
        chat(stream=True, stream_options={"x": True}),
        "unknown_parameter",
        "stream_options.x",
    ),
    ("n=2", chat(n=2), "unsupported_value", "n"),
    ("n=0", chat(n=0), "unsupported_value", "n"),
    ("5 stop strings", chat(stop=["a", "b", "c", "d", "e"]), "invalid_value", "stop"),
    ("empty stop string", chat(stop=""), "invalid_value", "stop"),
    ("empty stop in list", chat(stop=["a", ""]), "invalid_value", "stop"),
    ("stop int", chat(stop=5), "invalid_value", "stop"),
    ("too many messages", chat(messages=MSGS * (MAX_MESSAGES + 1)), "too_many_messages", "messages"),
    (
        "stream_options without stream",
        chat(stream_options={"include_usage": True}),
        "invalid_value",
        "stream_options",
    ),
    (
        "stream_options with stream false",
        chat(stream=False, stream_options={}),
        "invalid_value",
        "stream_options",
    ),
    ("bad role", chat(messages=[{"role": "robot", "content": "x"}]), "invalid_value", "messages.0.role"),
    ("missing role", chat(messages=[{"content": "x"}]), "missing_required_parameter", "messages.0.role"),
    (
        "image content part",
        chat(
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]
        ),
        "unsupported_value",
        "messages.0.content.0.type",
    ),
    (
        "text and image parts",
        chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]),
        "unsupported_value",
        "messages.0.content.1.type",
    ),
    (
        "unknown content part type",
        chat(messages=[{"role": "user", "content": [{"type": "video", "text": "a"}]}]),
        "invalid_value",
        "messages.0.content.0.type",
    ),
    (
        "text part without text",
        chat(messages=[{"role": "user", "content": [{"type": "text"}]}]),
        "missing_required_parameter",
        "messages.0.content.0.text",
    ),
    (
        "text part with an extra field",
        chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a", "cache": 1}]}]),
        "unknown_parameter",
        "messages.0.content.0.cache",
    ),
    ("content int", chat(messages=[{"role": "user", "content": 5}]), "invalid_value", "messages.0.content"),
    ("lone surrogate", chat(model="\ud800"), "invalid_encoding", None),
]


@pytest.mark.parametrize(
    ("body", "code", "param"), [c[1:] for c in CHAT_ERRORS], ids=[c[0] for c in CHAT_ERRORS]
)
def test_chat_request_errors(body: bytes, code: str, param: str) -> None:
    err = _chat_error(body)

    assert (err.code, err.param) == (code, param)
    assert err.status == 400
    assert "hi" not in err.message  # never echoes message text


def test_unknown_parameter_message_names_it() -> None:
    assert _chat_error(chat(logit_bias={})).message == "Unrecognized request argument supplied: logit_bias"


def test_too_many_messages_counts() -> None:
    err = _chat_error(chat(messages=MSGS * 5))

    assert err.message == "Too many messages: 5 (at most 4)."


def test_exactly_max_messages_is_accepted() -> None:
    assert (
        len(parse_chat_request(chat(messages=MSGS * MAX_MESSAGES), max_messages=MAX_MESSAGES).messages) == 4
    )


# --- chat: valid requests -----------------------------------------------------------------------


def test_chat_defaults() -> None:
    req = parse_chat_request(chat(), max_messages=MAX_MESSAGES)

    assert isinstance(req, ChatCompletionRequest)
    assert req.model == "demo"
    assert req.generate_request("r", req.params(16)).messages == (ChatMessage(role="user", content="hi"),)
    assert req.stream is False
    assert req.include_usage is False
    assert req.requested_max_tokens is None
    assert req.params(256) == GenerationParams(max_tokens=256, temperature=1.0, top_p=1.0, stop=(), seed=None)


def test_chat_all_parameters() -> None:
    req = parse_chat_request(
        chat(
            max_tokens=32,
            temperature=0,
            top_p=0.5,
            stop=["\n", "END"],
            seed=7,
            user="u1",
            stream=True,
            stream_options={"include_usage": True},
            n=1,
        ),
        max_messages=MAX_MESSAGES,
    )

    assert req.include_usage is True
    assert req.params(256) == GenerationParams(
        max_tokens=32, temperature=0.0, top_p=0.5, stop=("\n", "END"), seed=7
    )
    assert isinstance(req.params(256).temperature, float)


def test_single_stop_string() -> None:
    assert parse_chat_request(chat(stop="###"), max_messages=4).params(1).stop == ("###",)


def test_four_stop_strings_are_accepted() -> None:
    assert len(parse_chat_request(chat(stop=list("abcd")), max_messages=4).params(1).stop) == 4


def test_content_parts_are_joined() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]},
        {"role": "assistant", "content": None},
        {"role": "developer", "content": []},
        {"role": "tool", "content": "42", "tool_call_id": "call_1", "name": "calc"},
    ]

    req = parse_chat_request(chat(messages=messages), max_messages=8)

    assert req.generate_request("r", req.params(16)).messages == (
        ChatMessage("system", "be brief"),
        ChatMessage("user", "Hello, world"),
        ChatMessage("assistant", ""),
        ChatMessage("developer", ""),
        ChatMessage("tool", "42", tool_call_id="call_1", name="calc"),
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_completion_tokens": 50}, 50),
        ({"max_tokens": 20, "max_completion_tokens": 50}, 20),
        ({"max_tokens": 20}, 20),
        ({"max_tokens": None, "max_completion_tokens": 9}, 9),
        ({}, None),
    ],
)
def test_max_completion_tokens_used_when_max_tokens_absent(
    fields: dict[str, Any], expected: int | None
) -> None:
    req = parse_chat_request(chat(**fields), max_messages=4)

    assert req.requested_max_tokens == expected
    assert req.params(256).max_tokens == (expected or 256)


def test_nulls_mean_defaults() -> None:
    req = parse_chat_request(
        chat(temperature=None, top_p=None, stop=None, seed=None, n=None, max_tokens=None), max_messages=4
    )

    assert req.params(100) == GenerationParams(max_tokens=100)


# --- completions --------------------------------------------------------------------------------

COMPLETION_ERRORS = [
    ("missing prompt", json.dumps({"model": "demo"}).encode(), "missing_required_parameter", "prompt"),
    ("missing model", json.dumps({"prompt": "x"}).encode(), "missing_required_parameter", "model"),
    ("prompt list of 2", completion(prompt=["a", "b"]), "invalid_request", "prompt"),
    ("prompt empty list", completion(prompt=[]), "invalid_request", "prompt"),
    ("prompt tokens", completion(prompt=[1, 2, 3]), "invalid_value", "prompt.0"),
    ("prompt int", completion(prompt=5), "invalid_value", "prompt"),
    ("echo", completion(echo=True), "unsupported_value", "echo"),
    ("echo str", completion(echo="true"), "invalid_value", "echo"),
    ("messages", completion(messages=MSGS), "unknown_parameter", "messages"),
    (
        "max_completion_tokens",
        completion(max_completion_tokens=5),
        "unknown_parameter",
        "max_completion_tokens",
    ),
    ("n=3", completion(n=3), "unsupported_value", "n"),
    ("stop 5", completion(stop=list("abcde")), "invalid_value", "stop"),
    ("stream_options without stream", completion(stream_options={}), "invalid_value", "stream_options"),
    ("temperature 2.5", completion(temperature=2.5), "invalid_value", "temperature"),
    ("best_of", completion(best_of=2), "unknown_parameter", "best_of"),
]


@pytest.mark.parametrize(
    ("body", "code", "param"), [c[1:] for c in COMPLETION_ERRORS], ids=[c[0] for c in COMPLETION_ERRORS]
)
def test_completion_request_errors(body: bytes, code: str, param: str) -> None:
    err = _completion_error(body)

    assert (err.code, err.param) == (code, param)


@pytest.mark.parametrize(("prompt", "text"), [("Once", "Once"), (["only one"], "only one"), ("", "")])
def test_completion_prompt(prompt: Any, text: str) -> None:
    req = parse_completion_request(completion(prompt=prompt))

    assert isinstance(req, CompletionRequest)
    assert req.prompt_text() == text


def test_completion_defaults_and_parameters() -> None:
    req = parse_completion_request(
        completion(echo=False, max_tokens=5, stream=True, stream_options={"include_usage": False})
    )

    assert req.params(256) == GenerationParams(max_tokens=5)
    assert req.stream is True
    assert req.include_usage is False


# --- properties ---------------------------------------------------------------------------------

FIELDS = [
    "model",
    "messages",
    "prompt",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "tool_calls",
    "tool_call_id",
    "function",
    "name",
    "arguments",
    "parameters",
    "id",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "user",
    "stream",
    "stream_options",
    "n",
    "echo",
    "role",
    "content",
    "text",
    "type",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
request_like = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8)
PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def _only_invalid_request(body: bytes) -> None:
    for parse in (lambda b: parse_chat_request(b, max_messages=3), parse_completion_request):
        try:
            req = parse(body)
        except InvalidRequest as exc:
            assert exc.status == 400
            assert exc.code
            assert isinstance(exc.message, str)
        else:  # what parses also converts
            req.generate_request("r", req.params(16))


@PROPERTY_SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_invalid_request(body: bytes) -> None:
    _only_invalid_request(body)


@PROPERTY_SETTINGS
@given(json_values)
def test_arbitrary_json_raises_only_invalid_request(value: Any) -> None:
    _only_invalid_request(json.dumps(value).encode())


@PROPERTY_SETTINGS
@given(request_like)
def test_request_shaped_json_raises_only_invalid_request(value: dict[str, Any]) -> None:
    _only_invalid_request(json.dumps(value).encode())


@PROPERTY_SETTINGS
@given(
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(max_size=20)}
        ),
        min_size=1,
        max_size=3,
    ),
    st.one_of(st.none(), st.integers(min_value=1, max_value=10_000)),
)
def test_valid_chat_round_trips_text(messages: list[dict[str, str]], max_tokens: int | None) -> None:
    body = json.dumps({"model": "demo", "messages": messages, "max_tokens": max_tokens}).encode()

    req = parse_chat_request(body, max_messages=3)

    assert [(m.role, m.content) for m in req.generate_request("r", req.params(16)).messages] == [
        (m["role"], m["content"]) for m in messages
    ]
    assert req.params(7).max_tokens == (max_tokens or 7)


@PROPERTY_SETTINGS
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, min_size=1, max_size=3), st.booleans())
def test_valid_requests_with_arbitrary_fields_raise_only_invalid_request(
    overrides: dict[str, Any], is_chat: bool
) -> None:
    base: dict[str, Any] = (
        {"model": "demo", "messages": MSGS} if is_chat else {"model": "demo", "prompt": "x"}
    )

    _only_invalid_request(json.dumps({**base, **overrides}).encode())


def test_an_integer_beyond_the_digit_limit_is_invalid_json() -> None:
    body = b'{"model": "demo", "messages": [{"role": "user", "content": "x"}], "seed": ' + b"9" * 5000 + b"}"
    with pytest.raises(InvalidRequest) as err:
        parse_chat_request(body, max_messages=8)
    assert err.value.code == "invalid_json"


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "a\\ud83d", "\\ude00b"])
def test_unpaired_surrogates_are_refused(escape: str) -> None:
    body = ('{"model": "demo", "messages": [{"role": "user", "content": "' + escape + '"}]}').encode()
    with pytest.raises(InvalidRequest) as err:
        parse_chat_request(body, max_messages=8)
    assert err.value.code == "invalid_encoding"


def test_escaped_surrogate_pairs_are_text() -> None:
    body = b'{"model": "demo", "messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}]}'
    req = parse_chat_request(body, max_messages=8)
    assert req.messages[0].text() == "smile \U0001f600"


# --- tool calling -------------------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "send_mail",
            "description": "Send an e-mail",
            "parameters": {"type": "object", "properties": {"to": {"type": "string"}}},
            "strict": True,
        },
    },
    {"type": "function", "function": {"name": "get-time"}},
]


def call(args: str = '{"to": "a"}', call_id: str = "call_1", name: str = "send_mail") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def assistant(*calls: dict[str, Any], content: Any = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


def tool_result(content: str = "sent", call_id: str = "call_1") -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def tools_chat(**fields: Any) -> bytes:
    return chat(messages=[*MSGS, assistant(call()), tool_result()], tools=TOOLS, **fields)


def test_a_tool_conversation_becomes_a_generate_request() -> None:
    body = chat(
        messages=[
            *MSGS,
            assistant(call('{"to": "jane@example.com"}'), call("{}", "call_2", "get-time")),
            tool_result("sent", "call_1"),
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
        ],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get-time"}},
        parallel_tool_calls=False,
    )

    req = parse_chat_request(body, max_messages=MAX_MESSAGES)
    gen = req.generate_request("r", req.params(16))

    assert gen.messages == (
        ChatMessage("user", "hi"),
        ChatMessage(
            "assistant",
            "",
            tool_calls=(
                ToolCall("call_1", "send_mail", '{"to": "jane@example.com"}'),
                ToolCall("call_2", "get-time", "{}"),
            ),
        ),
        ChatMessage("tool", "sent", tool_call_id="call_1"),
        ChatMessage("tool", "noon", tool_call_id="call_2"),
    )
    assert gen.tools == (
        ToolSpec(
            "send_mail",
            "Send an e-mail",
            '{"type": "object", "properties": {"to": {"type": "string"}}}',
            strict=True,
        ),
        ToolSpec("get-time"),
    )
    assert gen.tool_choice == ToolChoice("function", "get-time")
    assert gen.parallel_tool_calls is False
    assert gen.texts() == ["hi", "", '{"to": "jane@example.com"}', "{}", "sent", "noon"]


@pytest.mark.parametrize("choice", ["none", "auto", "required"])
def test_tool_choice_modes(choice: str) -> None:
    req = parse_chat_request(tools_chat(tool_choice=choice), max_messages=MAX_MESSAGES)
    assert req.generate_request("r", req.params(16)).tool_choice == ToolChoice(choice)  # type: ignore[arg-type]


def test_without_tools_nothing_is_passed_on() -> None:
    req = parse_chat_request(chat(), max_messages=MAX_MESSAGES)
    gen = req.generate_request("r", req.params(16))
    assert (gen.tools, gen.tool_choice, gen.parallel_tool_calls) == ((), None, None)


@pytest.mark.parametrize(
    ("sent", "seen"),
    [
        ('{"to":"jane\\u0040example.com"}', '{"to": "jane@example.com"}'),  # escapes cannot hide text
        ('{ "a" : [1, 2.50, true, null] }', '{"a": [1, 2.5, true, null]}'),
        ('"\\u00e9"', '"é"'),
        ("not json {", "not json {"),  # kept as it is, scanned as plain text
        ('{"a": NaN}', '{"a": NaN}'),  # not JSON
        ('{"a": 1e400}', '{"a": 1e400}'),  # out of range: not kept as Infinity
        ('{"a": "\\ud800"}', '{"a": "\\ud800"}'),  # an unpaired surrogate: kept as written
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)),
        ("", ""),
    ],
)
def test_arguments_are_canonical_json_or_kept_as_text(sent: str, seen: str) -> None:
    req = parse_chat_request(chat(messages=[assistant(call(sent))]), max_messages=MAX_MESSAGES)
    messages = req.generate_request("r", req.params(16)).messages
    assert messages is not None
    assert messages[0].tool_calls[0].arguments == seen


TOOL_ERRORS = [
    # (name, body, code, param)
    (
        "tool_calls on a user message",
        chat(messages=[{"role": "user", "content": "x", "tool_calls": [call()]}]),
        "invalid_value",
        "messages.0.tool_calls",
    ),
    (
        "tool message without tool_call_id",
        chat(messages=[{"role": "tool", "content": "x"}]),
        "missing_required_parameter",
        "messages.0.tool_call_id",
    ),
    (
        "tool_call_id on a user message",
        chat(messages=[{"role": "user", "content": "x", "tool_call_id": "call_1"}]),
        "invalid_value",
        "messages.0.tool_call_id",
    ),
    (
        "tool_call_id with a space",
        chat(messages=[tool_result(call_id="call 1")]),
        "invalid_value",
        "messages.0.tool_call_id",
    ),
    (
        "tool call id empty",
        chat(messages=[assistant(call(call_id=""))]),
        "invalid_value",
        "messages.0.tool_calls.0.id",
    ),
    (
        "tool call id too long",
        chat(messages=[assistant(call(call_id="c" * 129))]),
        "invalid_value",
        "messages.0.tool_calls.0.id",
    ),
    (
        "function name with a dot",
        chat(messages=[assistant(call(name="send.mail"))]),
        "invalid_value",
        "messages.0.tool_calls.0.function.name",
    ),
    (
        "function name of 65 characters",
        chat(messages=[assistant(call(name="f" * 65))]),
        "invalid_value",
        "messages.0.tool_calls.0.function.name",
    ),
    (
        "function name with a newline",
        chat(messages=[assistant(call(name="f\n"))]),
        "invalid_value",
        "messages.0.tool_calls.0.function.name",
    ),
    (
        "arguments as an object",
        chat(
            messages=[assistant({"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}})]
        ),
        "invalid_value",
        "messages.0.tool_calls.0.function.arguments",
    ),
    (
        "arguments missing",
        chat(messages=[assistant({"id": "c", "type": "function", "function": {"name": "f"}})]),
        "missing_required_parameter",
        "messages.0.tool_calls.0.function.arguments",
    ),
    (
        "tool call of another type",
        chat(messages=[assistant({**call(), "type": "custom"})]),
        "invalid_value",
        "messages.0.tool_calls.0.type",
    ),
    (
        "unknown tool call field",
        chat(messages=[assistant({**call(), "index": 0})]),
        "unknown_parameter",
        "messages.0.tool_calls.0.index",
    ),
    (
        "tool_calls not a list",
        chat(messages=[{"role": "assistant", "tool_calls": call()}]),
        "invalid_value",
        "messages.0.tool_calls",
    ),
    (
        "too many tool calls",
        chat(messages=[assistant(*(call(call_id=f"c{i}") for i in range(MAX_TOOL_CALLS + 1)))]),
        "invalid_value",
        "messages.0.tool_calls",
    ),
    (
        "duplicate tool call ids",
        chat(messages=[assistant(call(), call())]),
        "invalid_value",
        "messages.0.tool_calls.1.id",
    ),
    (
        "participant name with a space",
        chat(messages=[{"role": "user", "content": "x", "name": "Jane Doe"}]),
        "invalid_value",
        "messages.0.name",
    ),
    ("tools empty", chat(tools=[]), "invalid_value", "tools"),
    ("tools not a list", chat(tools=TOOLS[0]), "invalid_value", "tools"),
    (
        "too many tools",
        chat(tools=[{"type": "function", "function": {"name": f"f{i}"}} for i in range(MAX_TOOLS + 1)]),
        "invalid_value",
        "tools",
    ),
    (
        "tool of another type",
        chat(tools=[{**TOOLS[1], "type": "web_search"}]),
        "invalid_value",
        "tools.0.type",
    ),
    (
        "tool without function",
        chat(tools=[{"type": "function"}]),
        "missing_required_parameter",
        "tools.0.function",
    ),
    (
        "tool without a name",
        chat(tools=[{"type": "function", "function": {"description": "x"}}]),
        "missing_required_parameter",
        "tools.0.function.name",
    ),
    (
        "tool name with a space",
        chat(tools=[{"type": "function", "function": {"name": "send mail"}}]),
        "invalid_value",
        "tools.0.function.name",
    ),
    (
        "tool parameters not an object",
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": ["x"]}}]),
        "invalid_value",
        "tools.0.function.parameters",
    ),
    (
        "tool strict not a boolean",
        chat(tools=[{"type": "function", "function": {"name": "f", "strict": "yes"}}]),
        "invalid_value",
        "tools.0.function.strict",
    ),
    (
        "tool description not a string",
        chat(tools=[{"type": "function", "function": {"name": "f", "description": 5}}]),
        "invalid_value",
        "tools.0.function.description",
    ),
    (
        "unknown function field",
        chat(tools=[{"type": "function", "function": {"name": "f", "returns": {}}}]),
        "unknown_parameter",
        "tools.0.function.returns",
    ),
    (
        "NaN in tool parameters",
        b'{"model": "demo", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function",'
        b' "function": {"name": "f", "parameters": {"maximum": NaN}}}]}',
        "invalid_value",
        "tools.0.function.parameters",
    ),
    (
        "duplicate tool names",
        chat(tools=[TOOLS[1], TOOLS[0], TOOLS[1]]),
        "invalid_value",
        "tools.2.function.name",
    ),
    ("tool_choice unknown mode", tools_chat(tool_choice="always"), "invalid_value", "tool_choice"),
    ("tool_choice a number", tools_chat(tool_choice=1), "invalid_value", "tool_choice"),
    (
        "tool_choice without a function name",
        tools_chat(tool_choice={"type": "function", "function": {}}),
        "missing_required_parameter",
        "tool_choice.function.name",
    ),
    (
        "tool_choice of an unknown function",
        tools_chat(tool_choice={"type": "function", "function": {"name": "other"}}),
        "invalid_value",
        "tool_choice.function.name",
    ),
    (
        "tool_choice with an extra field",
        tools_chat(tool_choice={"type": "function", "function": {"name": "get-time"}, "x": 1}),
        "unknown_parameter",
        "tool_choice.x",
    ),
    ("tool_choice without tools", chat(tool_choice="auto"), "invalid_value", "tool_choice"),
    (
        "parallel_tool_calls without tools",
        chat(parallel_tool_calls=True),
        "invalid_value",
        "parallel_tool_calls",
    ),
    (
        "parallel_tool_calls a string",
        tools_chat(parallel_tool_calls="yes"),
        "invalid_value",
        "parallel_tool_calls",
    ),
    ("legacy functions", chat(functions=[TOOLS[0]["function"]]), "unknown_parameter", "functions"),
]


@pytest.mark.parametrize(
    ("body", "code", "param"), [c[1:] for c in TOOL_ERRORS], ids=[c[0] for c in TOOL_ERRORS]
)
def test_tool_calling_errors(body: bytes, code: str, param: str) -> None:
    err = _chat_error(body)

    assert (err.code, err.param, err.status) == (code, param, 400)


@pytest.mark.parametrize("part", ["image_url", "input_audio", "file", "refusal"])
def test_non_text_parts_are_not_supported(part: str) -> None:
    err = _chat_error(chat(messages=[{"role": "user", "content": [{"type": part, part: {}}]}]))

    assert (err.code, err.param) == ("unsupported_value", "messages.0.content.0.type")
    assert err.message == (
        f"Content parts of type '{part}' are not supported: only text is accepted "
        "(a string, or parts of type 'text')."
    )


def test_the_limits_themselves_are_accepted() -> None:
    calls = [call(call_id=f"c{i}") for i in range(MAX_TOOL_CALLS)]
    tools = [{"type": "function", "function": {"name": f"f{i}"}} for i in range(MAX_TOOLS)]
    body = chat(
        messages=[assistant(*calls)],
        tools=tools,
        tool_choice={"type": "function", "function": {"name": "f0"}},
    )
    req = parse_chat_request(body, max_messages=MAX_MESSAGES)
    assert len(req.messages[0].tool_calls or ()) == MAX_TOOL_CALLS
    assert len(req.tools or ()) == MAX_TOOLS


# --- nesting depth ------------------------------------------------------------------------------


def _nested_parameters(levels: int) -> bytes:
    """A tools request whose body nests exactly ``levels`` arrays and objects deep."""
    # body 1, tools 2, tool 3, function 4, parameters 5, then one object per further level.
    parameters = '{"a": ' * (levels - 5) + "{}" + "}" * (levels - 5)
    tools = '[{"type": "function", "function": {"name": "f", "parameters": ' + parameters + "}}]"
    return chat()[:-1] + b', "tools": ' + tools.encode() + b"}"


def test_bodies_nest_up_to_the_limit() -> None:
    req = parse_chat_request(_nested_parameters(MAX_DEPTH), max_messages=MAX_MESSAGES)
    assert req.generate_request("r", req.params(16)).tools[0].name == "f"


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 500, 990])
def test_bodies_nested_deeper_are_invalid_json(levels: int) -> None:
    for err in (_chat_error(_nested_parameters(levels)), _completion_error(_nested_parameters(levels))):
        assert (err.code, err.param) == ("invalid_json", None)
        assert (
            err.message
            == f"The request body is nested too deeply: at most {MAX_DEPTH} levels of arrays and objects."
        )


def test_a_deep_body_with_a_surrogate_escape_is_a_clean_error() -> None:
    # The surrogate check walks the body: the depth limit comes first, so it never recurses far.
    body = (
        b'{"x": '
        + b"[" * 995
        + b"]" * 995
        + b', "model": "demo", "messages": [{"role": "user", "content": "\\ud800"}]}'
    )
    assert _chat_error(body).code == "invalid_json"


def test_many_shallow_brackets_are_not_deep() -> None:
    content = [{"type": "text", "text": "[{"}] * 200
    req = parse_chat_request(chat(messages=[{"role": "user", "content": content}]), max_messages=MAX_MESSAGES)
    assert req.messages[0].text() == "[{" * 200
