"""Canary files: parsing (errors name the file and line, never a value) and request checks."""

from __future__ import annotations

from pathlib import Path

import pytest

import gateway.types
from gateway.errors import ConfigError
from gateway.types import ChatMessage, GenerateRequest, GenerationParams
from sandbox.canaries import Canaries, CanaryFileError, load_canaries, parse_canaries, request_texts

PARAMS = GenerationParams(max_tokens=8)


def chat(*contents: str) -> GenerateRequest:
    return GenerateRequest(id="r", params=PARAMS, messages=tuple(ChatMessage("user", c) for c in contents))


def test_values_skip_blanks_and_comments_and_keep_their_line() -> None:
    canaries = parse_canaries(
        "# planted in the HR database\n\n  4111-1111-CANARY  \r\n#tiny\nAlice Canaryson\n4111-1111-CANARY\n",
        "c.txt",
    )
    assert canaries.entries == ((3, "4111-1111-CANARY"), (5, "Alice Canaryson"))
    assert len(canaries) == 2


def test_repr_never_shows_the_values() -> None:
    canaries = parse_canaries("Alice Canaryson\n", "c.txt")
    assert "Canaryson" not in repr(canaries)
    assert "Canaryson" not in str(canaries)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("long enough\nabc\n", "c.txt line 2: a canary value must be at least 4 characters"),
        ("# only a comment\n\n", "c.txt: no canary values"),
        ("", "c.txt: no canary values"),
    ],
)
def test_bad_files_are_refused_naming_file_and_line(text: str, expected: str) -> None:
    with pytest.raises(CanaryFileError) as info:
        parse_canaries(text, "c.txt")
    assert str(info.value).startswith(expected)
    assert "abc" not in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_load_reads_utf8_with_or_without_bom(tmp_path: Path) -> None:
    path = tmp_path / "canaries.txt"
    path.write_bytes("\ufeffJürgen Kanarienvogel\n".encode())
    assert load_canaries(path).entries == ((1, "Jürgen Kanarienvogel"),)


def test_load_refuses_non_utf8_and_missing_files(tmp_path: Path) -> None:
    path = tmp_path / "canaries.txt"
    path.write_bytes(b"fine value\nbad \xff value\n")
    with pytest.raises(CanaryFileError, match=r"canaries.txt line 2: the canary file is not valid UTF-8"):
        load_canaries(path)
    with pytest.raises(CanaryFileError, match=r"missing.txt: cannot read the canary file"):
        load_canaries(tmp_path / "missing.txt")


def test_a_canary_in_any_message_or_the_prompt_trips() -> None:
    canaries = parse_canaries("# comment\nSECRET-7f3a\nAlice Canaryson\n", "c.txt")
    assert canaries.tripped_by(chat("hello", "my key is xSECRET-7f3ax")) == 2
    assert canaries.tripped_by(chat("ask Alice Canaryson")) == 3
    prompt = GenerateRequest(id="r", params=PARAMS, prompt="...SECRET-7f3a")
    assert canaries.tripped_by(prompt) == 2


def test_matching_is_exact_and_case_sensitive() -> None:
    canaries = parse_canaries("SECRET-7f3a\n", "c.txt")
    assert canaries.tripped_by(chat("secret-7f3a", "SECRET-7f3")) is None
    assert canaries.tripped_by(chat("SECRET -7f3a", "<SECRET_1>")) is None
    assert canaries.tripped_by(GenerateRequest(id="r", params=PARAMS, prompt=None)) is None


def test_no_canaries_never_trip() -> None:
    assert Canaries().tripped_by(chat("anything at all")) is None


def test_every_text_of_the_request_is_checked_but_not_id_or_params() -> None:
    request = GenerateRequest(
        id="SECRET-7f3a-id",
        params=GenerationParams(max_tokens=8, stop=("SECRET-7f3a-stop",)),
        messages=(ChatMessage("user", "hello"), ChatMessage("assistant", "fine")),
    )
    assert {"user", "hello", "assistant", "fine"} <= set(request_texts(request))
    assert not any("SECRET" in text for text in request_texts(request))
    assert parse_canaries("SECRET-7f3a\n", "c.txt").tripped_by(request) is None


@pytest.mark.skipif(not hasattr(gateway.types, "ToolCall"), reason="requests carry no tool calls yet")
def test_tool_call_arguments_are_checked() -> None:
    call = gateway.types.ToolCall(id="call_1", name="lookup", arguments='{"q": "SECRET-7f3a"}')  # type: ignore[attr-defined,unused-ignore]
    message = ChatMessage("assistant", "", tool_calls=(call,))  # type: ignore[call-arg,unused-ignore]
    request = GenerateRequest(id="r", params=PARAMS, messages=(message,))
    assert parse_canaries("SECRET-7f3a\n", "c.txt").tripped_by(request) == 1
