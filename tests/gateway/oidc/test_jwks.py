"""The key cache's policy, with a counting fake ``Fetch`` and an injected clock."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from gateway.errors import ServiceUnavailable
from gateway.oidc.errors import IdpError
from gateway.oidc.jwks import IssuerKeys
from tests.gateway.oidc.conftest import FakeClock, StaticFetch, issuer_config
from tests.gateway.oidc.idp import generate_key, public_jwk

ISSUER = "https://idp.example"
JWKS = ISSUER + "/keys"
DISCOVERY = ISSUER + "/.well-known/openid-configuration"


def cache(fetch: Any, clock: FakeClock, **overrides: Any) -> IssuerKeys:
    fields: dict[str, Any] = {"jwks_uri": JWKS, "jwks_cache_s": 300, "jwks_refresh_min_interval_s": 10}
    fields.update(overrides)
    return IssuerKeys(issuer_config(ISSUER, **fields), fetch, clock)


def publish(fetch: StaticFetch, *kids: str) -> None:
    fetch.documents[JWKS] = {"keys": [public_jwk(generate_key("EC", kid=k)) for k in kids]}


def test_first_use_fetches_then_serves_from_cache(clock: FakeClock) -> None:
    fetch = StaticFetch()
    publish(fetch, "a")
    keys = cache(fetch, clock)
    for _ in range(5):
        assert keys.key_for("a", "ES256") is not None
    assert fetch.count(JWKS) == 1


def test_refetch_after_cache_expiry_drops_removed_keys(clock: FakeClock) -> None:
    fetch = StaticFetch()
    publish(fetch, "a", "b")
    keys = cache(fetch, clock)
    assert keys.key_for("a", "ES256") is not None
    publish(fetch, "b")  # "a" retired at the IdP
    clock.advance(299)
    assert keys.key_for("a", "ES256") is not None  # still cached
    clock.advance(1)
    assert keys.key_for("a", "ES256") is None
    assert keys.key_for("b", "ES256") is not None
    assert fetch.count(JWKS) == 2


def test_unknown_kid_refetches_once_per_interval(clock: FakeClock) -> None:
    fetch = StaticFetch()
    publish(fetch, "a")
    keys = cache(fetch, clock)
    keys.key_for("a", "ES256")
    clock.advance(10)
    for i in range(50):  # a flood of forged kids
        assert keys.key_for(f"forged-{i}", "ES256") is None
    assert fetch.count(JWKS) == 2  # the first fetch, then one refetch
    clock.advance(9.9)
    assert keys.key_for("forged-x", "ES256") is None
    assert fetch.count(JWKS) == 2
    clock.advance(0.1)
    assert keys.key_for("forged-y", "ES256") is None
    assert fetch.count(JWKS) == 3


def test_new_kid_found_by_refetch(clock: FakeClock) -> None:
    fetch = StaticFetch()
    publish(fetch, "a")
    keys = cache(fetch, clock)
    keys.key_for("a", "ES256")
    publish(fetch, "a", "b")
    clock.advance(10)
    assert keys.key_for("b", "ES256") is not None
    assert keys.key_for("a", "ES256") is not None
    assert fetch.count(JWKS) == 2


def test_new_kid_right_after_a_fetch_waits_for_the_interval(clock: FakeClock) -> None:
    fetch = StaticFetch()
    publish(fetch, "a")
    keys = cache(fetch, clock)
    keys.key_for("a", "ES256")
    publish(fetch, "a", "b")
    clock.advance(1)
    assert keys.key_for("b", "ES256") is None  # rate-limited
    clock.advance(9)
    assert keys.key_for("b", "ES256") is not None


def test_idp_down_with_no_keys_is_service_unavailable(clock: FakeClock) -> None:
    fetch = StaticFetch(down=True)
    keys = cache(fetch, clock)
    with pytest.raises(ServiceUnavailable) as info:
        keys.key_for("a", "ES256")
    err = info.value
    assert (err.status, err.code, err.retry_after) == (503, "idp_unavailable", 1)
    assert JWKS not in err.message  # the operator detail stays in the log and the cause
    assert isinstance(err.__cause__, IdpError)


def test_failed_attempts_are_rate_limited_too(clock: FakeClock) -> None:
    fetch = StaticFetch(down=True)
    keys = cache(fetch, clock)
    for _ in range(20):
        with pytest.raises(ServiceUnavailable):
            keys.key_for("a", "ES256")
    assert fetch.count(JWKS) == 1
    clock.advance(10)
    fetch.down = False
    publish(fetch, "a")
    assert keys.key_for("a", "ES256") is not None
    assert fetch.count(JWKS) == 2


def test_stale_keys_are_used_while_the_idp_is_down(clock: FakeClock) -> None:
    fetch = StaticFetch()
    publish(fetch, "a")
    keys = cache(fetch, clock, jwks_max_stale_s=3600)
    keys.key_for("a", "ES256")
    fetch.down = True
    clock.advance(301)
    assert keys.key_for("a", "ES256") is not None  # refresh failed: stale-while-error
    clock.advance(3600 - 301 - 1)
    assert keys.key_for("a", "ES256") is not None
    clock.advance(1)
    with pytest.raises(ServiceUnavailable):
        keys.key_for("a", "ES256")
    assert keys.ring is None  # dropped
    fetch.down = False
    clock.advance(10)
    assert keys.key_for("a", "ES256") is not None


def test_a_broken_jwks_document_counts_as_a_failure(clock: FakeClock) -> None:
    fetch = StaticFetch()
    publish(fetch, "a")
    keys = cache(fetch, clock)
    keys.key_for("a", "ES256")
    fetch.documents[JWKS] = b"<html>oops</html>"
    clock.advance(300)
    assert keys.key_for("a", "ES256") is not None  # stale-while-error, not an empty set


def test_an_empty_jwks_refuses_everything(clock: FakeClock) -> None:
    fetch = StaticFetch()
    publish(fetch)
    keys = cache(fetch, clock)
    assert keys.key_for("a", "ES256") is None
    assert keys.key_for(None, "ES256") is None


def test_discovery_finds_the_jwks(clock: FakeClock) -> None:
    fetch = StaticFetch({DISCOVERY: {"issuer": ISSUER, "jwks_uri": JWKS}})
    publish(fetch, "a")
    keys = cache(fetch, clock, jwks_uri=None)
    assert keys.key_for("a", "ES256") is not None
    assert (fetch.count(DISCOVERY), fetch.count(JWKS)) == (1, 1)


@pytest.mark.parametrize(
    "document",
    [
        {"issuer": "https://evil.example", "jwks_uri": JWKS},
        {"issuer": ISSUER + "/", "jwks_uri": JWKS},  # exact match only
        {"jwks_uri": JWKS},
        {"issuer": ISSUER},
        {"issuer": ISSUER, "jwks_uri": "http://keys.example/jwks"},  # not https
        {"issuer": ISSUER, "jwks_uri": 5},
        ["not", "an", "object"],
    ],
)
def test_a_bad_discovery_document_is_refused(clock: FakeClock, document: Any) -> None:
    fetch = StaticFetch({DISCOVERY: document})
    publish(fetch, "a")
    keys = cache(fetch, clock, jwks_uri=None)
    with pytest.raises(ServiceUnavailable):
        keys.key_for("a", "ES256")
    assert fetch.count(JWKS) == 0


def test_explicit_jwks_uri_skips_discovery(clock: FakeClock) -> None:
    fetch = StaticFetch()
    publish(fetch, "a")
    keys = cache(fetch, clock, discovery=True)
    keys.key_for("a", "ES256")
    assert fetch.calls == [JWKS]


def test_refresh_for_warm_up(clock: FakeClock) -> None:
    fetch = StaticFetch()
    publish(fetch, "a", "b")
    keys = cache(fetch, clock)
    assert keys.ring is None
    assert keys.refresh().kids == ("a", "b")
    assert keys.ring is not None and len(keys.ring) == 2


def test_clock_going_backwards_does_not_block_refreshes(clock: FakeClock) -> None:
    fetch = StaticFetch()
    publish(fetch, "a")
    keys = cache(fetch, clock)
    keys.key_for("a", "ES256")
    publish(fetch, "a", "b")
    clock.advance(-3600)
    assert keys.key_for("b", "ES256") is not None


class SlowFetch(StaticFetch):
    def __call__(self, url: str, timeout_s: float) -> bytes:
        time.sleep(0.05)
        return super().__call__(url, timeout_s)


def test_concurrent_misses_share_one_fetch(clock: FakeClock) -> None:
    fetch = SlowFetch()
    publish(fetch, "a")
    keys = cache(fetch, clock)
    results: list[object] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(keys.key_for("a", "ES256"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert len(results) == 8 and all(r is not None for r in results)
    assert fetch.count(JWKS) == 1
