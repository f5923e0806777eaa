"""Reversible pseudonymisation within one request. Pure.

The ``placeholder`` redaction operator replaces each sensitive value with a typed, numbered
placeholder: ``<PERSON_1>``, ``<EMAIL_ADDRESS_2>``. The same value gets the same placeholder
everywhere in the request (a chat client resends the whole conversation, so it stays stable
over the conversation's turns too). The mapping lives in this object, in the gateway's memory,
for the request only: it is never logged, audited or sent anywhere.

When the policy allows it (``redact.restore``), placeholders in the model's answer are
replaced by the original values for the caller. Models rewrite text around placeholders and
sometimes the placeholders themselves, so restoration accepts a placeholder whatever its case
and with spaces inside the brackets (``< person_1 >``), but only one this request issued: a
placeholder the client typed itself (``<PERSON_1>`` in the prompt) is never issued to a value
(numbering skips it) and so is never "restored" into anyone's data.
"""

from __future__ import annotations

import re

# The longest placeholder this module issues or accepts: for a stream's hold-back window.
MAX_PLACEHOLDER_CHARS = 64
_ANY = re.compile(r"<\s*([A-Za-z][A-Za-z0-9_]{0,40}?)_(\d{1,6})\s*>")


def _norm(entity: str, number: int) -> str:
    return f"{entity.upper()}_{number}"


class Pseudonymizer:
    def __init__(self, client_texts: list[str] | tuple[str, ...] = ()) -> None:
        # Placeholders the client wrote itself are reserved: never issued, never restored.
        self._reserved = {_norm(m.group(1), int(m.group(2))) for t in client_texts for m in _ANY.finditer(t)}
        self._by_value: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}  # normalised placeholder -> original value
        self._counters: dict[str, int] = {}

    def placeholder(self, entity: str, value: str) -> str:
        """The placeholder for ``value`` of type ``entity`` (the same one for the same value)."""
        key = (entity, value)
        found = self._by_value.get(key)
        if found is not None:
            return found
        number = self._counters.get(entity, 0)
        while True:
            number += 1
            name = _norm(entity, number)
            if name not in self._reserved:
                break
        self._counters[entity] = number
        token = f"<{entity}_{number}>"
        self._by_value[key] = token
        self._values[name] = value
        return token

    @property
    def issued(self) -> int:
        return len(self._values)

    def restore(self, text: str) -> str:
        """``text`` with every placeholder this request issued replaced by its value."""
        if not self._values:
            return text

        def swap(m: re.Match[str]) -> str:
            return self._values.get(_norm(m.group(1), int(m.group(2))), m.group(0))

        return _ANY.sub(swap, text)


def partial_placeholder_start(text: str, start: int) -> int | None:
    """Where a placeholder that may still be completing begins in ``text[start:]``, if any: an
    opening ``<`` near the end with no ``>`` after it. A stream holds text back from there."""
    lt = text.rfind("<", max(start, len(text) - MAX_PLACEHOLDER_CHARS))
    if lt == -1 or ">" in text[lt:]:
        return None
    return lt
