"""The ``limits:`` section of llmos.yaml: typed, frozen, unknown keys refused (docs/limits.md)."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from gateway.limits.values import Limits, OnStoreError

TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"  # as `llmos keys create --tenant` accepts
_REDIS_SCHEMES = ("redis", "rediss", "unix")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LimitValues(_Section):
    """Limits of one principal or tenant; a missing or null value is unlimited."""

    rpm: StrictInt | None = Field(default=None, ge=1)  # requests per minute
    tpm: StrictInt | None = Field(default=None, ge=1)  # prompt + completion tokens per minute
    daily_tokens: StrictInt | None = Field(default=None, ge=1)  # tokens per UTC calendar day

    def to_limits(self) -> Limits:
        return Limits(rpm=self.rpm, tpm=self.tpm, daily_tokens=self.daily_tokens)


class LimitsConfig(_Section):
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field(default="llmos:limits:", min_length=1, max_length=128)
    # deny: 503 limits_unavailable while the store fails. allow_unlimited: admit without limits.
    on_store_error: OnStoreError = "deny"
    timeout_s: float = Field(default=0.25, gt=0, le=10)
    tenants: dict[str, LimitValues] = Field(default_factory=dict)
    default_tenant: LimitValues | None = None  # for tenants not listed in `tenants`
    default_principal: LimitValues | None = None  # for principals without limits of their own

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        # The URL may hold a password: never echo it.
        parts = urlsplit(url)
        if parts.scheme not in _REDIS_SCHEMES:
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("the Redis URL has no host")
        try:
            parts.port  # noqa: B018 - parsing is the check
        except ValueError as exc:
            raise ValueError("the Redis URL has a bad port") from exc
        return url

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, tenants: dict[str, LimitValues]) -> dict[str, LimitValues]:
        bad = sorted(name for name in tenants if not re.fullmatch(TENANT_PATTERN, name))
        if bad:
            raise ValueError(f"invalid tenant name(s): {', '.join(repr(b[:70]) for b in bad)}")
        return tenants

    @classmethod
    def single_process(cls) -> LimitsConfig:
        """In-memory limits, for one gateway process (the default)."""
        return cls()

    @classmethod
    def shared(cls, redis_url: str, **values: object) -> LimitsConfig:
        """Limits shared through Redis by several replicas."""
        return cls.model_validate({"backend": "redis", "redis_url": redis_url, **values})
