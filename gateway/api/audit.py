"""Audit evidence over HTTP: signed checkpoints, entries with inclusion proofs, consistency proofs.

    GET /v1/audit/checkpoint[?format=json]          the latest signed checkpoint (a signed note)
    GET /v1/audit/entries/{request_id}[?phase=P]    one stored entry, proved against a checkpoint
    GET /v1/audit/consistency?from=M&to=N           a proof that tree N extends tree M
    GET /v1/audit/search?since&until&tenant&principal&model&decision&before&limit
                                                    request outcomes matching, newest first

An auditor checks everything with the gateway's public key alone: the checkpoint's signature,
the entry's leaf hash (``SHA-256(0x00 || entry)``, leaf index ``seq - 1``) against the
checkpoint's root, and one checkpoint's tree against a later one's. Nothing here is trusted
by the client, so nothing here re-verifies what it serves: stored bytes go out as stored.

Each route needs the ``auditor`` or ``admin`` role *and* an allow from the policy for its
endpoint (``audit.checkpoint``, ``audit.entries``, ``audit.consistency``, ``audit.search``), and each call is
audited like any other request.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from gateway.audit.checkpoint import Checkpoint
from gateway.audit.log import AuditLog, StoredCheckpoint
from gateway.audit.search import Filters
from gateway.errors import (
    ApiError,
    AuditError,
    AuditVerifyError,
    InternalError,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
)
from gateway.pipeline import Pipeline
from gateway.policy.input import RequestSummary
from gateway.types import AUDIT_PHASES

log = logging.getLogger("llmos.gateway")

router = APIRouter()

AUDIT_ROLES = frozenset({"auditor", "admin"})
FORMATS = ("note", "json")
_TREE_SIZE = re.compile(r"[1-9][0-9]{0,19}")  # canonical decimal, as in a checkpoint; 0 is refused

P = ParamSpec("P")
T = TypeVar("T")


# -- parsing (pure) ---------------------------------------------------------------------------


def parse_query(items: Sequence[tuple[str, str]], allowed: Sequence[str]) -> dict[str, str]:
    """The query parameters by name; 400 for one not in ``allowed`` or one given twice."""
    found: dict[str, str] = {}
    for name, value in items:
        if name not in allowed:
            raise InvalidRequest(
                f"Unrecognized query parameter: '{name}'. This URL takes {_names(allowed)}.",
                code="unknown_parameter",
                param=name,
            )
        if name in found:
            raise InvalidRequest(f"'{name}' is given more than once.", code="invalid_value", param=name)
        found[name] = value
    return found


def _names(allowed: Sequence[str]) -> str:
    return ", ".join(f"'{n}'" for n in allowed) if allowed else "none"


def parse_tree_size(name: str, text: str | None) -> int:
    """A tree size from the query: a decimal integer of at least 1, without sign or leading zeros."""
    if text is None:
        raise InvalidRequest(
            f"Missing required parameter: '{name}'.", code="missing_required_parameter", param=name
        )
    if not _TREE_SIZE.fullmatch(text):
        raise InvalidRequest(
            f"Invalid value for '{name}': a tree size is a decimal integer of at least 1.",
            code="invalid_value",
            param=name,
        )
    return int(text)


def consistency_range(query: dict[str, str], latest_size: int) -> tuple[int, int]:
    """``from`` and ``to`` with 1 <= from <= to <= the latest checkpoint's tree size."""
    old, new = parse_tree_size("from", query.get("from")), parse_tree_size("to", query.get("to"))
    if old > new:
        raise InvalidRequest(
            f"Invalid value for 'from': {old} is larger than 'to' ({new}).",
            code="invalid_value",
            param="from",
        )
    if new > latest_size:
        raise InvalidRequest(
            f"Invalid value for 'to': {new} is larger than the latest checkpoint's tree size "
            f"({latest_size}). See GET /v1/audit/checkpoint.",
            code="invalid_value",
            param="to",
        )
    return old, new


def parse_choice(name: str, text: str | None, choices: Sequence[str]) -> str | None:
    if text is None or text in choices:
        return text
    raise InvalidRequest(
        f"Invalid value for '{name}': expected one of {', '.join(choices)}.", code="invalid_value", param=name
    )


def note_checkpoint(note: str) -> Checkpoint:
    """The checkpoint in a signed note's text (everything before the blank line before the
    signatures); the signature is not checked here."""
    return Checkpoint.parse(note[: note.rfind("\n\n") + 1])


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


# -- the seam to the audit log ----------------------------------------------------------------


def _audit_log(pipeline: Pipeline) -> AuditLog:
    if not isinstance(pipeline.audit, AuditLog):
        raise ServiceUnavailable(
            "This gateway's audit sink keeps no Merkle tree, so it serves no proofs.",
            code="audit_proofs_unavailable",
        )
    return pipeline.audit


@contextmanager
def _audit_errors() -> Iterator[None]:
    """Audit log failures as API errors: a store that cannot be read is 503, stored data that
    cannot be used (a malformed checkpoint, a missing tree node) is 500."""
    try:
        yield
    except AuditError as exc:
        log.error("audit log read failed: %s", exc)
        raise ServiceUnavailable(
            "The audit log could not be read.", code="audit_unavailable", retry_after=1
        ) from exc
    except (AuditVerifyError, ValueError) as exc:
        log.error("audit log holds unusable data (run `llmos audit verify`): %s", exc)
        raise InternalError("The audit log could not serve this request.", code="audit_corrupt") from exc


async def _read(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call into the AuditLog in a thread: it takes the store's lock, or waits for the writer."""
    with _audit_errors():
        return await asyncio.to_thread(fn, *args, **kwargs)


def _covering(audit: AuditLog, size: int) -> StoredCheckpoint | None:
    """The latest checkpoint if it covers ``size`` entries; else a new one, signed now."""
    latest = audit.latest_checkpoint()
    if latest is None or latest.size < size:
        latest = audit.checkpoint()
    return latest


def _current(audit: AuditLog) -> StoredCheckpoint | None:
    """The latest checkpoint, signed now if entries were appended since (None: the log is empty)."""
    head = audit.head()
    return None if head is None else _covering(audit, head.seq)


# -- routes -----------------------------------------------------------------------------------


async def _serve(
    request: Request,
    endpoint: str,
    params: Sequence[str],
    act: Callable[[AuditLog, dict[str, str]], Awaitable[Response]],
) -> Response:
    """Authenticate, authorise (policy, then the role backstop), parse the query ``params``,
    act, audit: as ``/admin`` does. A bad query is refused only after authorisation."""
    pipeline: Pipeline = request.app.state.pipeline
    ctx = await pipeline.begin(request, endpoint)
    try:
        client = request.client.host if request.client else None
        await pipeline.authorize(ctx, RequestSummary(endpoint=endpoint), client_address=client)
        if not AUDIT_ROLES.intersection(ctx.principal.roles):  # a backstop under a policy that allows more
            ctx.decision, ctx.reasons = "deny", ("auditor_role_required",)
            raise PermissionDenied(
                "This endpoint needs the auditor or admin role.", code="auditor_role_required"
            )
        query = parse_query(request.query_params.multi_items(), params)
        response = await act(_audit_log(pipeline), query)
        await pipeline.finish(ctx, response.status_code)
    except ApiError as exc:
        await pipeline.fail(ctx, exc)
        raise
    except Exception as exc:  # a bug: audited as a 500, answered without detail
        log.error("unhandled error in %s (request %s)", endpoint, ctx.request_id, exc_info=exc)
        failure = InternalError("The server had an error processing your request.")
        await pipeline.fail(ctx, failure)
        raise failure from exc
    return response


def _no_checkpoint() -> NotFound:
    return NotFound("The audit log is empty, so it has no checkpoint yet.", code="no_checkpoint")


@router.get("/v1/audit/checkpoint")
async def get_checkpoint(request: Request) -> Response:
    """The latest signed checkpoint, covering every entry written so far: the signed note as
    stored (``text/plain``), or with ``format=json`` its fields and the verifier key."""

    async def act(audit: AuditLog, query: dict[str, str]) -> Response:
        form = parse_choice("format", query.get("format"), FORMATS) or "note"
        latest = await _read(_current, audit)
        if latest is None:
            raise _no_checkpoint()
        if form == "note":
            return PlainTextResponse(latest.note)
        with _audit_errors():
            checkpoint = note_checkpoint(latest.note)
        body: dict[str, Any] = {
            "origin": checkpoint.origin,
            "size": checkpoint.size,
            "root_hash": _b64(checkpoint.root_hash),
            "note": latest.note,
            "created": latest.created,
            "verifier_key": audit.verifier_key,
        }
        return JSONResponse(body)

    return await _serve(request, "audit.checkpoint", ("format",), act)


@router.get("/v1/audit/entries/{request_id}")
async def get_entry(request: Request, request_id: str) -> Response:
    """One entry exactly as stored (``entry``: the body that was hashed), with its inclusion
    proof against the latest checkpoint (signed now if it does not cover the entry)."""

    async def act(audit: AuditLog, query: dict[str, str]) -> Response:
        phase = parse_choice("phase", query.get("phase"), AUDIT_PHASES)
        row = await _read(audit.stored, request_id, phase)
        if row is None:
            raise NotFound("No audit entry has this request id (and phase).", code="entry_not_found")
        if not isinstance(row.seq, int) or not _is_utf8(row.body):
            log.error("audit entry for %r is unreadable (run `llmos audit verify`)", request_id)
            raise InternalError("The audit entry could not be read.", code="audit_corrupt")
        latest = await _read(_covering, audit, row.seq)
        if latest is None or latest.size < row.seq:
            raise ServiceUnavailable(
                "No checkpoint covers this entry yet.", code="audit_unavailable", retry_after=1
            )
        proof = await _read(audit.inclusion_proof, row.seq, latest.size)
        body: dict[str, Any] = {
            "seq": row.seq,
            "leaf_index": row.seq - 1,
            "phase": row.phase,
            "entry": row.body,
            "entry_hash": row.entry_hash,
            # An entry's own signature exists only for entries written before signed heads; the
            # inclusion proof against the signed checkpoint is what proves an entry now.
            "signature": row.signature or None,
            "openings": row.openings,  # sealed fields' values and salts ("" when none)
            "checkpoint": latest.note,
            "tree_size": latest.size,
            "inclusion_proof": [_b64(h) for h in proof],
        }
        return JSONResponse(body)

    return await _serve(request, "audit.entries", ("phase",), act)


def _is_utf8(body: object) -> bool:
    """A body JSON can carry exactly: text without the lone surrogates of undecodable bytes."""
    if not isinstance(body, str):
        return False
    try:
        body.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@router.get("/v1/audit/consistency")
async def get_consistency(request: Request) -> Response:
    """The RFC 9162 consistency proof from the tree of ``from`` entries to the tree of ``to``;
    ``to`` may be at most the latest checkpoint's tree size."""

    async def act(audit: AuditLog, query: dict[str, str]) -> Response:
        latest = await _read(audit.latest_checkpoint)
        old, new = consistency_range(query, 0 if latest is None else latest.size)
        proof = await _read(audit.consistency_proof, old, new)
        return JSONResponse({"from": old, "to": new, "proof": [_b64(h) for h in proof]})

    return await _serve(request, "audit.consistency", ("from", "to"), act)


# -- search (the operator console's audit explorer) ---------------------------------------------

SEARCH_PARAMS = ("since", "until", "tenant", "principal", "model", "decision", "before", "limit")
DECISIONS = ("allow", "deny", "invalid", "error")
MAX_SEARCH_LIMIT = 200


def parse_time(name: str, text: str | None) -> str | None:
    """An ISO 8601 time (a date alone is its midnight; no zone is UTC) in the log's own form."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        when = when.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            f"Invalid value for '{name}': expected an ISO 8601 time, e.g. 2026-11-30T08:00:00Z.",
            code="invalid_value",
            param=name,
        ) from None
    return when.isoformat(timespec="milliseconds")


def parse_positive(name: str, text: str | None, *, most: int | None = None) -> int | None:
    if text is None:
        return None
    if not _TREE_SIZE.fullmatch(text) or (most is not None and int(text) > most):
        upto = f" up to {most}" if most is not None else ""
        raise InvalidRequest(
            f"Invalid value for '{name}': expected a whole number from 1{upto}.",
            code="invalid_value",
            param=name,
        )
    return int(text)


def search_filters(query: dict[str, str]) -> Filters:
    return Filters(
        since=parse_time("since", query.get("since")),
        until=parse_time("until", query.get("until")),
        tenant=query.get("tenant"),
        principal_id=query.get("principal"),
        model=query.get("model"),
        decision=parse_choice("decision", query.get("decision"), DECISIONS),
    )


@router.get("/v1/audit/search")
async def search_entries(request: Request) -> Response:
    """Request outcomes (``complete`` and ``stream_end`` entries) matching the filters, newest
    first, as summaries; ``next_before`` continues the search (``before=``)."""

    async def act(audit: AuditLog, query: dict[str, str]) -> Response:
        filters = search_filters(query)
        before = parse_positive("before", query.get("before"))
        limit = parse_positive("limit", query.get("limit"), most=MAX_SEARCH_LIMIT) or 50
        found = await _read(audit.search, filters, before_seq=before, limit=limit)
        return JSONResponse(
            {"entries": found.entries, "next_before": found.next_before, "scanned": found.scanned}
        )

    return await _serve(request, "audit.search", SEARCH_PARAMS, act)
