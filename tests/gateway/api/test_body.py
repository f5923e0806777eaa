from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
from starlette.requests import Request

from gateway.api.body import read_body
from gateway.errors import ClientClosedRequest, InvalidRequest, PayloadTooLarge

LIMIT = 100


class FakeClient:
    """An ASGI receive callable over chunks; counts how many messages were read."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = list(chunks)
        self.reads = 0

    async def __call__(self) -> dict[str, object]:
        self.reads += 1
        if self.chunks:
            chunk = self.chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}
        return {"type": "http.request", "body": b"", "more_body": False}


def make_request(chunks: Iterable[bytes], content_length: str | None = "auto") -> tuple[Request, FakeClient]:
    chunks = list(chunks)
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
    if content_length == "auto":
        content_length = str(sum(len(c) for c in chunks))
    if content_length is not None:
        headers.append((b"content-length", content_length.encode("latin-1")))
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers}
    client = FakeClient(chunks)
    return Request(scope, client), client


def read(request: Request, limit: int = LIMIT) -> bytes:
    return asyncio.run(read_body(request, limit))


@pytest.mark.parametrize(
    "chunks", [[], [b""], [b"{}"], [b"a" * LIMIT], [b'{"a":', b" 1}"], [b"x"] * LIMIT], ids=str
)
@pytest.mark.parametrize("declared", ["auto", None], ids=["content-length", "chunked"])
def test_under_or_at_the_limit_is_read_whole(chunks: list[bytes], declared: str | None) -> None:
    request, _ = make_request(chunks, declared)

    assert read(request) == b"".join(chunks)


def test_declared_over_limit_is_refused_without_reading() -> None:
    request, client = make_request([b"a" * (LIMIT + 1)])

    with pytest.raises(PayloadTooLarge) as info:
        read(request)

    assert client.reads == 0
    assert info.value.status == 413
    assert info.value.code == "request_too_large"
    assert str(LIMIT) in info.value.message


def test_huge_declared_length_is_refused_without_reading() -> None:
    request, client = make_request([b"{}"], content_length="9" * 30)

    with pytest.raises(PayloadTooLarge):
        read(request)
    assert client.reads == 0


@pytest.mark.parametrize(
    "declared", [None, "10", "0", str(LIMIT)], ids=["chunked", "lying-10", "lying-0", "lying-limit"]
)
@pytest.mark.parametrize(
    "chunks", [[b"a" * (LIMIT + 1)], [b"a" * 60, b"b" * 60], [b"x"] * (LIMIT + 1)], ids=["one", "two", "many"]
)
def test_over_limit_while_streaming_is_refused(declared: str | None, chunks: list[bytes]) -> None:
    request, client = make_request(chunks, declared)

    with pytest.raises(PayloadTooLarge):
        read(request)
    sizes = [sum(len(c) for c in chunks[: i + 1]) for i in range(len(chunks))]
    assert client.reads == next(i + 1 for i, size in enumerate(sizes) if size > LIMIT)


def test_streaming_stops_reading_once_over_the_limit() -> None:
    request, client = make_request([b"a" * 60, b"b" * 60, b"c" * 60, b"d" * 60], content_length=None)

    with pytest.raises(PayloadTooLarge):
        read(request)
    assert client.reads == 2
    assert len(client.chunks) == 2


@pytest.mark.parametrize("declared", ["abc", "-1", "+5", "1.5", "0x10", " 5", "5 ", "", "1e3", "²", "¹", "³"])
def test_bad_content_length_is_an_invalid_request(declared: str) -> None:
    request, client = make_request([b"{}"], content_length=declared)

    with pytest.raises(InvalidRequest) as info:
        read(request)

    assert info.value.code == "invalid_header"
    assert info.value.status == 400
    assert client.reads == 0


def test_a_client_that_leaves_mid_body_is_a_client_closed_request() -> None:
    async def receive() -> dict[str, object]:
        if not sent:
            sent.append(True)
            return {"type": "http.request", "body": b'{"mod', "more_body": True}
        return {"type": "http.disconnect"}

    sent: list[bool] = []
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"1000")]}
    with pytest.raises(ClientClosedRequest) as err:
        read(Request(scope, receive), limit=10_000)
    assert err.value.status == 499
