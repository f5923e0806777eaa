"""Undo the cheap tricks that hide PII from pattern matchers, keeping a map back. Pure.

``normalize(text)`` returns the text the detectors scan, plus, for every character of it, the
index of the original character it came from. Per original character, in order:

1. **Invisible characters are deleted**: every format character (Unicode category ``Cf``:
   zero-width space/joiners U+200B..U+200D, direction marks U+200E/U+200F and U+202A..U+202E,
   word joiner and invisible operators U+2060..U+2064, U+FEFF, soft hyphen U+00AD, tag
   characters, ...) and the fillers and variation selectors in ``_INVISIBLE`` that are not
   ``Cf`` but render as nothing.
2. **NFKC**, one character at a time: full-width letters and digits become ASCII
   (``１２３`` -> ``123``), ligatures split (``ﬁ`` -> ``fi``), no-break and other spaces become
   ``' '``, mathematical alphanumerics become plain letters. One character may become several.
3. **Decimal digits of any script become ASCII** (Arabic-Indic ``٣`` -> ``3``, ...), which NFKC
   leaves alone.
4. **Homoglyphs are folded**: Cyrillic and Greek letters that look like Latin ones
   (``_HOMOGLYPHS``, a small explicit table) become the Latin letter, but only inside a
   whitespace-delimited run that also holds an ASCII letter or digit. Mixed runs such as
   ``јоhn@ехаmple.com`` are the evasion; an all-Cyrillic or all-Greek word is real text and is
   left as it is (folding it would turn ``Москва`` into ``MocквA``, which helps no detector).

ASCII text is returned unchanged (fast path). ``Normalized.span`` maps a span of the normalised
text back to the smallest span of the original that covers it, deleted characters inside
included.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# Not category Cf, yet invisible: combining grapheme joiner, Hangul fillers, variation selectors.
_INVISIBLE: frozenset[str] = frozenset(
    ["\u034f", "\u115f", "\u1160", "\u3164", "\uffa0"]
    + [chr(c) for c in range(0xFE00, 0xFE10)]
    + [chr(c) for c in range(0xE0100, 0xE01F0)]
)

# Cyrillic (U+04xx/U+05xx) and Greek (U+03xx) letters that render like a Latin letter.
_HOMOGLYPHS: dict[str, str] = {
    # Cyrillic capitals
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J", "Ԛ": "Q", "Ԝ": "W",
    # Cyrillic small letters
    "а": "a", "с": "c", "е": "e", "һ": "h", "і": "i", "ј": "j", "о": "o", "р": "p",
    "ѕ": "s", "у": "y", "х": "x", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ү": "y",
    # Greek capitals
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Greek small letters
    "ο": "o", "ι": "i", "κ": "k", "ν": "v", "ρ": "p", "υ": "u", "α": "a",
}  # fmt: skip


@dataclass(frozen=True)
class Normalized:
    """The text to scan, and where each of its characters came from in ``original``.

    ``origin[j]`` is the index in ``original`` of the character that produced ``text[j]``;
    it is non-decreasing. ``origin`` is ``None`` when ``text`` is ``original`` (identity).
    """

    original: str
    text: str
    origin: tuple[int, ...] | None = None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The smallest span of ``original`` covering ``text[start:end]``.

        An empty span maps to an empty span at the corresponding position.
        Raises ``ValueError`` unless ``0 <= start <= end <= len(text)``.
        """
        if not 0 <= start <= end <= len(self.text):
            raise ValueError(f"span [{start}, {end}) is outside the normalised text of {len(self.text)}")
        if self.origin is None:
            return start, end
        if start == end:
            at = self.origin[start] if start < len(self.origin) else len(self.original)
            return at, at
        return self.origin[start], self.origin[end - 1] + 1


def _is_invisible(ch: str) -> bool:
    return ch in _INVISIBLE or unicodedata.category(ch) == "Cf"


def _fold_char(ch: str) -> str:
    """Steps 2 and 3 for one visible character."""
    if ch < "\x80":  # NFKC leaves ASCII alone
        return ch
    out = unicodedata.normalize("NFKC", ch)
    if any(unicodedata.category(c) == "Nd" and not c.isascii() for c in out):
        out = "".join(str(unicodedata.decimal(c)) if unicodedata.category(c) == "Nd" else c for c in out)
    return out


def _fold_homoglyphs(chars: list[str]) -> None:
    """Step 4, in place, over whitespace-delimited runs that hold an ASCII letter or digit."""
    n = len(chars)
    i = 0
    while i < n:
        if chars[i].isspace():
            i += 1
            continue
        j = i
        mixed = False
        has_glyph = False
        while j < n and not chars[j].isspace():
            c = chars[j]
            if c.isascii():
                mixed = mixed or c.isalnum()
            elif c in _HOMOGLYPHS:
                has_glyph = True
            j += 1
        if mixed and has_glyph:
            for k in range(i, j):
                chars[k] = _HOMOGLYPHS.get(chars[k], chars[k])
        i = j


def normalize(text: str) -> Normalized:
    """``text`` made scannable (see the module docstring), with its offset map."""
    if text.isascii():
        return Normalized(text, text)
    chars: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        if _is_invisible(ch):
            continue
        for c in _fold_char(ch):
            chars.append(c)
            origin.append(i)
    _fold_homoglyphs(chars)
    return Normalized(text, "".join(chars), tuple(origin))
