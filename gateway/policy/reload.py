"""Load the policy engine at startup, and reload it while the gateway runs.

    load_policy(config)   the engine ``policy.engine`` names, checked before it is used:
                          rego: load bundle -> verify .signature (with policy.public_key)
                                -> compile -> Rego tests (with policy.run_tests_on_load)
                          opa:  OpaEngine.from_config(policy.opa)

    PolicyReloader        on a change in the policy directory (``policy.watch``) or on SIGHUP,
                          builds a new engine with ``load_policy`` off the event loop and, only
                          if every step passed, swaps it in with one assignment
                          (``pipeline.policy = new``). A broken policy never replaces a working
                          one: the error (file and line) is logged, kept in ``last_error`` and
                          counted in ``failures``, and the policy in force keeps serving. For
                          the opa engine a reload is ``refresh()``: re-reading OPA's digest.

A request that is being decided while a reload swaps the engine finishes with the engine it
already holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from watchfiles import Change, awatch

from gateway.config import Config
from gateway.errors import ConfigError, LlmosError, PolicyError
from gateway.policy.bundle import PolicyBundle, load_bundle
from gateway.policy.engine import PolicyEngine, RegoEngine
from gateway.policy.signing import SIGNATURE_FILE, load_verify_key, verify_bundle
from gateway.policy.testcache import PassedTests
from gateway.policy.testing import PolicyTestResult, failed_tests_isolated

log = logging.getLogger("llmos.gateway")

# A burst of file events is acted on once it has been quiet for WATCH_STEP_MS, or at the
# latest WATCH_DEBOUNCE_MS after its first event.
WATCH_STEP_MS = 200
WATCH_DEBOUNCE_MS = 1000
_MAX_LOCATIONS = 3


# -- loading ----------------------------------------------------------------------------------
def load_policy(config: Config) -> PolicyEngine:
    """Build the configured engine; raises ``PolicyError``/``ConfigError`` naming file and line."""
    settings = config.policy
    if settings.engine == "opa":
        if settings.public_key is not None:
            raise ConfigError(
                "policy.public_key: bundle signatures are checked for policy.engine: rego only;"
                " with an OPA server, sign and verify bundles in OPA"
            )
        from gateway.policy.opa import OpaEngine  # loads requests and opa_client only when used

        return OpaEngine.from_config(settings.opa)
    bundle = load_bundle(config.policy_dir)
    if settings.public_key is not None:
        verify_bundle(bundle, load_verify_key(settings.public_key))
    try:
        # Compile first: a syntax error is reported as such, not as every test failing.
        engine = RegoEngine(bundle, settings.query, settings.output_query, cache_size=settings.decision_cache)
        # With the policy disabled (unsafe_disable) it decides nothing: no point testing it.
        run_tests = settings.run_tests_on_load and "policy" not in config.unsafe_disable
        failures = tested(bundle, config.state_dir) if run_tests else []
    except PolicyError as exc:
        located = _with_locations(bundle, exc)
        if located is None:
            raise
        raise located from exc
    if failures:
        names = ", ".join(f"{f.file}:{f.name}" for f in failures)
        raise PolicyError(f"{config.policy_dir}: policy tests failed: {names}", code="policy_tests_failed")
    if settings.decision_cache and not engine.cache.enabled:
        log.info("policy decision cache off: %s", engine.cache.reason)
    return engine


def tested(bundle: PolicyBundle, state_dir: Path) -> list[PolicyTestResult]:
    """The bundle's failed tests, run in a child process unless this exact bundle already passed
    with this engine (``gateway.policy.testcache``)."""
    passed = PassedTests(state_dir / "policy-tests.json")
    if passed.known(bundle.digest):
        return []
    failures = failed_tests_isolated(bundle)
    if not failures:
        passed.record(bundle.digest)
    return failures


def describe_source(config: Config) -> str:
    """Where the policy comes from, for log lines."""
    if config.policy.engine == "opa":
        return f"OPA at {config.policy.opa.url}"
    return str(config.policy_dir)


# rego-cpp (regopy 1.5.2) reports a parse error as an s-expression, with length-prefixed
# strings and byte offsets: (error 11:broken.rego|48|2 (errormsg 24:Invalid boolean operator) ..)
# and prints the readable form ("-- broken.rego:5:5") to stdout; both forms are read here.
_SEXP_ERROR = re.compile(r"\(error (\d+):")
_SEXP_SPAN = re.compile(r"\|(\d+)\|\d+")
_SEXP_MESSAGE = re.compile(r"\(errormsg (\d+):")
_READABLE = re.compile(r"([^\n]*)\n-- ([^\s:]+):(\d+):(\d+)")


@dataclass(frozen=True, order=True)
class _Location:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.message}"


def _line_column(source: bytes, offset: int) -> tuple[int, int]:
    before = source[:offset]
    line_start = before.rfind(b"\n") + 1
    return before.count(b"\n") + 1, len(before[line_start:].decode("utf-8", "replace")) + 1


def rego_error_locations(bundle: PolicyBundle, text: str) -> list[str]:
    """``file:line:column: message`` for each error rego-cpp reported in ``text``."""
    sources = {f.path: f.source.encode("utf-8") for f in bundle.files}
    found: set[_Location] = set()
    starts = list(_SEXP_ERROR.finditer(text))
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        name_end = match.end() + int(match.group(1))
        name, rest = text[match.end() : name_end], text[name_end:end]
        span = _SEXP_SPAN.match(rest)
        message = _SEXP_MESSAGE.search(rest)
        what = rest[message.end() : message.end() + int(message.group(1))] if message else "error"
        line = column = 0
        if span is not None and name in sources:
            line, column = _line_column(sources[name], int(span.group(1)))
        found.add(_Location(name, line, column, what))
    for m in _READABLE.finditer(text):
        found.add(_Location(m.group(2), int(m.group(3)), int(m.group(4)), m.group(1).strip() or "error"))
    return [str(loc) for loc in sorted(found)]


def _with_locations(bundle: PolicyBundle, exc: PolicyError) -> PolicyError | None:
    locations = rego_error_locations(bundle, str(exc))
    if not locations:
        return None
    more = len(locations) - _MAX_LOCATIONS
    shown = "; ".join(locations[:_MAX_LOCATIONS]) + (f" (and {more} more)" if more > 0 else "")
    return PolicyError(f"{bundle.root}: policy does not compile: {shown}", code=exc.code)


# -- reloading --------------------------------------------------------------------------------
class PolicyHolder(Protocol):
    """What the reloader keeps current: ``Pipeline`` (every request reads ``.policy``)."""

    policy: PolicyEngine


@runtime_checkable
class _Refreshable(Protocol):
    def refresh(self) -> str: ...


@runtime_checkable
class _Closable(Protocol):
    def close(self) -> None: ...


def close_engine(engine: PolicyEngine) -> None:
    """Release what an engine holds (OPA's connections); the embedded engine holds nothing."""
    if isinstance(engine, _Closable):
        engine.close()


def _is_policy_file(_: Change, path: str) -> bool:
    name = os.path.basename(path)
    return name == SIGNATURE_FILE or name.endswith((".rego", ".json"))


class PolicyReloader:
    """Keeps ``holder.policy`` current with the policy on disk (or on the OPA server).

    ``start()`` and ``stop()`` run on the event loop (the app lifespan). ``reload()`` may also
    be awaited directly. For operators: ``digest`` (the policy in force), ``reloads`` (policies
    swapped in), ``failures`` (reloads refused) and ``last_error`` (why the latest reload was
    refused; None again once one succeeds).
    """

    def __init__(
        self, config: Config, holder: PolicyHolder, *, loader: Callable[[Config], PolicyEngine] = load_policy
    ) -> None:
        self._config = config
        self._holder = holder
        self._load = loader
        self.reloads = 0
        self.failures = 0
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        self._reasons: set[str] = set()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sighup: tuple[asyncio.AbstractEventLoop, signal.Signals, Any] | None = None

    @property
    def digest(self) -> str:
        return self._holder.policy.digest

    @property
    def watching(self) -> bool:
        return any(t.get_name() == "llmos-policy-watch" and not t.done() for t in self._tasks)

    @property
    def sighup(self) -> bool:
        """Whether SIGHUP reloads (a Unix main thread only)."""
        return self._sighup is not None

    def request_reload(self, reason: str = "request") -> None:
        """Ask for a reload soon. Call on the event loop's thread; requests that arrive while a
        reload runs are served by one more reload after it."""
        self._reasons.add(reason)
        self._wanted.set()

    async def reload(self, reason: str = "request") -> bool:
        """Build a new engine and swap it in; on any failure keep the one in force.

        True when the policy in force is now the one on disk (changed or not)."""
        async with self._lock:
            old = self._holder.policy
            old_digest = old.digest
            new: PolicyEngine
            try:
                if self._config.policy.engine == "opa" and isinstance(old, _Refreshable):
                    await asyncio.to_thread(old.refresh)
                    new = old
                else:
                    new = await asyncio.to_thread(self._load, self._config)
            except LlmosError as exc:
                return self._refused(old_digest, reason, str(exc))
            except Exception as exc:  # a bug while loading: keep serving, keep reloading
                log.exception("policy reload (%s) failed unexpectedly", reason)
                return self._refused(old_digest, reason, f"{exc.__class__.__name__}: {exc}")
            self.last_error = None
            if new.digest == old_digest:
                log.info("policy %s unchanged (%s)", old_digest, reason)
                return True
            self._holder.policy = new  # the swap: requests from now on use the new engine
            self.reloads += 1
            log.info("policy %s -> %s (%s)", old_digest, new.digest, reason)
            return True

    def _refused(self, old_digest: str, reason: str, message: str) -> bool:
        self.failures += 1
        self.last_error = message
        log.error("policy reload (%s) refused; still serving policy %s: %s", reason, old_digest, message)
        return False

    async def start(self) -> None:
        """Listen for SIGHUP and, with ``policy.watch``, watch the policy directory."""
        if self._tasks:
            return
        self._stop.clear()
        self._install_sighup()
        watch = self._config.policy.watch and self._config.policy.engine == "rego"
        if watch:
            # Created first, so that the directory is watched before the catch-up check below.
            self._tasks.append(asyncio.create_task(self._watch(), name="llmos-policy-watch"))
        self._tasks.append(
            asyncio.create_task(self._serve_requests(catch_up=watch), name="llmos-policy-reload")
        )

    async def stop(self) -> None:
        """Stop listening and watching; a reload in progress is abandoned (nothing is swapped)."""
        self._remove_sighup()
        self._stop.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve_requests(self, *, catch_up: bool) -> None:
        if catch_up and await asyncio.to_thread(self._changed_on_disk):
            self.request_reload("changed before start")
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            reasons, self._reasons = self._reasons, set()
            await self.reload(", ".join(sorted(reasons)) or "request")

    def _changed_on_disk(self) -> bool:
        """Whether the directory differs from the policy in force (edited since it was loaded)."""
        try:
            return load_bundle(self._config.policy_dir).digest != self.digest
        except PolicyError:
            return True  # broken now: the reload says how

    async def _watch(self) -> None:
        root = self._config.policy_dir
        try:
            async for _ in awatch(
                root,
                watch_filter=_is_policy_file,
                step=WATCH_STEP_MS,
                debounce=WATCH_DEBOUNCE_MS,
                stop_event=self._stop,
            ):
                self.request_reload("change")
        except Exception as exc:  # e.g. the directory was removed: SIGHUP still reloads
            log.error(
                "stopped watching %s for policy changes (%s: %s); send SIGHUP to reload",
                root,
                exc.__class__.__name__,
                exc,
            )

    def _install_sighup(self) -> None:
        sig = getattr(signal, "SIGHUP", None)
        if sig is None:
            return
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, self.request_reload, "SIGHUP")
        except (NotImplementedError, RuntimeError, ValueError) as exc:  # not a Unix main thread
            log.debug("SIGHUP does not reload the policy here: %s", exc)
            return
        self._sighup = (loop, sig, previous)

    def _remove_sighup(self) -> None:
        if self._sighup is None:
            return
        loop, sig, previous = self._sighup
        self._sighup = None
        loop.remove_signal_handler(sig)
        if previous is not None:
            signal.signal(sig, previous)  # e.g. SIG_IGN under nohup
