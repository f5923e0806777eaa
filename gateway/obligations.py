"""Applying a decision's obligations to requests and responses. Pure.

Input: cap ``max_tokens``, redact (or block) sensitive findings in prompts: message contents
and tool-call arguments (JSON stays valid JSON, see ``gateway.toolargs``).
Output: redact (or block) sensitive findings in the generated text and in the arguments of the
tool calls an upstream model made.
Routing and model visibility are applied by the pipeline and routes.
"""

from __future__ import annotations

from dataclasses import replace

from gateway import findings as F
from gateway import toolargs
from gateway.errors import InvalidRequest, PermissionDenied
from gateway.pseudonym import Pseudonymizer
from gateway.types import ChatMessage, Finding, GenerateRequest, Obligations, Redaction


def request_texts(request: GenerateRequest) -> list[str]:
    """The texts a request sends to the model, flat: per message its content, then each of its
    tool calls' arguments; or the raw prompt. Findings are reported per text in this order (the
    audit trail's ``findings.input[].text`` indexes it)."""
    return request.texts()


def scan_request(request: GenerateRequest) -> list[list[Finding]]:
    """Findings per prompt text with the pattern detectors (the pipeline uses its scanner)."""
    return [F.find(t) for t in request_texts(request)]


def finding_counts(per_text: list[list[Finding]]) -> dict[str, int]:
    return F.counts(f for found in per_text for f in found)


def refuse_sensitive_identifiers(per_id: list[list[Finding]], obligations: Obligations) -> None:
    """Names and ids cannot be redacted (tool calls and results pair by them): a finding of a
    type the policy redacts or blocks in one refuses the request."""
    redaction = obligations.redact
    if redaction is None:
        return
    hit = sorted({f.type for found in per_id for f in found if f.type in redaction.entities})
    if hit:
        raise InvalidRequest(
            f"A message name, tool name or tool call id contains {', '.join(hit)}, which policy"
            " redacts; names and ids cannot be redacted, so the request is refused.",
            code="sensitive_data_in_identifier",
        )


def _blocked(redaction: Redaction, found: list[Finding], where: str) -> None:
    hit = sorted({f.type for f in found if f.type in redaction.entities})
    if redaction.operator == "block" and hit:
        raise PermissionDenied(
            f"Request denied by policy: the {where} contains {', '.join(hit)}, which policy blocks"
            " [sensitive_data_blocked]",
            code="sensitive_data_blocked",
        )


def apply_input(
    request: GenerateRequest,
    per_text: list[list[Finding]],
    obligations: Obligations,
    key: bytes,
    pseudo: Pseudonymizer | None = None,
) -> GenerateRequest:
    """The request as the model will see it: max_tokens capped, sensitive spans redacted
    (numbered, restorable placeholders when ``pseudo`` is given)."""
    params = request.params
    if obligations.max_tokens is not None and params.max_tokens > obligations.max_tokens:
        params = replace(params, max_tokens=obligations.max_tokens)
    redaction = obligations.redact
    if redaction is None:
        return replace(request, params=params)
    texts = len(request.texts())
    if len(per_text) != texts:
        raise ValueError(f"{len(per_text)} findings lists for {texts} texts")
    _blocked(redaction, [f for found in per_text for f in found], "prompt")
    if request.messages is not None:
        entities, operator = redaction.entities, redaction.operator
        found_next = iter(per_text)

        def redacted(m: ChatMessage) -> ChatMessage:
            content = F.redact(m.content, next(found_next), entities, operator, key, pseudo)
            calls = tuple(
                replace(
                    c,
                    arguments=toolargs.redact(c.arguments, next(found_next), entities, operator, key, pseudo),
                )
                for c in m.tool_calls
            )
            return replace(m, content=content, tool_calls=calls)

        messages = tuple(redacted(m) for m in request.messages)
        return replace(request, params=params, messages=messages)
    prompt = F.redact(request.prompt or "", per_text[0], redaction.entities, redaction.operator, key, pseudo)
    return replace(request, params=params, prompt=prompt)


def apply_output(
    text: str, found: list[Finding], obligations: Obligations, key: bytes, *, arguments: bool = False
) -> str:
    """The generated text as the caller will see it; with ``arguments``, a tool call's arguments
    (JSON stays valid JSON)."""
    redaction = obligations.redact
    if redaction is None:
        return text
    _blocked(redaction, found, "response")
    redact = toolargs.redact if arguments else F.redact
    return redact(text, found, redaction.entities, redaction.operator, key)
