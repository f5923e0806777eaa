"""``GET /metrics``: the Prometheus exposition of this gateway's metrics (gateway/metrics.py).

On the main port it is an API endpoint like the others: authenticated, decided by the policy
(endpoint ``metrics``: admin and auditor roles by default), audited. Give Prometheus an
auditor key as its bearer token. ``metrics.listen`` serves the same registry without
credentials on a separate address instead (for a scraper inside a trusted network); then
``metrics.endpoint: false`` turns this route off.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from gateway.errors import ApiError, InternalError, NotFound, PermissionDenied
from gateway.pipeline import Pipeline
from gateway.policy.input import RequestSummary

router = APIRouter()

METRICS_ROLES = frozenset({"admin", "auditor"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    pipeline: Pipeline = request.app.state.pipeline
    if not getattr(request.app.state, "metrics_endpoint", True):
        raise NotFound("Metrics are not served on this port (metrics.endpoint: false).", code="not_found")
    ctx = await pipeline.begin(request, "metrics")
    try:
        client = request.client.host if request.client else None
        await pipeline.authorize(
            ctx, RequestSummary(endpoint="metrics"), client_address=client, rate_limit=False
        )
        if not METRICS_ROLES.intersection(ctx.principal.roles):  # a backstop under a policy that allows more
            ctx.decision, ctx.reasons = "deny", ("auditor_role_required",)
            raise PermissionDenied(
                "This endpoint needs the auditor or admin role.", code="auditor_role_required"
            )
        body = generate_latest(pipeline.metrics.registry)
        await pipeline.finish(ctx, 200)
    except ApiError as exc:
        await pipeline.fail(ctx, exc)
        raise
    except Exception as exc:  # a bug: audited as a 500, answered without detail
        failure = InternalError("The server had an error processing your request.")
        await pipeline.fail(ctx, failure)
        raise failure from exc
    return Response(body, media_type=CONTENT_TYPE_LATEST)
