"""Administration API: ``/admin/keys`` (API key lifecycle), ``/admin/policy``, ``/admin/auth`` and
``/admin/workers`` (model workers and the isolation each one got) and ``/admin/models`` (memory
budgets, loaded models, load/unload).

Both need the ``admin`` role *and* an allow from the policy (``admin.keys`` and
``admin.policy`` endpoints in the policy input), so a policy can narrow administration
further (to mTLS callers, to office hours) but never widen it past admins. Every call is
audited like any other request; a created key is returned once and never recorded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from gateway.api.body import read_body
from gateway.api.schemas import parse_create_key
from gateway.errors import (
    ApiError,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
    WorkerError,
)
from gateway.keys import ApiKeyStore
from gateway.pipeline import Pipeline, RequestContext, translate
from gateway.policy.input import RequestSummary
from gateway.upstream.model import UpstreamModel, upstream_info
from sandbox.lifecycle import UpdateFailed
from sandbox.manifest import ManifestError
from sandbox.remote.client import RemoteModel

router = APIRouter()

ADMIN_ROLE = "admin"
MAX_ADMIN_BODY = 16 * 1024


def _pipeline(request: Request) -> Pipeline:
    pipeline: Pipeline = request.app.state.pipeline
    return pipeline


async def _admin(
    request: Request, endpoint: str, act: Callable[[Pipeline, RequestContext], Awaitable[tuple[int, Any]]]
) -> Response:
    pipeline = _pipeline(request)
    ctx = await pipeline.begin(request, endpoint)
    try:
        client = request.client.host if request.client else None
        await pipeline.authorize(ctx, RequestSummary(endpoint=endpoint), client_address=client)
        if ADMIN_ROLE not in ctx.principal.roles:  # a backstop under a policy that allows more
            ctx.decision, ctx.reasons = "deny", ("admin_role_required",)
            raise PermissionDenied("This endpoint needs the admin role.", code="admin_role_required")
        status, body = await act(pipeline, ctx)
        await pipeline.finish(ctx, status)
    except ApiError as exc:
        await pipeline.fail(ctx, exc)
        raise
    return JSONResponse(body, status_code=status)


def _now() -> datetime:
    return datetime.now(UTC)


@router.get("/admin/policy")
async def policy_status(request: Request) -> Response:
    """The policy in force and how reloads and decisions have gone."""

    async def act(pipeline: Pipeline, ctx: RequestContext) -> tuple[int, Any]:
        reloader = getattr(request.app.state, "policy_reloader", None)
        engine = ctx.engine(pipeline)
        cache = getattr(engine, "cache", None)
        return 200, {
            "digest": engine.digest,
            "output_policy": engine.has_output_policy,
            "reloads": getattr(reloader, "reloads", 0),
            "reload_failures": getattr(reloader, "failures", 0),
            "last_reload_error": getattr(reloader, "last_error", None),
            "decision_failures": pipeline.policy_failures,  # requests denied because the engine failed
            "decision_cache": (
                {"enabled": cache.enabled, "entries": len(cache), "hits": cache.hits, "misses": cache.misses}
                if cache is not None
                else None
            ),
        }

    return await _admin(request, "admin.policy", act)


@router.get("/admin/auth")
async def auth_status(request: Request) -> Response:
    """Refused credentials by reason, and rate-limit store failures, since start."""

    async def act(pipeline: Pipeline, ctx: RequestContext) -> tuple[int, Any]:
        failures = pipeline.limit_store.failures
        return 200, {
            "auth_failures": dict(sorted(pipeline.auth_failures.items())),
            "auth_failures_unaudited": pipeline.auth_failures_unaudited,
            "limits_backend": pipeline.limits.backend,
            "limits_store_failures": {
                "admit_errors": failures.admit_errors,
                "admitted_unlimited": failures.admitted_unlimited,
                "charge_errors": failures.charge_errors,
            },
        }

    return await _admin(request, "admin.auth", act)


@router.get("/admin/workers")
async def workers_status(request: Request) -> Response:
    """Each model worker's state, restarts, last start error and per-layer isolation report."""

    async def act(pipeline: Pipeline, ctx: RequestContext) -> tuple[int, Any]:
        data = {}
        for name, worker in pipeline.workers.items():
            isolation = getattr(worker, "isolation", None)
            data[name] = {
                "state": worker.state,
                "pid": getattr(worker, "pid", None),
                "restarts": getattr(worker, "restarts", 0),
                "last_error": getattr(worker, "last_error", None),
                "isolation": isolation.to_dict() if isolation is not None else None,
            }
            replicas = getattr(worker, "replica_status", None)
            if callable(replicas):
                data[name]["replicas"] = replicas()
            if isinstance(worker, UpstreamModel):  # no process of ours: where it forwards to
                data[name]["upstream"] = upstream_info(worker)
            if isinstance(worker, RemoteModel):  # workers on worker hosts: each one's health
                data[name]["remote"] = worker.status()
        return 200, {"workers": data}

    return await _admin(request, "admin.workers", act)


@router.get("/admin/models")
async def models_status(request: Request) -> Response:
    """Per device: budget, use and the models on it; per model: state, memory, last use, loads
    and evictions (sandbox.lifecycle)."""

    async def act(pipeline: Pipeline, ctx: RequestContext) -> tuple[int, Any]:
        return 200, request.app.state.model_pool.status()

    return await _admin(request, "admin.models", act)


@router.post("/admin/models/{name}/{action}")
async def models_action(request: Request, name: str, action: str) -> Response:
    """``load`` a model now (evicting idle ones as a request would), ``unload`` it (409 while it
    has requests in flight), or ``update`` it to the model directory in the body's ``path``
    without dropping a request (sandbox.lifecycle.ModelPool.update)."""

    async def act(pipeline: Pipeline, ctx: RequestContext) -> tuple[int, Any]:
        pool = request.app.state.model_pool
        if name not in pool.models:
            raise NotFound(f"No model named {name!r}.", code="model_not_found")
        try:
            return await _model_action(request, pool, pipeline, ctx, name, action)
        except ManifestError as exc:
            raise InvalidRequest(f"The new version was refused: {exc}", code=exc.code) from exc
        except UpdateFailed as exc:
            raise ServiceUnavailable(str(exc), code="update_failed") from exc
        except WorkerError as exc:  # capacity, placement: the client's envelope, and audited
            raise translate(exc) from exc

    return await _admin(request, "admin.models", act)


async def _model_action(
    request: Request, pool: Any, pipeline: Pipeline, ctx: RequestContext, name: str, action: str
) -> tuple[int, Any]:
    if action == "load":
        await pool.load(name)
    elif action == "unload":
        if not await pool.unload(name):
            raise Conflict(f"Model {name!r} has requests in flight; retry later.", code="model_busy")
    elif action == "update":
        body = await read_body(request, MAX_ADMIN_BODY)
        ctx.request_digest = pipeline.digest(body)
        path = _update_path(body)
        digest = await pool.update(name, path)
        return 200, {**pool.status()["models"][name], "manifest_digest": digest, "path": str(path)}
    else:
        raise NotFound("Use /admin/models/NAME/load, /unload or /update.", code="unknown_url")
    return 200, pool.status()["models"][name]


def _update_path(body: bytes) -> Path:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(
            'The body must be JSON: {"path": "/abs/model/dir"}.', code="invalid_json"
        ) from exc
    path = doc.get("path") if isinstance(doc, dict) else None
    if not isinstance(path, str) or not Path(path).is_absolute():
        raise InvalidRequest(
            "path: an absolute model directory is required.", code="invalid_value", param="path"
        )
    return Path(path)


@router.get("/admin/keys")
async def list_keys(request: Request) -> Response:
    async def act(pipeline: Pipeline, ctx: RequestContext) -> tuple[int, Any]:
        keys = await asyncio.to_thread(pipeline.keys.list)
        now = _now()
        return 200, {"object": "list", "data": [k.as_dict(now) for k in keys]}

    return await _admin(request, "admin.keys", act)


@router.post("/admin/keys")
async def create_key(request: Request) -> Response:
    async def act(pipeline: Pipeline, ctx: RequestContext) -> tuple[int, Any]:
        body = await read_body(request, MAX_ADMIN_BODY)
        ctx.request_digest = pipeline.digest(body)
        spec = parse_create_key(body)
        store: ApiKeyStore = pipeline.keys
        expires = timedelta(days=spec.expires_in_days) if spec.expires_in_days is not None else None
        plaintext, info = await asyncio.to_thread(
            lambda: store.create(
                spec.name,
                spec.role,
                spec.tenant,
                rpm=spec.rpm,
                tpm=spec.tpm,
                daily_tokens=spec.daily_tokens,
                models=spec.models,
                endpoints=spec.endpoints,
                expires_in=expires,
            )
        )
        return 201, {"key": plaintext, **info.as_dict(_now())}

    return await _admin(request, "admin.keys", act)


@router.get("/admin/keys/{name_or_id}")
async def get_key(request: Request, name_or_id: str) -> Response:
    async def act(pipeline: Pipeline, ctx: RequestContext) -> tuple[int, Any]:
        info = await asyncio.to_thread(pipeline.keys.get, name_or_id)
        return 200, info.as_dict(_now())

    return await _admin(request, "admin.keys", act)


@router.delete("/admin/keys/{name_or_id}")
async def revoke_key(request: Request, name_or_id: str) -> Response:
    """Revoke at once; revoking a revoked key is not an error (it says when it was revoked)."""

    async def act(pipeline: Pipeline, ctx: RequestContext) -> tuple[int, Any]:
        info = await asyncio.to_thread(pipeline.keys.revoke, name_or_id)
        return 200, info.as_dict(_now())

    return await _admin(request, "admin.keys", act)
