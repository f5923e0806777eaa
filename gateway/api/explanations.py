"""``GET /v1/explanations/{request_id}``: a request's explanation record (docs/explanations.md).

The caller's own requests, or any request for the auditor and admin roles; anyone else gets the
same 404 as for a request without a record, so ids cannot be probed. JSON by default: the
record, its digest and the audit entry that commits it (``committed``: the entry's digest is
the record's). ``?format=html`` returns the self-contained heatmap page (``explain.render``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from explain.errors import ExplanationError
from explain.render import html_page
from explain.store import StoredExplanation
from gateway.api.audit import AUDIT_ROLES, parse_choice, parse_query
from gateway.audit.log import AuditLog
from gateway.errors import ApiError, AuditError, InternalError, NotFound, ServiceUnavailable
from gateway.pipeline import Pipeline, RequestContext
from gateway.policy.input import RequestSummary

log = logging.getLogger("llmos.gateway")
router = APIRouter()

ENDPOINT = "explanations.get"
FORMATS = ("json", "html")
# The page is inline CSS and a little inline script, nothing else: no resource may load.
HTML_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}


@router.get("/v1/explanations/{request_id}")
async def get_explanation(request: Request, request_id: str) -> Response:
    pipeline: Pipeline = request.app.state.pipeline
    ctx = await pipeline.begin(request, ENDPOINT)
    try:
        client = request.client.host if request.client else None
        await pipeline.authorize(ctx, RequestSummary(endpoint=ENDPOINT), client_address=client)
        query = parse_query(request.query_params.multi_items(), ("format",))
        form = parse_choice("format", query.get("format"), FORMATS) or "json"
        stored = await _stored(pipeline, ctx, request_id)
        if form == "html":
            response: Response = HTMLResponse(html_page(stored.record), headers=HTML_HEADERS)
        else:
            response = JSONResponse(
                {
                    "object": "explanation",
                    "request_id": request_id,
                    "digest": stored.digest,
                    "audit": await _commitment(pipeline, request_id, stored.digest),
                    "record": stored.record.to_json(),
                }
            )
        await pipeline.finish(ctx, response.status_code)
    except ApiError as exc:
        await pipeline.fail(ctx, exc)
        raise
    return response


async def _stored(pipeline: Pipeline, ctx: RequestContext, request_id: str) -> StoredExplanation:
    missing = NotFound(
        "No explanation record for this request id that you may read (records are written once the"
        " response is complete, and any attribution computed).",
        code="explanation_not_found",
    )
    if pipeline.explanations is None:
        raise missing
    try:
        stored = await asyncio.to_thread(pipeline.explanations.get, request_id)
    except ExplanationError as exc:
        log.error("explanation %r is unreadable or altered: %s", request_id, exc)
        raise InternalError("The explanation record could not be read.", code="explanation_corrupt") from exc
    if stored is None:
        raise missing
    principal = ctx.principal
    own = stored.principal_id == principal.id and stored.tenant == principal.tenant
    if not own and not AUDIT_ROLES.intersection(principal.roles):
        raise missing
    return stored


async def _commitment(pipeline: Pipeline, request_id: str, digest: str) -> dict[str, Any] | None:
    """The audit entry that commits the record: its sequence number and whether it names this
    digest. None if the log keeps no entries we can read (a custom sink)."""
    audit = pipeline.audit
    if not isinstance(audit, AuditLog):
        return None
    try:
        row = await asyncio.to_thread(audit.stored, request_id, "explanation")
    except AuditError as exc:
        raise ServiceUnavailable("The audit log could not be read.", code="audit_unavailable") from exc
    if row is None:
        return {"seq": None, "committed": False}
    try:
        entry = json.loads(row.body)
    except (TypeError, ValueError):
        entry = {}
    return {
        "seq": row.seq,
        "entry_hash": row.entry_hash,
        "committed": isinstance(entry, dict) and entry.get("response_digest") == digest,
    }
