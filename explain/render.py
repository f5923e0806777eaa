"""Show an explanation record to people: a terminal view and a self-contained HTML page. Pure.

- :func:`render_terminal` returns text for a terminal: the decision, PII and attribution
  evidence, then the prompt tokens with a background colour by score (red pushed the output
  up, blue pushed it down, stronger for larger ``|score| / max |score|``) and a legend.
  ``color=False`` writes each score after its token instead, with no escape codes.
- :func:`html_page` returns one HTML document a reviewer can open offline: inline CSS, a few
  lines of inline JavaScript (hovering a row of a full-scope table colours the prompt by that
  row), no external resource, and a Content-Security-Policy that allows only those two inline
  blocks (by hash).

Tokens are untrusted text (the model's input and output). Every string is HTML-escaped, and
both views show whitespace and invisible characters instead of acting on them (``visible``):
a space is ``·``, a newline ``⏎``, a tab ``⇥``, other control, format and bidirectional
characters ``<U+XXXX>``; so neither an ANSI escape sequence nor markup in a token can act.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import unicodedata
from collections import Counter
from collections.abc import Sequence

from explain.record import ExplanationRecord
from explain.types import Attribution

__all__ = ["html_page", "render_terminal", "visible"]

LEVELS = 5  # colour intensities on each side of zero
_POSITIVE = (214, 39, 40)  # red: the token pushed the output up
_NEGATIVE = (31, 119, 180)  # blue: it pushed the output down
_ANSI_POSITIVE = (224, 217, 210, 203, 196)
_ANSI_NEGATIVE = (189, 153, 117, 75, 33)
_RESET = "\x1b[0m"
_SHOWN = {" ": "·", "\n": "⏎", "\t": "⇥", "\r": "␍"}


def visible(token: str) -> str:
    """``token`` with whitespace, control and format characters made visible (and harmless)."""
    out: list[str] = []
    for ch in token:
        if ch in _SHOWN:
            out.append(_SHOWN[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") or (
            unicodedata.category(ch) == "Zs" and ch != " "
        ):
            out.append(f"<U+{ord(ch):04X}>")
        else:
            out.append(ch)
    return "".join(out) or "∅"


def _clean(text: str) -> str:
    """Prose (messages, identifiers): like ``visible`` but spaces stay spaces."""
    return " ".join(visible(part) if part else "" for part in text.split(" "))


def _level(score: float, scale: float) -> int:
    """-LEVELS..LEVELS: the sign of ``score`` and its size relative to ``scale``."""
    if scale <= 0 or score == 0:
        return 0
    size = min(1.0, abs(score) / scale)
    step = max(1, math.ceil(size * LEVELS - 1e-9)) if size >= 0.5 / LEVELS else 0
    return step if score > 0 else -step


def _scale(rows: Sequence[Sequence[float]]) -> float:
    return max((abs(s) for row in rows for s in row), default=0.0)


def _rgb(level: int) -> tuple[int, int, int]:
    target = _POSITIVE if level > 0 else _NEGATIVE
    f = abs(level) / LEVELS * 0.85
    return tuple(round(255 - f * (255 - c)) for c in target)  # type: ignore[return-value]


def _summed(attribution: Attribution) -> tuple[float, ...]:
    """One score per prompt token: the summary, or a full matrix summed over its rows."""
    rows = attribution.score_rows()
    return tuple(sum(column) for column in zip(*rows, strict=True))


# ---------------------------------------------------------------------------------------------
# Evidence, as lines of text (both views)


def _status_line(record: ExplanationRecord) -> tuple[str, bool]:
    """What became of the model attribution, and whether it needs the reader's attention."""
    ma = record.model_attribution
    a = ma.attribution
    if a is None:
        reason = f" ({ma.reason})" if ma.reason else ""
        return f"{ma.status.replace('_', ' ')}{reason}: no model attribution", ma.status != "not_applicable"
    parts = [f"{a.method.replace('_', ' ')}, {a.scope} scope"]
    if a.steps is not None:
        parts.append(f"{a.steps} steps")
    parts.append(f"{len(a.prompt_ids)} prompt x {len(a.output_ids)} output tokens, {a.elapsed_ms} ms")
    notes: list[str] = []
    if a.cut_short:
        notes.append(
            f"CUT SHORT on its time budget: {len(a.output_ids)} of {a.output_total} output tokens explained"
        )
    elif a.truncated_output:
        notes.append(f"output truncated: the first {len(a.output_ids)} of {a.output_total} tokens explained")
    if a.truncated_prompt:
        notes.append(f"prompt truncated: the last {len(a.prompt_ids)} of {a.prompt_total} tokens scored")
    line = "ok: " + ", ".join(parts) + "".join(f"; {n}" for n in notes)
    return line, a.cut_short


def _delta_text(a: Attribution) -> str | None:
    delta = a.convergence_delta
    if delta is None:
        return None
    if isinstance(delta, tuple):
        return f"max |convergence delta| {max(abs(d) for d in delta):.4g} over {len(delta)} rows"
    return f"convergence delta {delta:.4g} (sum of scores minus F(input) - F(baseline))"


def _pii_lines(record: ExplanationRecord) -> list[str]:
    if not record.pii_findings:
        return ["none found"]
    counts = Counter(f.entity_type for f in record.pii_findings)
    lines = [", ".join(f"{kind} x{n}" for kind, n in sorted(counts.items()))]
    for f in record.pii_findings:
        where = f"input[{f.text_index}]" if f.location == "input" else "output"
        context = f"; context: {', '.join(visible(w) for w in f.context_words)}" if f.context_words else ""
        lines.append(
            f"{f.entity_type} by {_clean(f.recognizer)} ({f.score:.2f}) at {where} {f.start}-{f.end}"
            + context
        )
    return lines


def _evidence(record: ExplanationRecord, *, obligations: bool = True) -> list[tuple[str, str]]:
    d = record.decision
    reasons = "; ".join(f"{r.code}: {_clean(r.message)}" if r.message else r.code for r in d.reasons)
    rows = [
        ("request", _clean(record.request_id)),
        ("created", _clean(record.created)),
        (
            "principal",
            f"{_clean(record.principal_id)} (tenant {_clean(record.tenant) if record.tenant else '-'})",
        ),
        ("model", f"{_clean(record.model or '-')} (digest {_clean(record.model_digest or '-')})"),
        ("decision", f"{d.decision} (status {d.status})" + (f"; reasons: {reasons}" if reasons else "")),
        ("policy", _clean(d.policy_digest or "-")),
    ]
    rows += [
        ("rule" if i == 0 else "", f"{_clean(r.rule)}: {_clean(r.detail)}") for i, r in enumerate(d.rules)
    ]
    if d.policy_input_digest or d.output_policy_input_digest:
        rows.append(
            (
                "policy input",
                f"input {d.policy_input_digest or '-'}, "
                f"output {d.output_policy_input_digest or '-'} (sha256)",
            )
        )
    if d.obligations and obligations:
        rows.append(("obligations", _clean(d.obligations)))
    if d.output_obligations:
        rows.append(("output oblig.", _clean(d.output_obligations)))
    rows.append(("explain level", record.level))
    return rows


# ---------------------------------------------------------------------------------------------
# Terminal


def _paint(text: str, level: int, truecolor: bool) -> str:
    if level == 0:
        return text
    if truecolor:
        r, g, b = _rgb(level)
        fg = "97" if abs(level) >= LEVELS - 1 else "30"
        return f"\x1b[{fg};48;2;{r};{g};{b}m{text}{_RESET}"
    index = abs(level) - 1
    bg = (_ANSI_POSITIVE if level > 0 else _ANSI_NEGATIVE)[index]
    fg = "97" if abs(level) == LEVELS else "30"
    return f"\x1b[{fg};48;5;{bg}m{text}{_RESET}"


def _token_row(
    texts: Sequence[str], scores: Sequence[float], scale: float, color: bool, truecolor: bool
) -> str:
    if color:
        return "".join(
            _paint(visible(t), _level(s, scale), truecolor) for t, s in zip(texts, scores, strict=True)
        )
    return " ".join(f"{visible(t)}({s:+.3g})" for t, s in zip(texts, scores, strict=True))


def render_terminal(
    record: ExplanationRecord, *, color: bool = True, truecolor: bool = False, top: int = 5
) -> str:
    """The record as terminal text (see the module docstring). In full scope, the prompt is
    coloured by the scores summed over the output tokens, and each output token lists the
    ``top`` prompt tokens by ``|score|``."""
    lines = [f"Explanation (record digest {record.digest()})"]
    lines += [f"  {name:<13} {value}" for name, value in _evidence(record)]
    pii = _pii_lines(record)
    lines.append(f"  {'PII':<13} {pii[0]}")
    lines += [f"  {'':<13}   {line}" for line in pii[1:]]
    ml = "; ".join(f"{s.name} {s.score:.3g}" for s in record.ml_scores) or _clean(record.ml_scores_note or "")
    lines.append(f"  {'ML scores':<13} {ml}")
    status, alarming = _status_line(record)
    lines.append(f"  {'attribution':<13} {'!! ' if alarming else ''}{status}")
    a = record.model_attribution.attribution
    if a is None:
        return "\n".join(lines) + "\n"
    delta = _delta_text(a)
    if delta:
        lines.append(f"  {'':<13} {delta}")
    summed = _summed(a)
    scale = _scale([summed])
    lines.append("")
    what = "the whole output" if a.scope == "summary" else "the output, summed over its tokens"
    lines.append(f"Prompt tokens, scored for {what}:")
    lines.append(_token_row(a.prompt_texts, summed, scale, color, truecolor))
    lines.append("")
    lines.append("Output tokens explained:")
    lines.append(
        " ".join(visible(t) for t in a.output_texts) if not color else "".join(map(visible, a.output_texts))
    )
    if a.scope == "full":
        matrix_scale = _scale(a.score_rows())
        lines.append("")
        lines.append(f"Per output token, the {top} prompt tokens with the largest |score|:")
        for text, row in zip(a.output_texts, a.score_rows(), strict=True):
            best = sorted(range(len(row)), key=lambda i: (-abs(row[i]), i))[:top]
            cells = []
            for i in best:
                token = visible(a.prompt_texts[i])
                shown = _paint(token, _level(row[i], matrix_scale), truecolor) if color else token
                cells.append(f"{shown} {row[i]:+.3g}")
            lines.append(f"  {visible(text):>12} <- " + ", ".join(cells))
    lines.append("")
    if color:
        ramp = "".join(_paint("  ", level, truecolor) for level in range(-LEVELS, LEVELS + 1) if level)
        lines.append(
            f"Legend: {ramp}  blue pushed the output down, red pushed it up; scale max |score| {scale:.3g}"
        )
    else:
        lines.append("Legend: token(score): positive pushed the output up, negative pushed it down")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# HTML

_SCRIPT = """
document.querySelectorAll("tr[data-bins]").forEach(function (row) {
  row.addEventListener("mouseenter", function () {
    var bins = row.getAttribute("data-bins").split(" ");
    var tokens = document.querySelectorAll("#focus .tok");
    for (var i = 0; i < tokens.length; i++) { tokens[i].className = "tok " + (bins[i] || "z"); }
    document.getElementById("focus-label").textContent = row.getAttribute("data-label");
  });
});
"""


def _css() -> str:
    bins = []
    for level in range(-LEVELS, LEVELS + 1):
        if level:
            r, g, b = _rgb(level)
            fg = "#fff" if abs(level) == LEVELS else "#111"
            bins.append(f".{_bin(level)}{{background:rgb({r},{g},{b});color:{fg}}}")
    return (
        "body{font:14px/1.45 system-ui,sans-serif;margin:2em;color:#111;background:#fff;max-width:80em}"
        "h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em}"
        "table.kv td{padding:2px 10px 2px 0;vertical-align:top}table.kv td:first-child{color:#555}"
        "table.grid{border-collapse:collapse}"
        "table.grid td,table.grid th{border:1px solid #ddd;padding:2px 6px}"
        ".banner{padding:.6em 1em;border-radius:4px;font-weight:600;margin:1em 0}"
        ".warn{background:#fff3cd;border:2px solid #d39e00}.info{background:#e8f1fb;border:1px solid #9cc}"
        ".tokens{font-family:ui-monospace,monospace;line-height:2;word-break:break-all}"
        ".tok{padding:1px 2px;margin:0 1px;border-radius:2px;white-space:pre;display:inline-block}"
        ".z{background:#fff;border:1px solid #eee}.legend{line-height:2}"
        ".scroll{overflow:auto;max-height:40em}"
        "table.heat{border-collapse:collapse;font-family:ui-monospace,monospace;font-size:12px}"
        "table.heat td,table.heat th{padding:1px 3px;border:1px solid #f3f3f3;white-space:pre}"
        "table.heat th{position:sticky;top:0;background:#fafafa;font-weight:normal}"
        "table.heat tr:hover td.out{outline:2px solid #333}"
        "pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap;word-break:break-all}"
        "code{font-family:ui-monospace,monospace}" + "".join(bins)
    )


def _bin(level: int) -> str:
    return "z" if level == 0 else (f"p{level}" if level > 0 else f"n{-level}")


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _tokens_html(texts: Sequence[str], scores: Sequence[float], scale: float, element_id: str = "") -> str:
    spans = "".join(
        f'<span class="tok {_bin(_level(s, scale))}" title="{s:+.6g}">{_e(visible(t))}</span>'
        for t, s in zip(texts, scores, strict=True)
    )
    ident = f' id="{element_id}"' if element_id else ""
    return f'<div class="tokens"{ident}>{spans}</div>'


def _kv(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _pii_html(record: ExplanationRecord) -> str:
    if not record.pii_findings:
        return "<p>No sensitive data was found.</p>"
    columns = ("entity type", "recogniser", "score", "where", "span", "context words")
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    rows = "".join(
        "<tr>"
        f"<td>{_e(f.entity_type)}</td><td>{_e(_clean(f.recognizer))}</td><td>{f.score:.2f}</td>"
        f"<td>{_e(f'input[{f.text_index}]' if f.location == 'input' else 'output')}</td>"
        f"<td>{f.start}-{f.end}</td><td>{_e(', '.join(visible(w) for w in f.context_words))}</td>"
        "</tr>"
        for f in record.pii_findings
    )
    return f'<table class="grid">{head}{rows}</table><p>Findings never hold the values found.</p>'


def _ml_html(record: ExplanationRecord) -> str:
    if not record.ml_scores:
        return f"<p>{_e(_clean(record.ml_scores_note or ''))}</p>"
    parts = []
    for s in record.ml_scores:
        threshold = "" if s.threshold is None else f", threshold {s.threshold:.4g}"
        parts.append(f"<h3>{_e(s.name)}: {s.score:.4g}{_e(threshold)} ({_e(s.method)})</h3>")
        parts.append(_tokens_html(s.tokens, s.attributions, _scale([s.attributions])))
    return "".join(parts)


def _attribution_html(a: Attribution) -> str:
    details = [
        ("method", a.method.replace("_", " ")),
        ("scope", a.scope),
        ("steps", "-" if a.steps is None else str(a.steps)),
        ("baseline token", "-" if a.baseline_token_id is None else str(a.baseline_token_id)),
        ("prompt tokens", f"{len(a.prompt_ids)} scored of {a.prompt_total} (from index {a.prompt_start})"),
        ("output tokens", f"{len(a.output_ids)} explained of {a.output_total}"),
        ("time", f"{a.elapsed_ms} ms"),
    ]
    delta = _delta_text(a)
    if delta:
        details.append(("completeness", delta))
    summed = _summed(a)
    scale = _scale([summed])
    what = "the whole output" if a.scope == "summary" else "the output (each row below, summed)"
    parts = [
        _kv(details),
        f"<h3>Prompt tokens, scored for {what}</h3>",
        _tokens_html(a.prompt_texts, summed, scale),
        "<h3>Output tokens explained</h3>",
        _tokens_html(a.output_texts, [0.0] * len(a.output_texts), 0.0),
    ]
    if a.scope == "full":
        rows = a.score_rows()
        matrix_scale = _scale(rows)
        first = _e(visible(a.output_texts[0]))
        parts.append(f'<h3>Per output token: <span id="focus-label">{first}</span></h3>')
        parts.append("<p>Hover over a row of the table to colour the prompt by it.</p>")
        parts.append(_tokens_html(a.prompt_texts, rows[0], matrix_scale, "focus"))
        head = "<tr><th>output \\ prompt</th>" + "".join(f"<th>{_e(visible(t))}</th>" for t in a.prompt_texts)
        body = []
        for text, row in zip(a.output_texts, rows, strict=True):
            bins = " ".join(_bin(_level(s, matrix_scale)) for s in row)
            cells = "".join(
                f'<td class="{_bin(_level(s, matrix_scale))}" title="{s:+.6g}">{s:+.2g}</td>' for s in row
            )
            label = _e(visible(text))
            body.append(
                f'<tr data-bins="{bins}" data-label="{label}"><td class="out">{label}</td>{cells}</tr>'
            )
        parts.append(f'<div class="scroll"><table class="heat">{head}</tr>{"".join(body)}</table></div>')
    legend = "".join(
        f'<span class="tok {_bin(level)}">&nbsp;&nbsp;</span>' for level in range(-LEVELS, LEVELS + 1)
    )
    parts.append(
        f'<p class="legend">Legend: {legend} blue pushed the output down, red pushed it up '
        f"(intensity: |score| / {scale:.3g}, the largest). Hover a token for its score. "
        "Whitespace shows as · (space), ⏎ (newline), ⇥ (tab).</p>"
    )
    return "".join(parts)


def html_page(record: ExplanationRecord) -> str:
    """The record as one self-contained HTML document (see the module docstring)."""
    css = _css()
    digest = record.digest()
    status, alarming = _status_line(record)
    a = record.model_attribution.attribution
    csp = (
        f"default-src 'none'; style-src {_csp_hash(css)}; script-src {_csp_hash(_SCRIPT)}; "
        "base-uri 'none'; form-action 'none'"
    )
    body = [
        f"<h1>Explanation of request <code>{_e(_clean(record.request_id))}</code></h1>",
        f'<div class="banner {"warn" if alarming else "info"}">Model attribution: {_e(status)}</div>',
        "<h2>Decision</h2>",
        _kv(_evidence(record, obligations=False)),
    ]
    if record.decision.obligations:
        pretty = json.dumps(json.loads(record.decision.obligations), indent=2, ensure_ascii=False)
        body.append(f"<h3>Obligations</h3><pre>{_e(pretty)}</pre>")
    body += ["<h2>Sensitive data</h2>", _pii_html(record), "<h2>ML scores</h2>", _ml_html(record)]
    body.append("<h2>Model attribution</h2>")
    body.append(_attribution_html(a) if a is not None else f"<p>{_e(status)}</p>")
    body.append(f"<hr><p>Record digest (SHA-256 of its canonical JSON): <code>{digest}</code></p>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Explanation {_e(_clean(record.request_id))}</title>"
        f"<style>{css}</style></head><body>{''.join(body)}<script>{_SCRIPT}</script></body></html>\n"
    )
