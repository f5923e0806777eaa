"""An upstream model: the pipeline calls it like a worker; it forwards to an OpenAI-compatible API.

:class:`UpstreamModel` has the worker interface the pipeline uses (``state``, ``generate``):
the request arrives already authorised, redacted and capped by policy; the answer goes back
through the same output policy, output redaction (streams too) and audit. What is specific:

- one pooled HTTP client (aiohttp: keep-alive connections up to ``max_connections``; no proxy
  from the environment, no redirects followed, so the key goes nowhere but ``base_url``);
- retries on 408, 429, 5xx and refused or dropped connections before an answer began, with
  exponential backoff and jitter, honouring ``Retry-After`` up to ``backoff_max_s``; a read
  timeout is not retried (the upstream may still be generating): 504 ``upstream_timeout``;
- streams pass through chunk by chunk: each upstream delta is one event (the output guard may
  hold some back to redact across chunk boundaries);
- canary values (``canary_file``) are checked here, before anything leaves the gateway, as a
  local worker checks them inside its sandbox;
- errors are the client's OpenAI errors from :func:`gateway.upstream.wire.status_error`; the
  upstream's bodies and the key never reach the client or the log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import ssl
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import aiohttp

from gateway.config import UpstreamConfig
from gateway.errors import (
    ApiError,
    BadGateway,
    ConfigError,
    GatewayTimeout,
    InternalError,
    ServiceUnavailable,
)
from gateway.types import DoneEvent, GenerateEvent, GenerateRequest, TokenEvent
from gateway.upstream import wire
from gateway.upstream.keys import KeySource
from sandbox.canaries import Canaries

log = logging.getLogger("llmos.gateway")

USER_AGENT = "llmos-gateway"
CHARS_PER_TOKEN = 4  # token estimate when the upstream reports no usage


class UpstreamModel:
    """A model served by an upstream API (``models[].kind: upstream``)."""

    remote = True  # explanations: no Captum attribution for a model whose weights are elsewhere
    pinned = True  # /readyz: always counted; an upstream being down shows per request, not there

    def __init__(
        self,
        name: str,
        config: UpstreamConfig,
        *,
        keys: KeySource | None = None,
        canaries: Canaries | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.config = config
        self.model = config.model or name
        self.base_url = config.base_url.rstrip("/") + "/"
        self.keys = keys or KeySource(env=config.api_key_env, file=config.api_key_file)
        self.canaries = canaries
        self._sleep = sleep
        self._jitter = jitter
        self._tls: ssl.SSLContext | bool = True  # the system's CAs
        if config.ca_file is not None:  # read now: a missing or bad bundle fails the start
            try:
                self._tls = ssl.create_default_context(cafile=str(config.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"{config.ca_file}: not a usable CA bundle ({exc.__class__.__name__})"
                ) from exc
        self._session: aiohttp.ClientSession | None = None
        self.retried = 0  # attempts repeated (for /metrics later and the tests)

    @property
    def state(self) -> str:
        return "ready"

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            c = self.config
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=c.max_connections, ssl=self._tls, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=c.connect_timeout_s, sock_read=c.timeout_s
                ),
                trust_env=False,  # no proxy or .netrc from the environment: only what configuration names
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- generating ---------------------------------------------------------------------------

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[GenerateEvent, None]:
        if self.canaries is not None and self.canaries.tripped_by(request) is not None:
            raise InternalError(
                "Request refused before it left the gateway: a configured canary value was in it;"
                " nothing was sent upstream.",
                code="canary_tripped",
            )
        chat = request.messages is not None
        body = json.dumps(wire.request_body(request, self.model), ensure_ascii=False).encode("utf-8")
        response = await self._send(wire.path_for(request), body, request.id)
        try:
            if request.stream:
                async for event in self._stream(response, request, chat):
                    yield event
            else:
                data = await self._read(response)
                try:
                    answer = wire.parse_answer(data, chat)
                except wire.UpstreamFormatError as exc:
                    raise self._unusable(exc) from exc
                yield TokenEvent(answer.text)
                yield self._done(answer, request, answer.text)
        finally:
            response.release()

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        try:
            return await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._broken(exc) from exc

    async def _stream(
        self, response: aiohttp.ClientResponse, request: GenerateRequest, chat: bool
    ) -> AsyncGenerator[GenerateEvent, None]:
        decoder = wire.SseDecoder()
        calls = wire.ToolCallAssembler()
        parts: list[str] = []
        finish: wire.Answer | None = None
        usage: wire.Answer | None = None
        try:
            async for chunk in response.content.iter_any():
                for payload in decoder.feed(chunk):
                    if payload.strip() == "[DONE]":
                        if finish is None:
                            raise wire.UpstreamFormatError("the stream ended without a finish reason")
                        made = calls.calls()
                        merged = wire.Answer(
                            "",
                            wire.finish_with_calls(finish.raw_finish, finish.finish, bool(made)),
                            usage.prompt_tokens if usage else None,
                            usage.completion_tokens if usage else None,
                            tool_calls=made,
                        )
                        yield self._done(merged, request, "".join(parts))
                        return
                    piece = wire.parse_chunk(payload, chat)
                    if piece.text:
                        parts.append(piece.text)
                        yield TokenEvent(piece.text)
                    calls.feed(piece.call_deltas)
                    if piece.finish is not None:
                        finish = piece
                    if piece.prompt_tokens is not None or piece.completion_tokens is not None:
                        usage = piece
        except wire.UpstreamFormatError as exc:
            raise self._unusable(exc) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise self._broken(exc) from exc
        raise BadGateway("The upstream provider's stream ended before its end marker.", code="upstream_error")

    def _done(self, answer: wire.Answer, request: GenerateRequest, text: str) -> DoneEvent:
        prompt = answer.prompt_tokens
        if prompt is None:
            prompt = max(1, request.text_chars // CHARS_PER_TOKEN)
        completion = answer.completion_tokens
        if completion is None:
            chars = len(text) + sum(len(c.name) + len(c.arguments) for c in answer.tool_calls)
            completion = -(-chars // CHARS_PER_TOKEN)
        return DoneEvent(answer.finish or "stop", prompt, completion, tool_calls=answer.tool_calls)

    def _broken(self, exc: BaseException) -> ApiError:
        """The client's error for an answer whose bytes stopped coming: silence or a lost connection."""
        if isinstance(exc, TimeoutError):
            return self._timeout()
        return BadGateway(
            "The connection to the upstream provider broke during the answer.", code="upstream_error"
        )

    def _timeout(self) -> ApiError:
        return GatewayTimeout(
            f"The upstream provider sent nothing for {self.config.timeout_s:g} s.", code="upstream_timeout"
        )

    def _unusable(self, exc: wire.UpstreamFormatError) -> ApiError:
        log.warning("upstream model %s: unusable answer: %s", self.name, exc)
        return BadGateway(
            f"The upstream provider's answer was unusable: {exc}.", code="upstream_invalid_response"
        )

    # -- sending, with retries ----------------------------------------------------------------

    async def _send(self, path: str, body: bytes, request_id: str) -> aiohttp.ClientResponse:
        c = self.config
        url = self.base_url + path
        attempt = 0
        while True:
            headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
            key = self.keys.current()
            if key is not None:
                headers["Authorization"] = f"Bearer {key}"
            retry_after: float | None = None
            try:
                response = await self._client().post(url, data=body, headers=headers, allow_redirects=False)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                failure: ApiError = self._connection_error(exc)
                read_timeout = isinstance(exc, TimeoutError) and not isinstance(
                    exc, aiohttp.ConnectionTimeoutError
                )
                if read_timeout:
                    raise failure from exc  # it may be generating: do not ask twice
                status = None
            else:
                if response.status < 300:
                    return response
                status = response.status
                retry_after = wire.parse_retry_after(response.headers.get("Retry-After"), time.time())
                response.release()  # the body is the upstream's: never read into an error
                failure = (
                    BadGateway(
                        f"The upstream provider redirected (HTTP {status}); not followed.",
                        code="upstream_error",
                    )
                    if status < 400
                    else wire.status_error(status, retry_after)
                )
                log.warning("upstream model %s: HTTP %d (attempt %d)", self.name, status, attempt + 1)
                if status not in wire.RETRYABLE_STATUSES:
                    raise failure
            attempt += 1
            if attempt > c.retries:
                raise failure
            delay = wire.retry_delay(
                attempt, c.backoff_initial_s, c.backoff_max_s, retry_after, self._jitter()
            )
            if delay is None:
                raise failure
            self.retried += 1
            await self._sleep(delay)

    def _connection_error(self, exc: BaseException) -> ApiError:
        if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ConnectionTimeoutError):
            return self._timeout()
        log.warning(
            "upstream model %s: cannot reach %s (%s)", self.name, self.base_url, exc.__class__.__name__
        )
        return ServiceUnavailable(
            "The upstream provider cannot be reached.", code="upstream_unavailable", retry_after=1
        )


def upstream_info(model: UpstreamModel) -> dict[str, Any]:
    """What /admin/models shows of an upstream model (no key)."""
    return {"name": model.name, "kind": "upstream", "base_url": model.base_url, "model": model.model}
