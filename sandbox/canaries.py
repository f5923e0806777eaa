"""Canary values: strings that must never reach a model, checked inside the worker.

An operator lists values (fake card numbers, a marker planted in a secrets store, a real
customer name that redaction must catch) in a UTF-8 file, one per line; blank lines and lines
starting with ``#`` are skipped and surrounding whitespace is removed. The worker reads the file
once at startup, before isolation is applied, and keeps the values only in memory. Every
request is checked before generation: a canary found as an exact, case-sensitive substring of
any text the request carries (``request_texts``: message contents and every other string of the
messages and tool fields, or the prompt; not the id or the generation parameters) refuses the
request with error code ``canary_tripped``.

A canary value never appears in an error message or a log line: problems name the file and the
line number only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from gateway.types import GenerateRequest

MIN_CANARY_CHARS = 4  # shorter values would trip on ordinary text
CANARY_TRIPPED = "canary_tripped"
CANARY_TRIPPED_MESSAGE = (
    "Request refused inside the model worker: a configured canary value reached it; nothing was generated."
)
_NOT_MODEL_INPUT = frozenset({"id", "params"})  # GenerateRequest fields the model never sees


class CanaryFileError(ConfigError):
    """The canary file is unreadable or malformed; names the file and line, never a value."""


@dataclass(frozen=True)
class Canaries:
    """Canary values with the line each came from (``repr`` never shows the values)."""

    entries: tuple[tuple[int, str], ...] = field(default=(), repr=False)

    def __len__(self) -> int:
        return len(self.entries)

    def tripped_by(self, request: GenerateRequest) -> int | None:
        """The file line of the first canary found in the request's text, or None."""
        texts = list(request_texts(request))
        for line, value in self.entries:
            if any(value in text for text in texts):
                return line
        return None


def request_texts(request: GenerateRequest) -> Iterator[str]:
    """Every string of the request except its id and generation parameters.

    Walking the fields, rather than naming them, means a text field added to the request later
    (tool calls, tool definitions, names) is checked without a change here.
    """
    for f in dataclasses.fields(request):
        if f.name not in _NOT_MODEL_INPUT:
            yield from _strings(getattr(request, f.name))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _strings(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _strings(getattr(value, f.name))


def parse_canaries(text: str, source: str) -> Canaries:
    """Parse a canary file's text; ``source`` (the file name) prefixes every error."""
    entries: list[tuple[int, str]] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.split("\n"), start=1):
        value = raw.strip()
        if not value or value.startswith("#"):
            continue
        if len(value) < MIN_CANARY_CHARS:
            raise CanaryFileError(
                f"{source} line {number}: a canary value must be at least {MIN_CANARY_CHARS} characters "
                "(shorter ones would match ordinary text)"
            )
        if value not in seen:
            seen.add(value)
            entries.append((number, value))
    if not entries:
        raise CanaryFileError(
            f"{source}: no canary values (one per line; blank lines and lines starting with # are skipped)"
        )
    return Canaries(tuple(entries))


def load_canaries(path: Path) -> Canaries:
    """Read and parse a canary file; raises CanaryFileError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CanaryFileError(f"{path}: cannot read the canary file: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CanaryFileError(f"{path} line {line}: the canary file is not valid UTF-8") from exc
    return parse_canaries(text, str(path))
