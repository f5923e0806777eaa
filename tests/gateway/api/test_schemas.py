from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.api.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    parse_chat_request,
    parse_completion_request,
)
from gateway.errors import InvalidRequest
from gateway.types import ChatMessage, GenerationParams

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
    ("unknown parameter", chat(tools=[]), "unknown_parameter", "tools"),
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
        "invalid_value",
        "messages.0.content",
    ),
    (
        "text and image parts",
        chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]),
        "invalid_value",
        "messages.0.content",
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
        ChatMessage("tool", "42"),
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
    ("prompt tokens", completion(prompt=[1, 2, 3]), "invalid_value", "prompt"),
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
            parse(body)
        except InvalidRequest as exc:
            assert exc.status == 400
            assert exc.code
            assert isinstance(exc.message, str)


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
