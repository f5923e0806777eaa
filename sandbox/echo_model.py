"""The echo model: a diagnostic stand-in that answers with the text it was given (no torch).

It shows what a model actually receives after the gateway's redaction, and lets end-to-end
tests check redaction and restoration without a real model. The answer is the content of the
last chat message, or the prompt of a completion, streamed in word-sized pieces (a word with
the whitespace around it), so that joining the pieces gives the text back exactly. A piece
counts as one token: ``max_tokens`` cuts the answer (finish reason ``length``), stop strings
end it as they do for a real model, and ``prompt_tokens`` is the number of pieces in all the
messages (or the prompt).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from gateway.errors import WorkerRequestError
from gateway.types import DoneEvent, FinishReason, GenerateEvent, GenerateRequest, TokenEvent
from sandbox.textstream import StopTextStream

# Nothing is held in memory per token, so the limit only keeps the arithmetic honest; it is far
# above anything the gateway's max_tokens caps and body-size limit let through.
ECHO_CONTEXT_LENGTH = 1_000_000

_PIECE = re.compile(r"\s*\S+\s*|\s+")


def split_pieces(text: str) -> list[str]:
    """Word-sized pieces of ``text``; ``"".join(split_pieces(t)) == t``."""
    return _PIECE.findall(text)


def echo_text(request: GenerateRequest) -> str:
    """What the echo model answers: the last message's content, or the prompt."""
    if request.messages is not None:
        return request.messages[-1].content if request.messages else ""
    return request.prompt or ""


def prompt_pieces(request: GenerateRequest) -> int:
    if request.messages is not None:
        return sum(len(split_pieces(m.content)) for m in request.messages)
    return len(split_pieces(request.prompt or ""))


class EchoModel:
    """The worker-side model of kind ``echo`` (see ``sandbox.backend.Backend``)."""

    context_length = ECHO_CONTEXT_LENGTH

    def generate(self, request: GenerateRequest, cancelled: Callable[[], bool]) -> Iterator[GenerateEvent]:
        """Stream TokenEvents then one DoneEvent; the iterator just ends if ``cancelled()`` turns true."""
        params = request.params
        prompt_tokens = prompt_pieces(request)
        if prompt_tokens + params.max_tokens > ECHO_CONTEXT_LENGTH:
            raise WorkerRequestError(
                f"the echo model's maximum context length is {ECHO_CONTEXT_LENGTH} tokens; the request has "
                f"{prompt_tokens} prompt tokens and asks for up to {params.max_tokens} completion tokens.",
                code="context_length_exceeded",
            )
        pieces = split_pieces(echo_text(request))
        stream = StopTextStream(params.stop)

        def done(reason: FinishReason, completion_tokens: int) -> DoneEvent:
            return DoneEvent(reason, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

        if not pieces:
            if not cancelled():
                yield done("stop", 0)
            return
        text = ""
        for count, piece in enumerate(pieces, start=1):
            if cancelled():
                return
            text += piece
            complete = count == len(pieces)
            if complete or count >= params.max_tokens:
                rest = stream.finish(text)
                if rest:
                    yield TokenEvent(rest)
                yield done("stop" if complete or stream.stopped else "length", count)
                return
            new = stream.push(text)
            if new:
                yield TokenEvent(new)
            if stream.stopped:
                yield done("stop", count)
                return
