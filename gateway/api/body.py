"""Reading request bodies under a size limit (413 beyond it), without trusting Content-Length."""

from __future__ import annotations

import re

from starlette.requests import ClientDisconnect, Request

from gateway.errors import ClientClosedRequest, InvalidRequest, PayloadTooLarge

_DIGITS = re.compile(r"[0-9]+")


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body too large: the limit is {limit} bytes.")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not _DIGITS.fullmatch(declared):
            raise InvalidRequest("Invalid Content-Length header.", code="invalid_header")
        if len(declared) > 18 or int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise ClientClosedRequest("The client closed the connection before sending the whole body.") from exc
    return b"".join(chunks)
