"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/models, health probes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.api import responses as R
from gateway.api.body import read_body
from gateway.api.errors import error_body
from gateway.api.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    parse_chat_request,
    parse_completion_request,
)
from gateway.errors import ApiError, InternalError, PermissionDenied, ServiceUnavailable, WorkerError
from gateway.metrics import Stopwatch
from gateway.obligations import apply_input, finding_counts, refuse_sensitive_identifiers, request_texts
from gateway.outputguard import Decide, OutputGuard, guard_all
from gateway.pipeline import Pipeline, RequestContext, Worker, translate
from gateway.policy.input import ModelInfo, RequestSummary, estimate_tokens
from gateway.pseudonym import Pseudonymizer
from gateway.scanner import ScanFailed
from gateway.types import DoneEvent, GenerateEvent, GenerateRequest, Obligations, TokenEvent, Usage

log = logging.getLogger("llmos.gateway")

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

router = APIRouter()


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int
    max_messages: int
    default_max_tokens: dict[str, int]
    model_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def model_info(self, name: str) -> ModelInfo:
        return ModelInfo(name=name, labels=self.model_labels.get(name, ()))


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


def _limits(request: Request) -> Limits:
    limits: Limits = request.app.state.limits
    return limits


# -- health -----------------------------------------------------------------------------------


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    workers = _pipeline(request).workers
    states = {name: w.state for name, w in workers.items()}
    # Pinned models must be ready; one loaded on demand may be unloaded, loading or failing
    # without taking the gateway (and its other models) out of a load balancer's rotation.
    ready = all(w.state == "ready" for w in workers.values() if getattr(w, "pinned", True))
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "models": states}, status_code=200 if ready else 503
    )


# -- models -----------------------------------------------------------------------------------


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    pipeline = _pipeline(request)
    ctx = await pipeline.begin(request, "models.list")
    try:
        obligations = await pipeline.authorize(
            ctx, RequestSummary(endpoint="models.list"), client_address=_client(request)
        )
        names = [
            n
            for n in pipeline.workers
            if (obligations.allowed_models is None or n in obligations.allowed_models)
            and ctx.caller.allows_model(n)  # an API key scoped to some models sees only those
        ]
        body = R.model_list(names, ctx.created)
        await pipeline.finish(ctx, 200)
    except ApiError as exc:
        await pipeline.fail(ctx, exc)
        raise
    return JSONResponse(body)


# -- generation -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    """How one endpoint shapes its responses."""

    complete: Callable[[str, str, int, str, Any, Usage], dict[str, Any]]
    chunks_start: Callable[[str, str, int], list[dict[str, Any]]]
    chunk_text: Callable[[str, str, int, str], dict[str, Any]]
    chunk_final: Callable[[str, str, int, Any], dict[str, Any]]
    chunk_usage: Callable[[str, str, int, Usage], dict[str, Any]]


CHAT = _Format(
    complete=R.chat_completion,
    chunks_start=lambda rid, m, c: [R.chat_chunk(rid, m, c, delta={"role": "assistant", "content": ""})],
    chunk_text=lambda rid, m, c, t: R.chat_chunk(rid, m, c, delta={"content": t}),
    chunk_final=lambda rid, m, c, f: R.chat_chunk(rid, m, c, finish=f),
    chunk_usage=lambda rid, m, c, u: R.chat_chunk(rid, m, c, usage=u),
)

COMPLETION = _Format(
    complete=R.completion,
    chunks_start=lambda rid, m, c: [],
    chunk_text=lambda rid, m, c, t: R.completion_chunk(rid, m, c, text=t),
    chunk_final=lambda rid, m, c, f: R.completion_chunk(rid, m, c, finish=f),
    chunk_usage=lambda rid, m, c, u: R.completion_chunk(rid, m, c, usage=u),
)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await _serve(
        request,
        "chat.completions",
        CHAT,
        lambda body, lim: parse_chat_request(body, max_messages=lim.max_messages),
    )


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await _serve(request, "completions", COMPLETION, lambda body, _: parse_completion_request(body))


async def _serve(
    request: Request,
    endpoint: str,
    fmt: _Format,
    parse: Callable[[bytes, Limits], ChatCompletionRequest | CompletionRequest],
) -> Response:
    pipeline, limits = _pipeline(request), _limits(request)
    ctx = await pipeline.begin(request, endpoint)
    try:
        body = await read_body(request, limits.max_body_bytes)
        ctx.request_digest = pipeline.digest(body)
        req = parse(body, limits)
        worker = pipeline.worker_for(ctx, req.model)
        # Policy sees the max_tokens that will actually be used, defaults included.
        gen = req.generate_request(ctx.request_id, req.params(limits.default_max_tokens.get(req.model, 256)))
        texts, ids = request_texts(gen), gen.identifiers()
        scanned = await pipeline.scan(ctx, texts + ids)
        found, id_found = scanned[: len(texts)], scanned[len(texts) :]
        summary = RequestSummary(
            endpoint=endpoint,
            model=req.model,
            max_tokens=gen.params.max_tokens,
            stream=req.stream,
            message_count=req.message_count,
            estimated_input_tokens=estimate_tokens(gen.text_chars),
            parameters=req.policy_parameters(),
        )
        counts, client = finding_counts(scanned), _client(request)
        obligations = await pipeline.authorize(
            ctx, summary, model=limits.model_info(req.model), findings=counts, client_address=client
        )
        if obligations.route is not None and obligations.route != req.model:
            # Routed: the model actually used is decided on too (its labels, its tenants).
            route = obligations.route
            worker = pipeline.route(ctx, route)
            obligations = await pipeline.authorize(
                ctx,
                replace(summary, model=route),
                model=limits.model_info(route),
                findings=counts,
                client_address=client,
                rate_limit=False,
            )
        if obligations.allowed_models is not None and ctx.model not in obligations.allowed_models:
            raise PermissionDenied(
                f"Request denied by policy: model {ctx.model} is not among the models you may use"
                " [model_not_allowed]",
                code="model_not_allowed",
            )
        refuse_sensitive_identifiers(id_found, obligations)
        # Numbered placeholders for this request only; the mapping stays in this function's memory.
        pseudo = Pseudonymizer(request_texts(gen))
        gen = apply_input(gen, found, obligations, pipeline.digest_key, pseudo)
        redaction = obligations.redact
        restore = (
            pseudo.restore
            if redaction is not None and redaction.restore and redaction.operator == "placeholder"
            else None
        )
        return await _run(
            pipeline,
            ctx,
            worker,
            gen,
            fmt,
            stream=req.stream,
            include_usage=req.include_usage,
            restore=restore,
        )
    except (ApiError, WorkerError, ScanFailed) as exc:
        api = translate(exc)
        await pipeline.fail(ctx, api)
        raise api from exc
    except Exception as exc:  # a bug: record it, answer 500 without detail
        log.error("unhandled error in request %s", ctx.request_id, exc_info=exc)
        api = InternalError("The server had an error processing your request.")
        await pipeline.fail(ctx, api)
        raise api from exc


async def _run(
    pipeline: Pipeline,
    ctx: RequestContext,
    worker: Worker,
    gen: GenerateRequest,
    fmt: _Format,
    *,
    stream: bool,
    include_usage: bool,
    restore: Callable[[str], str] | None = None,
) -> Response:
    explain = pipeline.explain_settings(ctx)
    if explain is not None and getattr(worker, "remote", False):  # its weights are not ours to attribute
        explain, ctx.explain_skip = None, ("not_applicable", "remote_model")
    if explain is not None:
        gen = replace(gen, explain=explain)
    pipeline.start_generation(ctx)
    events = worker.generate(gen)
    # Wait for the first event before answering, so that a worker that is down or refuses the
    # request still produces a proper HTTP status (503/400) rather than a broken stream.
    try:
        first = await anext(events)
    except StopAsyncIteration as exc:
        raise ServiceUnavailable("The model worker returned nothing.", code="worker_error") from exc
    except BaseException:
        await events.aclose()
        raise
    ctx.model_digest = pipeline.served_digest(worker, gen.id)
    if explain is not None:
        owed = getattr(worker, "explanation", None)  # the attribution its worker will send
        ctx.explanation = owed(gen.id) if callable(owed) else None
        if ctx.explanation is None:
            ctx.explain_skip = ("not_applicable", "unsupported_model")
    model = ctx.model or ""
    decide: Decide | None = pipeline.output_decider(ctx)
    if decide is None and restore is not None:  # no output policy, but placeholders to restore
        decide = _no_output_policy
    if stream:
        try:
            await pipeline.start_stream(ctx)  # durable before the first byte, or 503
        except ApiError:
            await events.aclose()
            raise
        guard = (
            OutputGuard(decide, pipeline.digest_key, pipeline.scanner.find, restore)
            if decide is not None
            else None
        )
        return StreamingResponse(
            _sse(pipeline, ctx, first, events, fmt, include_usage, guard),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    try:
        text, done = await _collect(first, events)
    finally:
        await events.aclose()
    ctx.usage = Usage(done.prompt_tokens, done.completion_tokens)
    calls = done.tool_calls
    if decide is not None:  # the output decision sees all of it before any is delivered
        with Stopwatch() as watch:
            text, calls, ctx.output_findings, ctx.output_call_findings = await asyncio.to_thread(
                guard_all,
                decide,
                pipeline.digest_key,
                text,
                done.completion_tokens,
                done.finish_reason,
                pipeline.scanner.find,
                restore,
                calls,
            )
        pipeline.metrics.output_guard_seconds.labels("json").observe(watch.seconds)
    ctx.response_digest = pipeline.digest(R.response_bytes(text, calls))
    await pipeline.finish(ctx, 200)
    body = fmt.complete(ctx.request_id, model, ctx.created, text, done.finish_reason, ctx.usage)
    if calls:
        R.add_tool_calls(body, calls)
    return JSONResponse(body)


def _no_output_policy(findings: dict[str, int], completion_tokens: int, finish: str | None) -> Obligations:
    return Obligations()


async def _collect(
    first: GenerateEvent, events: AsyncGenerator[GenerateEvent, None]
) -> tuple[str, DoneEvent]:
    parts: list[str] = []
    event = first
    while not isinstance(event, DoneEvent):
        parts.append(event.text)
        event = await anext(events)
    return "".join(parts), event


async def _sse(
    pipeline: Pipeline,
    ctx: RequestContext,
    first: GenerateEvent,
    events: AsyncGenerator[GenerateEvent, None],
    fmt: _Format,
    include_usage: bool,
    guard: OutputGuard | None,
) -> AsyncIterator[bytes]:
    rid, model, created = ctx.request_id, ctx.model or "", ctx.created
    digest = hmac.new(pipeline.digest_key, digestmod=hashlib.sha256)

    def chunk(text: str) -> bytes:
        digest.update(text.encode("utf-8"))
        return R.sse(fmt.chunk_text(rid, model, created, text))

    try:
        for start in fmt.chunks_start(rid, model, created):
            yield R.sse(start)
        event = first
        held = 0  # the most characters the guard held back at once
        while isinstance(event, TokenEvent):
            # The guard scans in a thread: a scanner (Presidio) must not stall the event loop.
            if guard is not None:
                with Stopwatch() as watch:
                    text = await asyncio.to_thread(guard.feed, event.text)
                pipeline.metrics.output_guard_seconds.labels("stream").observe(watch.seconds)
                held = max(held, guard.held_chars)
            else:
                text = event.text
            if text:
                yield chunk(text)
            event = await anext(events)
        if guard is not None:
            pipeline.metrics.stream_holdback_chars.observe(held)
        calls = event.tool_calls
        if guard is not None:
            rest, calls = await asyncio.to_thread(
                guard.finish_calls, event.completion_tokens, event.finish_reason, calls
            )
            ctx.output_findings, ctx.output_call_findings = guard.findings, guard.call_findings
            if rest:
                yield chunk(rest)
        if calls:  # whole, at the end: arguments are scanned and redacted as one JSON text each
            digest.update(R.calls_bytes(calls))
            yield R.sse(R.chat_chunk(rid, model, created, delta={"tool_calls": R.tool_calls_delta(calls)}))
        ctx.usage = Usage(event.prompt_tokens, event.completion_tokens)
        ctx.response_digest = "hmac-sha256:" + digest.hexdigest()
        yield R.sse(fmt.chunk_final(rid, model, created, event.finish_reason))
        if include_usage:
            yield R.sse(fmt.chunk_usage(rid, model, created, ctx.usage))
        if not await pipeline.end_stream(ctx, 200):
            # The start entry exists; the outcome could not be recorded: no [DONE].
            yield R.sse(error_body(_STREAM_END_UNRECORDED))
            return
        yield R.SSE_DONE
    except (ApiError, WorkerError, ScanFailed) as exc:  # worker died, output withheld, scan failed
        api = translate(exc)
        await pipeline.fail(ctx, api)
        yield R.sse(error_body(api))
    finally:
        await events.aclose()
        # The client went away mid-stream: record it (499, as nginx names it).
        pipeline.end_stream_detached(ctx, 499)


_STREAM_END_UNRECORDED = ServiceUnavailable(
    "The end of this stream could not be recorded in the audit trail; treat the result as failed.",
    code="audit_unavailable",
    retry_after=1,
)
