"""Which parts of ``input`` a policy set can read: the key of a sound decision cache.

A decision is a pure function of the policy set (fixed for an engine), ``data`` (fixed too)
and ``input``, unless a module calls a builtin whose result varies (the clock, randomness,
the network). A policy reads ``input`` only through references written in its source. This
module finds them: every ``input.a.b`` or ``input["a"]["b"]`` reference contributes the path
``("a", "b")``; the reference stops at the first dynamic part (``input.a[x]`` contributes
``("a",)``), and a bare ``input`` (``object.get(input, ...)``, ``x := input``, ``walk(input)``)
contributes the empty path, the whole document. Two inputs that agree on every such path get
the same decision, so that projection is a cache key.

The scan is deliberately conservative: it reads a token stream (comments and strings
stripped), only joins reference parts written without spaces between them, and treats any
occurrence it cannot read as a static path as a dependency on everything above it. It can
only make the key larger (fewer cache hits), never smaller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

Path = tuple[str, ...]

# Builtins whose result is not a function of their arguments: a policy calling any of these
# is never cached.
NONDETERMINISTIC = frozenset(
    {
        "time.now_ns",
        "rand.intn",
        "uuid.rfc4122",
        "http.send",
        "net.lookup_ip_addr",
        "opa.runtime",
        "io.jwt.decode_verify",
        "crypto.x509.parse_and_verify_certificates",
        "crypto.x509.parse_and_verify_certificates_with_keys",
    }
)

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9][0-9.eE+-]*)
  | (?P<punct>.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    spaced: bool  # whitespace or a comment came right before it


def _tokens(source: str) -> list[_Tok]:
    out: list[_Tok] = []
    spaced = True
    for m in _TOKEN.finditer(source):
        kind = m.lastgroup or "punct"
        if kind == "space":
            spaced = True
            continue
        out.append(_Tok(kind, m.group(), spaced))
        spaced = False
    return out


@dataclass(frozen=True)
class InputDeps:
    """The input paths a policy set reads (``()`` is the whole document), or why it is uncacheable."""

    paths: frozenset[Path]
    uncacheable: str | None = None

    @property
    def cacheable(self) -> bool:
        return self.uncacheable is None and () not in self.paths


def _static_key(toks: list[_Tok], i: int) -> tuple[str, int] | None:
    """At ``toks[i]`` (after a reference), read ``.name`` or ``["name"]``; return it and the next index."""
    if i + 1 < len(toks) and not toks[i].spaced and not toks[i + 1].spaced:
        first, second = toks[i], toks[i + 1]
        if first.text == "." and second.kind == "ident":
            return second.text, i + 2
        if first.text == "[" and second.kind == "string" and i + 2 < len(toks):
            close = toks[i + 2]
            if close.text == "]" and not close.spaced:
                return json.loads(second.text), i + 3
    return None


def _dotted_name(toks: list[_Tok], i: int) -> str:
    parts = [toks[i].text]
    while (
        i + 2 < len(toks)
        and toks[i + 1].text == "."
        and toks[i + 2].kind == "ident"
        and not toks[i + 1].spaced
        and not toks[i + 2].spaced
    ):
        parts.append(toks[i + 2].text)
        i += 2
    return ".".join(parts)


def scan(sources: Iterable[str]) -> InputDeps:
    """The input dependencies of these Rego modules taken together."""
    paths: set[Path] = set()
    for source in sources:
        toks = _tokens(source)
        for i, tok in enumerate(toks):
            if tok.text == "$" and i + 1 < len(toks) and toks[i + 1].kind in ("string", "raw"):
                # A template string ($"...{expr}...") hides references inside a string token.
                return InputDeps(frozenset(), uncacheable="the policy uses template strings")
            if tok.kind != "ident":
                continue
            after_dot = i > 0 and toks[i - 1].text == "." and not tok.spaced
            if after_dot:
                continue
            name = _dotted_name(toks, i)
            if name in NONDETERMINISTIC:
                return InputDeps(frozenset(), uncacheable=f"the policy calls {name}")
            if tok.text != "input":
                continue
            path: list[str] = []
            j = i + 1
            while (step := _static_key(toks, j)) is not None:
                path.append(step[0])
                j = step[1]
            paths.add(tuple(path))
    return InputDeps(_minimal(paths))


def _minimal(paths: set[Path]) -> frozenset[Path]:
    """Drop paths below another one: reading ``a`` already covers ``a.b``."""
    return frozenset(p for p in paths if not any(p[:n] in paths for n in range(len(p))))


_ABSENT = object()


def project(document: dict[str, object], paths: frozenset[Path]) -> str:
    """The canonical text of ``document`` restricted to ``paths``: equal texts, equal decisions."""
    picked: list[tuple[Path, object]] = []
    for path in sorted(paths):
        value: object = document
        for part in path:
            value = value.get(part, _ABSENT) if isinstance(value, dict) else _ABSENT
            if value is _ABSENT:
                break
        if value is not _ABSENT:
            picked.append((path, value))
    return json.dumps(picked, sort_keys=True, separators=(",", ":"), allow_nan=False)
