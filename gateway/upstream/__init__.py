"""Upstream models: OpenAI-compatible APIs behind the same pipeline (docs/upstreams.md).

``wire`` is the pure OpenAI wire format (request bodies, answers, stream chunks, error
mapping, retry delays); ``keys`` reads the upstream's API key; ``model`` is the
:class:`~gateway.upstream.model.UpstreamModel` the pipeline calls like a worker.
"""
