from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from gateway.limits.config import LimitsConfig, LimitValues
from gateway.limits.values import Limits

EXAMPLE = """
backend: redis
redis_url: redis://:s3cret@cache.internal:6379/0
key_prefix: "prod:limits:"
on_store_error: allow_unlimited
timeout_s: 0.1
default_principal: {rpm: 60, tpm: 20000}
default_tenant: {rpm: 600, tpm: 200000, daily_tokens: 5000000}
tenants:
  acme: {rpm: 1200, daily_tokens: 10000000}
  sandbox: {}
"""


def test_defaults() -> None:
    config = LimitsConfig()

    assert config.backend == "memory"
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.key_prefix == "llmos:limits:"
    assert config.on_store_error == "deny"
    assert config.timeout_s == 0.25
    assert config.tenants == {}
    assert config.default_tenant is None
    assert config.default_principal is None
    assert LimitsConfig.single_process() == config


def test_a_full_section_parses() -> None:
    config = LimitsConfig.model_validate(yaml.safe_load(EXAMPLE))

    assert config.backend == "redis"
    assert config.tenants["acme"].to_limits() == Limits(rpm=1200, daily_tokens=10_000_000)
    assert config.tenants["sandbox"].to_limits().unlimited
    assert config.default_principal == LimitValues(rpm=60, tpm=20_000)


def test_shared_constructor() -> None:
    config = LimitsConfig.shared("redis://cache:6379/1", on_store_error="deny")

    assert (config.backend, config.redis_url) == ("redis", "redis://cache:6379/1")


def test_frozen() -> None:
    config = LimitsConfig()
    with pytest.raises(ValidationError):
        config.backend = "redis"


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"backends": "memory"}, "backends"),
        ({"backend": "memcached"}, "backend"),
        ({"on_store_error": "allow"}, "on_store_error"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"key_prefix": ""}, "key_prefix"),
        ({"tenants": {"acme": {"rpm": 0}}}, "tenants.acme.rpm"),
        ({"tenants": {"acme": {"rpm": "60"}}}, "tenants.acme.rpm"),
        ({"tenants": {"acme": {"rpm": True}}}, "tenants.acme.rpm"),
        ({"tenants": {"acme": {"requests": 1}}}, "tenants.acme.requests"),
        ({"tenants": {"bad tenant!": {"rpm": 1}}}, "tenants"),
        ({"default_tenant": {"tpm": -1}}, "default_tenant.tpm"),
        ({"default_principal": {"daily_tokens": 1.5}}, "default_principal.daily_tokens"),
    ],
)
def test_bad_values_are_refused_naming_the_key(data: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        LimitsConfig.model_validate(data)

    assert ".".join(str(p) for p in info.value.errors()[0]["loc"]) == where


@pytest.mark.parametrize(
    "url",
    ["http://:s3cret@cache:6379", "redis://:s3cret@", "redis://:s3cret@cache:99999/0", "s3cret"],
)
def test_a_bad_redis_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        LimitsConfig(redis_url=url)

    assert "s3cret" not in info.value.errors()[0]["msg"]


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6379/0", "rediss://user:pw@cache.internal:6380/2", "unix:///run/redis/redis.sock"],
)
def test_good_redis_urls(url: str) -> None:
    assert LimitsConfig(redis_url=url).redis_url == url
