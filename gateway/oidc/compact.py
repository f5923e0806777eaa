"""Pure parsing of a JWS compact serialization, before anything in it is trusted.

``parse_unverified`` splits a token into its header and claims so the verifier can pick the
issuer, the algorithm and the key; nothing it returns is believed until the signature checks.
It is strict: exactly three canonical base64url segments (no padding, no spare bits; only the
signature may be empty), the first two each a UTF-8 JSON object without duplicate names, NaN or
Infinity. Canonical encoding makes tokens non-malleable: one token has exactly one spelling.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

_SEGMENT = r"[A-Za-z0-9_-]+"
# The signature may be empty so that an unsigned ("alg": "none") token parses and is then
# refused for its algorithm, which is the more useful reason to record.
_COMPACT = re.compile(rf"({_SEGMENT})\.({_SEGMENT})\.([A-Za-z0-9_-]*)")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class MalformedToken(ValueError):
    """The text is no well-formed JWS compact serialization (carries no token text)."""


@dataclass(frozen=True)
class Unverified:
    """A token's header and claims, not yet verified, and what its signature covers."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes  # the ASCII of "<header>.<claims>"
    signature: bytes


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has the shape of a JWS compact serialization.

    A cheap test to route a bearer credential to JWT verification rather than API-key lookup
    (``sk-llmos-...`` keys contain no dots).
    """
    return _COMPACT.fullmatch(token) is not None


def b64url_decode(segment: str) -> bytes:
    """Decode canonical unpadded base64url; ``ValueError`` for anything else."""
    if len(segment) % 4 == 1 or not _BASE64URL.fullmatch(segment):
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
    if base64.urlsafe_b64encode(data).rstrip(b"=") != segment.encode("ascii"):
        raise ValueError("not canonical base64url")
    return data


def parse_unverified(token: str) -> Unverified:
    """The header and claims of ``token``; ``MalformedToken`` when it is not a well-formed JWS."""
    match = _COMPACT.fullmatch(token)
    if match is None:
        raise MalformedToken("not three base64url segments")
    try:
        header = _json_object(b64url_decode(match.group(1)))
        claims = _json_object(b64url_decode(match.group(2)))
        sig = b64url_decode(match.group(3))
    except ValueError:
        raise MalformedToken("a segment is not canonical base64url of a JSON object") from None
    signing_input = token[: match.end(2)].encode("ascii")
    return Unverified(header=header, claims=claims, signing_input=signing_input, signature=sig)


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(
            data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError("not JSON") from exc
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
