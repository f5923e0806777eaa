from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import replace
from html.parser import HTMLParser

import pytest

from explain.record import ExplanationRecord, ModelAttribution
from explain.render import html_page, render_terminal, visible
from tests.explain import factories

HOSTILE = (
    "<script>alert(1)</script>",
    '" onmouseover="alert(2)',
    "\x1b[31mred\x1b]0;title\x07",
    "</style>",
    "a\u202eb",
)
OUR_ANSI = re.compile(r"\x1b\[(?:30|97);48;(?:5;\d{1,3}|2;\d{1,3};\d{1,3};\d{1,3})m|\x1b\[0m")


def _hostile_record(scope: str = "full") -> ExplanationRecord:
    a = factories.attribution(scope)
    texts = HOSTILE + a.prompt_texts[len(HOSTILE) :]
    return factories.record(
        ModelAttribution.ok(replace(a, prompt_texts=texts, output_texts=("<b>", " &amp;", "\n"))),
        request_id="req-<i>1</i>",
    )


def test_visible_shows_whitespace_and_invisible_characters() -> None:
    assert visible(" world") == "·world"
    assert visible("a\nb\tc\r") == "a⏎b⇥c␍"
    assert visible("\x1b[31m") == "<U+001B>[31m"
    assert visible("x\u202ey\u200bz\u00a0") == "x<U+202E>y<U+200B>z<U+00A0>"
    assert visible("") == "∅"
    assert visible("Grüße 東京") == "Grüße·東京"


@pytest.mark.parametrize("truecolor", [False, True])
def test_terminal_colours_tokens_by_score(truecolor: bool) -> None:
    text = render_terminal(factories.record(), truecolor=truecolor)
    assert ("48;2;" in text) == truecolor and ("48;5;" in text) != truecolor
    plain = OUR_ANSI.sub("", text)
    for token in factories.PROMPT_TEXTS:
        assert visible(token) in plain
    assert "Legend" in plain and "EMAIL_ADDRESS x1" in plain and "allow (status 200)" in plain
    assert "obligations.redact: EMAIL_ADDRESS replaced by placeholders" in plain
    # the strongest positive score is the darkest red, the strongest negative a blue
    assert "\x1b[97;48;5;196m·capital" not in text  # 0.375 of 0.5: not the top level
    assert "\x1b[97;48;5;196m?" in text or truecolor
    assert "48;5;153m" in text or "48;5;117m" in text or truecolor


def test_plain_terminal_has_scores_and_no_escape_codes() -> None:
    text = render_terminal(_hostile_record("summary"), color=False)
    assert "\x1b" not in text and "\x07" not in text
    assert "·capital(+0.375)" in text and "?(+0.5)" in text
    assert "<U+001B>[31mred<U+001B>]0;title<U+0007>" in text


def test_terminal_neutralises_hostile_tokens() -> None:
    text = render_terminal(_hostile_record())
    assert OUR_ANSI.sub("", text).count("\x1b") == 0
    assert "\u202e" not in text


def test_terminal_full_scope_lists_top_tokens_per_output_token() -> None:
    text = render_terminal(
        factories.record(ModelAttribution.ok(factories.attribution("full"))), color=False, top=3
    )
    lines = [line for line in text.splitlines() if " <- " in line]
    assert len(lines) == len(factories.OUTPUT_TEXTS)
    assert lines[0].strip() == "·Paris <- ? +0.5, <s> -0.375, ·capital +0.375"  # ties: prompt order


@pytest.mark.parametrize(
    ("model_attribution", "expected"),
    [
        (ModelAttribution("skipped", "overload"), "!! skipped (overload): no model attribution"),
        (ModelAttribution.pending(), "!! pending: no model attribution"),
        (ModelAttribution("failed", "timeout"), "!! failed (timeout)"),
        (ModelAttribution("not_applicable", "echo_model"), "not applicable (echo_model)"),
    ],
)
def test_status_without_attribution(model_attribution: ModelAttribution, expected: str) -> None:
    record = factories.record(model_attribution)
    assert expected in render_terminal(record, color=False)
    assert expected.removeprefix("!! ") in html_page(record)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.data: dict[str, list[str]] = {"style": [], "script": []}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = tag

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open in self.data:
            self.data[self._open].append(data)


def _parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    return parser


@pytest.mark.parametrize("scope", ["summary", "full"])
def test_html_is_self_contained(scope: str) -> None:
    page = html_page(factories.record(ModelAttribution.ok(factories.attribution(scope))))
    assert page.startswith("<!DOCTYPE html>")
    for needle in ("http://", "https://", "src=", "href=", "url(", "@import", "//"):
        assert needle not in page.replace("<!DOCTYPE", ""), needle
    parsed = _parse(page)
    assert {tag for tag, _ in parsed.tags} <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "code", "div", "span",
        "table", "tr", "td", "th", "p", "pre", "hr", "script",
    }  # fmt: skip
    assert all(not name.startswith("on") for _, attrs in parsed.tags for name in attrs)


def test_html_csp_allows_exactly_its_own_style_and_script() -> None:
    page = html_page(_hostile_record())
    parsed = _parse(page)
    (csp,) = [
        a["content"]
        for tag, a in parsed.tags
        if tag == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp is not None and csp.startswith("default-src 'none';")
    for kind in ("style", "script"):
        (body,) = parsed.data[kind]
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"{kind}-src 'sha256-{digest}'" in csp


def test_html_escapes_hostile_tokens() -> None:
    page = html_page(_hostile_record())
    assert page.count("<script") == 1 and page.count("</script>") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '" onmouseover="' not in page and "&quot;·onmouseover=&quot;alert(2)" in page
    assert "</style>" not in page.split("</head>")[1]
    assert "\x1b" not in page and "\u202e" not in page
    assert "<b>" not in page and "&lt;b&gt;" in page
    assert "req-&lt;i&gt;1&lt;/i&gt;" in page


def test_html_full_scope_heatmap() -> None:
    record = factories.record(ModelAttribution.ok(factories.attribution("full")))
    page = html_page(record)
    rows = re.findall(r'<tr data-bins="([^"]*)" data-label="([^"]*)">', page)
    assert [label for _, label in rows] == ["·Paris", "·is", "."]
    assert all(len(bins.split()) == len(factories.PROMPT_TEXTS) for bins, _ in rows)
    assert rows[2][0].split()[-1] == "p5" and rows[2][0].split()[0] == "n4"  # strongest red, a strong blue
    assert 'id="focus"' in page
    assert record.digest() in page


def test_html_shows_cut_short_prominently() -> None:
    a = factories.attribution("full")
    cut = replace(
        a,
        output_ids=a.output_ids[:1],
        output_texts=a.output_texts[:1],
        scores=a.scores[:1],
        convergence_delta=(0.0125,),
        cut_short=True,
    )
    page = html_page(factories.record(ModelAttribution.ok(cut)))
    assert '<div class="banner warn">' in page and "CUT SHORT" in page and "1 of 3 output tokens" in page
