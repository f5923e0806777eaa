"""Explanations for decisions: token attributions (Captum), policy and PII evidence, per request.

    errors.py       ExplanationError (under gateway.errors.LlmosError)
    jsonread.py     typed reading of parsed JSON, errors naming the JSON path, pure
    canonical.py    RFC 8785 canonical JSON, numbers included, pure
    types.py        AttributionSettings and Attribution: the worker protocol's values, pure
    attribution.py  attribute(): Captum attributions of an output to its prompt (torch: worker only)
    evidence.py     decision, PII finding, model attribution status and ML score evidence, pure
    record.py       ExplanationRecord: one request's explanation, canonical bytes, digests, pure
    render.py       terminal view and self-contained HTML page, pure
    store.py        ExplanationStore: records in SQLite (WAL), put pending then final, checked get
    timing.py       ``python -m explain.timing``: times every method and scope on the demo model

Only ``attribution.py`` (and ``timing.py``) import torch; the gateway process imports
everything else, and must never import those two (torch aborts a process that loaded regopy).

The flow (docs/explanations.md): the policy's ``explain`` obligation asks for ``summary`` or
``full``; the gateway sends :class:`~explain.types.AttributionSettings` with the generation
request; the worker, after generating, calls :func:`explain.attribution.attribute` and sends
back ``Attribution.to_json()``; the gateway parses it with ``Attribution.from_json`` and stores
an :class:`~explain.record.ExplanationRecord` (pending first, then final) in the
:class:`~explain.store.ExplanationStore`; reviewers read it through ``render``.

Importing this package does nothing but define names; import the modules you need.
"""
