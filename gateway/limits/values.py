"""The value types of the limits package: what is limited, for whom, and why a request was refused.

This module imports nothing from llmos, so every other module (and the pipeline) may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["principal", "tenant"]
# rpm: requests per minute; tpm: tokens per minute; daily_tokens: tokens per UTC calendar day.
Kind = Literal["rpm", "tpm", "daily_tokens"]
KINDS: tuple[Kind, ...] = ("rpm", "tpm", "daily_tokens")
# What a store does when its backend fails: refuse with 503, or admit without limits.
OnStoreError = Literal["deny", "allow_unlimited"]


@dataclass(frozen=True)
class Limits:
    """The limits of one principal or tenant; None is unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    daily_tokens: int | None = None

    def __post_init__(self) -> None:
        for kind in KINDS:
            value = getattr(self, kind)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{kind} must be a whole number of at least 1, or None; got {value!r}")

    def get(self, kind: Kind) -> int | None:
        value: int | None = getattr(self, kind)
        return value

    @property
    def unlimited(self) -> bool:
        return self.rpm is None and self.tpm is None and self.daily_tokens is None


@dataclass(frozen=True)
class Subject:
    """One holder of limits that a request counts against: a principal or a tenant."""

    scope: Scope
    id: str  # principal id ("key:0123...", "oidc:..."), or the tenant name
    limits: Limits

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("a limit subject needs a non-empty id")


@dataclass(frozen=True)
class Check:
    """One bucket to consult: a subject's limit of one kind (never an unlimited one)."""

    subject: Subject
    kind: Kind
    limit: int


@dataclass(frozen=True)
class Refusal:
    """Why a request is not admitted, and how long until it would be."""

    check: Check
    retry_after: int  # whole seconds, at least 1


@dataclass(frozen=True)
class StoreFailures:
    """Counts of store errors since start (the memory store never has any)."""

    admit_errors: int = 0  # admit calls that failed on the store (denied, or admitted unlimited)
    admitted_unlimited: int = 0  # of those, admitted anyway (on_store_error: allow_unlimited)
    charge_errors: int = 0  # charges lost to a store error (logged and dropped)
