"""The official openai client, unmodified, against a real gateway and worker."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import Gateway

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "Hello there, who are you?"}]


def test_models_list(gateway: Gateway) -> None:
    models = gateway.client().models.list()
    assert [m.id for m in models.data] == ["demo"]
    assert models.data[0].owned_by == "llmos"


def test_chat_completion(gateway: Gateway) -> None:
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="demo", messages=HELLO, max_tokens=12, temperature=0
    )
    resp = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_")
    assert resp.id == "chatcmpl-" + raw.headers["x-request-id"]
    assert resp.object == "chat.completion"
    assert resp.model == "demo"
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage is not None
    assert resp.usage.prompt_tokens > 0
    assert 0 < resp.usage.completion_tokens <= 12
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_greedy_stream_matches_non_stream(gateway: Gateway) -> None:
    client = gateway.client()
    full = client.chat.completions.create(model="demo", messages=HELLO, max_tokens=20, temperature=0)
    stream = client.chat.completions.create(
        model="demo",
        messages=HELLO,
        max_tokens=20,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == full.choices[0].message.content
    assert finishes == [full.choices[0].finish_reason]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens  # type: ignore[union-attr]
    assert len({c.id for c in chunks}) == 1


def test_seed_makes_sampling_repeatable(gateway: Gateway) -> None:
    client = gateway.client()
    texts = {
        client.chat.completions.create(
            model="demo", messages=HELLO, max_tokens=16, temperature=1.0, top_p=0.9, seed=7
        )
        .choices[0]
        .message.content
        for _ in range(2)
    }
    assert len(texts) == 1


def test_stop_sequence_is_honoured(gateway: Gateway) -> None:
    client = gateway.client()
    base = client.chat.completions.create(model="demo", messages=HELLO, max_tokens=30, temperature=0)
    text = base.choices[0].message.content or ""
    visible = [ch for ch in text[3:] if ch.isalnum()]
    if not visible:
        pytest.skip("greedy output has no usable stop character")
    stop = visible[0]
    cut = client.chat.completions.create(
        model="demo", messages=HELLO, max_tokens=30, temperature=0, stop=[stop]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]


def test_legacy_completions(gateway: Gateway) -> None:
    client = gateway.client()
    resp = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=8, temperature=0)
    assert resp.object == "text_completion"
    assert resp.usage is not None and 0 < resp.usage.completion_tokens <= 8
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="demo", prompt="Once upon a time", max_tokens=8, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == resp.choices[0].text


def test_bad_key_is_authentication_error(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        gateway.client("sk-llmos-0000000000000000-" + "x" * 43).chat.completions.create(
            model="demo", messages=HELLO
        )
    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"
    assert "x" * 43 not in str(err.value)


def test_revoked_key_is_refused_at_once(gateway: Gateway) -> None:
    key = gateway.create_key("to-revoke")
    gateway.client(key).models.list()
    gateway.cli("keys", "revoke", "to-revoke")
    with pytest.raises(openai.AuthenticationError):
        gateway.client(key).models.list()


def test_policy_denial_is_permission_error(gateway: Gateway) -> None:
    auditor = gateway.create_key("auditor-1", "auditor")
    with pytest.raises(openai.PermissionDeniedError) as err:
        gateway.client(auditor).chat.completions.create(model="demo", messages=HELLO, max_tokens=4)
    assert err.value.status_code == 403
    assert err.value.code == "role_not_permitted"
    assert "role_not_permitted" in err.value.message
    # The same auditor may list models: the policy decides per endpoint.
    assert gateway.client(auditor).models.list().data


def test_policy_caps_max_tokens(gateway: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as err:
        gateway.client().chat.completions.create(model="demo", messages=HELLO, max_tokens=5000)
    assert err.value.code == "max_tokens_too_large"


def test_unknown_model_is_not_found(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        gateway.client().chat.completions.create(model="gpt-nonexistent", messages=HELLO)
    assert err.value.code == "model_not_found"
    assert err.value.param == "model"


def test_bad_request_errors(gateway: Gateway) -> None:
    client = gateway.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="demo", messages=HELLO, n=2)
    assert (err.value.code, err.value.param) == ("unsupported_value", "n")
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="demo", messages=HELLO, temperature=5)
    assert err.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="demo", messages=[], max_tokens=4)
    assert err.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="demo", messages=HELLO, max_tokens=2040)
    assert err.value.code == "context_length_exceeded"


def test_body_too_large_is_413(gateway: Gateway) -> None:
    huge = [{"role": "user", "content": "a" * (1024 * 1024 + 1)}]
    with pytest.raises(openai.APIStatusError) as err:
        gateway.client().chat.completions.create(model="demo", messages=huge)
    assert err.value.status_code == 413
    assert err.value.code == "request_too_large"


def test_rate_limit_is_429_with_retry_after(gateway: Gateway) -> None:
    key = gateway.create_key("limited", "user", "--rpm", "1")
    client = gateway.client(key)
    client.models.list()
    with pytest.raises(openai.RateLimitError) as err:
        client.models.list()
    assert err.value.status_code == 429
    assert int(err.value.response.headers["retry-after"]) >= 1


def test_unknown_route_uses_the_envelope(gateway: Gateway) -> None:
    with gateway.http() as http:
        r = http.get("/v1/nope")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "unknown_url"
        assert r.headers["x-request-id"]
        r = http.get("/v1/chat/completions")
        assert r.status_code == 405
        assert r.json()["error"]["type"] == "invalid_request_error"


def test_health_probes(gateway: Gateway) -> None:
    assert httpx.get(gateway.base_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.base_url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == {"demo": "ready"}
