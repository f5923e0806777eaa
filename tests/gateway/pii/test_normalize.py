from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pii.normalize import normalize

PROPS = settings(max_examples=400, deadline=None, database=None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("j\u200bohn@exa\u200cmple.com", "john@example.com"),  # zero-width space / non-joiner
        ("12\u200d3-4\u200e5-67\u200f89", "123-45-6789"),  # joiner, direction marks
        ("a\u2060b\u2061c\u2062d\u2063e\u2064f", "abcdef"),  # word joiner, invisible operators
        ("\ufeffkey", "key"),  # byte order mark
        ("4111\u00ad1111", "41111111"),  # soft hyphen
        ("a\u202eb\u2066c", "abc"),  # bidi override / isolate (Cf)
        ("x\ufe0fy\u034fz", "xyz"),  # variation selector, combining grapheme joiner (not Cf)
        ("１２３－４５－６７８９", "123-45-6789"),  # full-width digits and hyphen-minus
        ("ＪＯＨＮ＠ＥＸＡＭＰＬＥ．ＣＯＭ", "JOHN@EXAMPLE.COM"),
        ("\U0001d7cf\U0001d7d0\U0001d7d1", "123"),  # mathematical bold digits
        ("٤١١١ ١١١١", "4111 1111"),  # Arabic-Indic digits (NFKC leaves them)
        ("१२३", "123"),  # Devanagari digits
        ("ﬁle", "file"),  # ligature expands
        ("123\u00a045\u20036789", "123 45 6789"),  # no-break space, em space
        ("јоhn@ехаmple.com", "john@example.com"),  # Cyrillic ј о е х а in a Latin word
        ("ΑΚΙΑ1234", "AKIA1234"),  # Greek capitals beside ASCII digits
        ("Москва", "Москва"),  # an all-Cyrillic word is left alone
        ("Ωμέγα ΑΒΓ", "Ωμέγα ΑΒΓ"),  # Greek words too
        ("Paris, Москва", "Paris, Москва"),  # folding is per whitespace-delimited run
    ],
)
def test_examples(text: str, expected: str) -> None:
    assert normalize(text).text == expected


def test_span_maps_back_over_deleted_and_expanded_characters() -> None:
    text = "mail j\u200bohn@ex\u200bample.com now"
    norm = normalize(text)
    start = norm.text.index("john")
    end = start + len("john@example.com")
    s, e = norm.span(start, end)
    assert text[s:e] == "j\u200bohn@ex\u200bample.com"

    lig = normalize("xﬁy")  # "ﬁ" -> "fi": either half maps to the whole ligature
    assert lig.text == "xfiy"
    assert lig.span(1, 2) == (1, 2)
    assert lig.span(2, 3) == (1, 2)
    assert lig.span(1, 4) == (1, 3)


def test_empty_spans_and_bounds() -> None:
    norm = normalize("a\u200bb")
    assert norm.span(0, 0) == (0, 0)
    assert norm.span(1, 1) == (2, 2)
    assert norm.span(2, 2) == (3, 3)
    for bad in [(-1, 0), (1, 0), (0, 3)]:
        with pytest.raises(ValueError, match="outside"):
            norm.span(*bad)


ascii_text = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=200)
any_text = st.text(
    alphabet=st.one_of(
        st.characters(),
        st.sampled_from(list("\u200b\u200c\u200d\ufeff\u00ad\u2060ﬁ１２ＡоеаΑΚ٣ \n")),
    ),
    max_size=200,
)


@PROPS
@given(ascii_text)
def test_ascii_is_identity(text: str) -> None:
    norm = normalize(text)
    assert norm.text == text
    assert norm.origin is None
    assert norm.span(0, len(text)) == (0, len(text))


@PROPS
@given(any_text, st.data())
def test_mapping_is_monotonic_and_in_bounds(text: str, data: st.DataObject) -> None:
    norm = normalize(text)
    n = len(norm.text)
    if norm.origin is not None:
        assert len(norm.origin) == n
        assert list(norm.origin) == sorted(norm.origin)
        assert all(0 <= o < len(text) for o in norm.origin)
    # Any two spans, the second starting and ending no earlier than the first.
    a, b, c, d = sorted(data.draw(st.lists(st.integers(0, n), min_size=4, max_size=4)))
    for start, end in [(a, b), (a, c), (b, d), (c, d), (a, d), (b, b)]:
        s, e = norm.span(start, end)
        assert 0 <= s <= e <= len(text)
        if start < end:
            # the smallest original span covering every character the normalised span came from
            origins = (
                range(start, end) if norm.origin is None else [norm.origin[j] for j in range(start, end)]
            )
            assert (s, e) == (min(origins), max(origins) + 1)
    if a < b and c < d:
        s1, e1 = norm.span(a, b)
        s2, e2 = norm.span(c, d)
        assert s1 <= s2 and e1 <= e2  # monotonic in both ends
        if b <= c:
            assert s2 >= e1 - 1  # disjoint spans share at most one (expanded) original character


@PROPS
@given(any_text)
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize(text).text
    assert normalize(once).text == once
