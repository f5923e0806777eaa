from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox.textstream import REPLACEMENT_CHAR, StopTextStream


def run(prefixes: list[str], stop: tuple[str, ...]) -> tuple[list[str], str, StopTextStream]:
    """Feed growing decoded texts like the model loop does; return pieces and the last text."""
    stream = StopTextStream(stop)
    pieces: list[str] = []
    last = ""
    for i, text in enumerate(prefixes):
        last = text
        if i == len(prefixes) - 1:
            pieces.append(stream.finish(text))
        else:
            pieces.append(stream.push(text))
        if stream.stopped:
            break
    return pieces, last, stream


def test_emits_text_before_a_stop_string_and_stops() -> None:
    pieces, _, stream = run(["Hel", "Hello wo", "Hello world", "Hello world!"], ("o w",))
    assert "".join(pieces) == "Hell"
    assert stream.stopped


def test_holds_a_possible_stop_prefix_until_it_is_settled() -> None:
    stream = StopTextStream(("END",))
    assert stream.push("abcE") == "abc"
    assert stream.push("abcEN") == ""
    assert stream.push("abcENx") == "ENx"
    assert not stream.stopped


def test_holds_an_incomplete_utf8_tail() -> None:
    stream = StopTextStream()
    assert stream.push("a" + REPLACEMENT_CHAR) == "a"
    assert stream.push("a日") == "日"


def test_finish_releases_held_text_when_no_stop_follows() -> None:
    stream = StopTextStream(("STOP",))
    assert stream.push("go ST") == "go "
    assert stream.finish("go ST") == "ST"


def test_a_stop_string_completed_later_wins_over_an_unfinished_longer_one() -> None:
    pieces, _, _ = run(["ab", "abc", "abcd"], ("abcd", "c"))
    assert "".join(pieces) == "ab"


def test_empty_stop_strings_are_refused() -> None:
    with pytest.raises(ValueError):
        StopTextStream(("",))


ALPHABET = "abcé日 \n"


@st.composite
def byte_level_case(draw: st.DrawFn) -> tuple[list[str], tuple[str, ...]]:
    """Decoded texts after each token of a byte-level BPE (tokens split UTF-8 anywhere, with
    some invalid bytes), and stop strings, mostly cut from the final text so they do occur."""
    parts = draw(
        st.lists(
            st.one_of(st.text(alphabet=ALPHABET, max_size=6).map(str.encode), st.binary(max_size=2)),
            min_size=1,
        )
    )
    data = b"".join(parts)
    cuts = sorted(set(draw(st.lists(st.integers(min_value=1, max_value=max(1, len(data))), max_size=20))))
    bounds = [0, *[c for c in cuts if c < len(data)], len(data)]
    prefixes = [data[:end].decode("utf-8", errors="replace") for end in bounds[1:]]
    final = prefixes[-1]
    stops: list[str] = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        if draw(st.booleans()) and len(final) > 1:
            start = draw(st.integers(min_value=0, max_value=len(final) - 1))
            size = draw(st.integers(min_value=1, max_value=4))
            candidate = final[start : start + size].replace(REPLACEMENT_CHAR, "")
        else:
            candidate = draw(st.text(alphabet="abcé日", min_size=1, max_size=3))
        if candidate:
            stops.append(candidate)
    return prefixes, tuple(stops)


def first_stop(text: str, stop: tuple[str, ...]) -> int:
    return min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))


@given(byte_level_case())
def test_output_is_the_text_cut_at_the_first_stop(case: tuple[list[str], tuple[str, ...]]) -> None:
    prefixes, stop = case
    pieces, last, stream = run(prefixes, stop)
    output = "".join(pieces)
    assert output == last[: first_stop(last, stop)]
    assert stream.stopped == any(s in last for s in stop)
    assert not any(s in output for s in stop)


@given(byte_level_case())
def test_only_stop_prefixes_and_incomplete_characters_are_held_back(
    case: tuple[list[str], tuple[str, ...]],
) -> None:
    prefixes, stop = case
    stream = StopTextStream(stop)
    emitted = ""
    for text in prefixes:
        emitted += stream.push(text)
        if stream.stopped:
            break
        assert text.startswith(emitted)
        held = text[len(emitted) :].rstrip(REPLACEMENT_CHAR)
        assert held == "" or any(s.startswith(held) and s != held for s in stop)
