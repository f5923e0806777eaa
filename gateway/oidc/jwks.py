"""A thread-safe cache of one issuer's verification keys, fetched through the ``Fetch`` seam.

Policy (every age is measured with the verifier's clock):

* Keys are fetched on first use, and again once older than ``jwks_cache_s``: a key the IdP
  stops publishing stops being accepted within that time.
* A token whose ``kid`` is not in the cached set triggers a refetch, but fetch attempts are
  at most one per ``jwks_refresh_min_interval_s`` per issuer, so forged kids cannot flood the
  IdP; in between, the unknown kid is refused.
* With ``discovery`` (and no ``jwks_uri``), each refresh first reads the issuer's discovery
  document, whose ``issuer`` must equal the configured one, then the JWKS it names.
* If a refresh fails, keys already cached stay in use (stale-while-error) until they are
  ``jwks_max_stale_s`` old (default 24 h); then they are dropped. With no usable keys, the
  caller gets ``ServiceUnavailable`` (503 ``idp_unavailable``, Retry-After 1). Failed attempts
  are rate-limited like any other, so a down IdP costs one request per interval, not one per
  token.

Readers never lock: the current ``_Snapshot`` is immutable and replaced whole. Refreshes are
serialised by a lock, and a thread that waited on it reuses a refresh another thread just did.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from gateway.oidc.config import OidcIssuerConfig
from gateway.oidc.errors import IdpError, idp_unavailable
from gateway.oidc.fetch import Fetch, jwks_uri_from_discovery
from gateway.oidc.keys import KeyRing, VerificationKey, parse_jwks

log = logging.getLogger("llmos.gateway")


@dataclass(frozen=True)
class _Snapshot:
    ring: KeyRing
    fetched_at: float


class IssuerKeys:
    """The verification keys of one issuer, fetched and refreshed as the policy above says."""

    def __init__(self, config: OidcIssuerConfig, fetch: Fetch, clock: Callable[[], float]) -> None:
        self.config = config
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._last_attempt: float | None = None

    def key_for(self, kid: str | None, alg: str) -> VerificationKey | None:
        """The key for ``kid`` and ``alg`` (``None``: no such key), refreshing as needed.

        Raises ``ServiceUnavailable`` when no keys are cached and none can be fetched.
        """
        now = self._clock()
        snap = self._snapshot
        if snap is not None and now - snap.fetched_at < self.config.jwks_cache_s:
            key = snap.ring.find(kid, alg)
            if key is not None or not self._attempt_due(now):
                return key
        return self._refresh(seen=snap, now=now).ring.find(kid, alg)

    def refresh(self) -> KeyRing:
        """Fetch now if the rate limit allows (startup warm-up); the keys then in use."""
        return self._refresh(seen=self._snapshot, now=self._clock()).ring

    @property
    def ring(self) -> KeyRing | None:
        """The keys cached now, if any (for status pages and tests)."""
        snap = self._snapshot
        return None if snap is None else snap.ring

    def _attempt_due(self, now: float) -> bool:
        last = self._last_attempt
        # A clock that went backwards counts as "long ago" rather than blocking refreshes.
        return last is None or now < last or now - last >= self.config.jwks_refresh_min_interval_s

    def _refresh(self, seen: _Snapshot | None, now: float) -> _Snapshot:
        with self._lock:
            current = self._snapshot
            if (
                current is not None
                and current is not seen
                and now - current.fetched_at < self.config.jwks_cache_s
            ):
                return current  # another thread refreshed while this one waited
            error: IdpError | None = None
            if self._attempt_due(now):
                self._last_attempt = now
                try:
                    ring = self._download()
                except IdpError as exc:
                    log.warning("OIDC: cannot refresh the keys of %s: %s", self.config.issuer, exc)
                    error = exc
                else:
                    self._snapshot = _Snapshot(ring=ring, fetched_at=now)
                    return self._snapshot
            if current is not None and now - current.fetched_at < self.config.jwks_max_stale_s:
                return current  # stale-while-error (or rate-limited): keep the keys we have
            if current is not None:
                log.error(
                    "OIDC: dropping the keys of %s: not refreshed for %.0f s (jwks_max_stale_s)",
                    self.config.issuer,
                    now - current.fetched_at,
                )
                self._snapshot = None
            raise idp_unavailable() from error

    def _download(self) -> KeyRing:
        cfg = self.config
        uri = cfg.jwks_uri
        if uri is None:
            source = cfg.discovery_url
            uri = jwks_uri_from_discovery(self._fetch(source, cfg.http_timeout_s), cfg.issuer, source)
        ring = parse_jwks(self._fetch(uri, cfg.http_timeout_s), uri)
        if not ring.keys:
            log.warning("OIDC: %s publishes no usable signing key; its tokens will be refused", uri)
        return ring
