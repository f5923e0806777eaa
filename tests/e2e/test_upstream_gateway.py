"""Issue 10: an upstream model (an OpenAI-compatible API) behind a real gateway gets the same
pipeline as a local one: authentication, input policy, PII redaction (Presidio) in and out,
streams too, canaries, audit entries and explanation records. The upstream is a real HTTP
server on loopback (tests/fakeupstream.py) that records what reached it."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway, free_port, serve_config, wait_record
from tests.fakeupstream import KEY, FakeUpstream, Reply, fake_upstream

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
VALUES = {
    "PERSON": "Katherine Johnson",
    "EMAIL_ADDRESS": "katherine.johnson@example.com",
    "CREDIT_CARD": "4111 1111 1111 1111",
}
PROMPT = f"My name is {VALUES['PERSON']}, mail {VALUES['EMAIL_ADDRESS']} and charge {VALUES['CREDIT_CARD']}."
CANARY = "zebra-canary-7731"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with fake_upstream() as u:
        yield u


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("upstream")
    policies = root / "policies"
    shutil.copytree(ROOT / "policies", policies, ignore=shutil.ignore_patterns("__*"))
    data = json.loads((policies / "data.json").read_text())
    data["llmos"]["config"]["explain"] = "summary"  # asks for attributions: upstreams say why not
    (policies / "data.json").write_text(json.dumps(data))
    (root / "canaries.txt").write_text(CANARY + "\n")
    key_file = root / "upstream.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    port = free_port()
    up = (
        f"base_url: '{upstream.base_url}', api_key_file: upstream.key, timeout_s: 3, retries: 1,"
        " backoff_initial_s: 0.05"
    )
    (root / "llmos.yaml").write_text(
        f"state_dir: state\nserver: {{port: {port}}}\n"
        "policy: {dir: policies, run_tests_on_load: false}\n"
        "models:\n"
        f"  - {{name: up, kind: upstream, canary_file: canaries.txt, upstream: {{{up}, model: gpt-up}}}}\n"
        f"  - {{name: up-internal, kind: upstream, labels: [internal], upstream: {{{up}}}}}\n"
    )
    with serve_config(root / "llmos.yaml", port, root / "state") as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def fresh(upstream: FakeUpstream) -> None:
    upstream.script.clear()
    upstream.default = Reply()


def chat(gw: Gateway, content: str, model: str = "up", **extra: object) -> openai.types.chat.ChatCompletion:
    return gw.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=64, **extra
    )


def test_an_upstream_answers_through_the_gateway(gw: Gateway, upstream: FakeUpstream) -> None:
    raw = gw.client().chat.completions.with_raw_response.create(
        model="up", messages=[{"role": "user", "content": "Hello"}], max_tokens=64
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "Hello from upstream."
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 7)  # type: ignore[union-attr]
    sent = upstream.received[-1]
    assert sent.body["model"] == "gpt-up" and sent.body["max_tokens"] == 64
    assert sent.headers["authorization"] == f"Bearer {KEY}"  # the upstream's key, from its file
    assert gw.admin_key not in json.dumps(sent.headers)  # never the client's credential
    assert sent.headers["x-request-id"] == raw.headers["x-request-id"]
    models = [m.id for m in gw.client().models.list()]
    assert {"up", "up-internal"} <= set(models)
    workers = httpx.get(gw.base_url + "/admin/workers", headers={"authorization": f"Bearer {gw.admin_key}"})
    assert workers.json()["workers"]["up"]["upstream"] == {
        "name": "up",
        "kind": "upstream",
        "base_url": upstream.base_url + "/",
        "model": "gpt-up",
    }
    assert KEY not in workers.text


def test_values_never_reach_the_upstream_and_come_back_restored(gw: Gateway, upstream: FakeUpstream) -> None:
    upstream.default = Reply(echo=True)
    assert chat(gw, PROMPT).choices[0].message.content == PROMPT
    seen = json.dumps(upstream.received[-1].body)
    for value in VALUES.values():
        assert value not in seen
    assert "<PERSON_1>" in seen


def test_a_stream_passes_through_and_is_restored(gw: Gateway, upstream: FakeUpstream) -> None:
    upstream.default = Reply(echo=True)
    stream = chat(gw, PROMPT, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert "".join(deltas) == PROMPT
    assert len([d for d in deltas if d]) > 3  # chunk by chunk, not one block
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 11
    assert upstream.received[-1].body["stream"] is True


def test_output_redaction_holds_across_upstream_chunks(gw: Gateway, upstream: FakeUpstream) -> None:
    upstream.default = Reply(chunks=("File SSN 219", "-09-", "9999 by", " Friday."))
    stream = chat(gw, "Which SSN?", model="up-internal", stream=True)
    deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(deltas) == "File SSN <US_SSN> by Friday."
    assert not any("219" in d or "9999" in d for d in deltas)
    upstream.default = Reply(text="Card 4111 1111 1111 1111 on file.")
    assert (
        chat(gw, "Which card?", model="up-internal").choices[0].message.content
        == "Card <CREDIT_CARD> on file."
    )


MAIL_CALL = ("call_m1", "send_mail", '{"to": "<EMAIL_ADDRESS_1>", "body": "Invoice paid."}')


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_tool_calls_come_back_with_the_callers_values_restored(
    gw: Gateway, upstream: FakeUpstream, stream: bool
) -> None:
    upstream.default = Reply(text="", calls=(MAIL_CALL,), finish="tool_calls", call_piece=7)
    tools = [{"type": "function", "function": {"name": "send_mail", "parameters": {"type": "object"}}}]
    if not stream:
        choice = chat(gw, PROMPT, tools=tools).choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        calls = [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    else:
        chunks = list(chat(gw, PROMPT, tools=tools, stream=True))
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        pieces: dict[int, list[str]] = {}
        ids: dict[int, tuple[str, str]] = {}
        for c in chunks:
            for d in (c.choices[0].delta.tool_calls or []) if c.choices else []:
                pieces.setdefault(d.index, []).append(d.function.arguments or "")
                if d.id:
                    ids[d.index] = (d.id, d.function.name)
        calls = [(*ids[i], "".join(pieces[i])) for i in sorted(pieces)]
    assert len(calls) == 1 and calls[0][:2] == ("call_m1", "send_mail")
    assert json.loads(calls[0][2]) == {"to": VALUES["EMAIL_ADDRESS"], "body": "Invoice paid."}
    assert VALUES["EMAIL_ADDRESS"] not in json.dumps(upstream.received[-1].body)


def test_sensitive_data_the_model_puts_in_tool_arguments_is_redacted_audited_and_explained(
    gw: Gateway, upstream: FakeUpstream
) -> None:
    call = ("call_s1", "file_form", '{"ssn": "219-09-9999", "note": "ok"}')
    upstream.default = Reply(text="Filing.", calls=(call,), finish="tool_calls")
    raw = gw.client().chat.completions.with_raw_response.create(
        model="up-internal", messages=[{"role": "user", "content": "File my form"}], max_tokens=32
    )
    message = raw.parse().choices[0].message
    assert message.content == "Filing."
    assert message.tool_calls is not None
    assert json.loads(message.tool_calls[0].function.arguments) == {"ssn": "<US_SSN>", "note": "ok"}
    rid = raw.headers["x-request-id"]
    entry = audit_reader.entry(gw.home, rid)
    assert entry is not None
    rows = json.loads(entry["findings"])["output"]
    assert [(r.get("call"), r["type"]) for r in rows] == [(0, "US_SSN")]
    assert "219-09" not in json.dumps(entry)
    record = wait_record(gw, rid)["record"]
    assert [(f["location"], f["text_index"], f["entity_type"]) for f in record["pii_findings"]] == [
        ("tool_call", 0, "US_SSN")
    ]


def test_a_canary_never_leaves_the_gateway(gw: Gateway, upstream: FakeUpstream) -> None:
    before = len(upstream.received)
    with pytest.raises(openai.InternalServerError) as err:
        chat(gw, f"the code is {CANARY}")
    assert err.value.code == "canary_tripped"
    assert CANARY not in str(err.value)
    assert len(upstream.received) == before


def test_a_policy_denial_sends_nothing_upstream(gw: Gateway, upstream: FakeUpstream) -> None:
    contractor = gw.create_key("contractor-up", "contractor")  # the policy gives contractors demo only
    before = len(upstream.received)
    with pytest.raises(openai.PermissionDeniedError) as err:
        gw.client(contractor).chat.completions.create(
            model="up", messages=[{"role": "user", "content": "hi"}], max_tokens=5
        )
    assert err.value.code == "model_not_permitted"
    assert len(upstream.received) == before


def test_upstream_failures_are_openai_errors_without_the_upstream_body(
    gw: Gateway, upstream: FakeUpstream
) -> None:
    upstream.default = Reply(status=429, headers={"Retry-After": "1"})
    r = httpx.post(
        gw.base_url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {gw.admin_key}"},
        json={"model": "up", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "upstream_rate_limited"
    assert "acct_42" not in r.text
    entry = audit_reader.entry(gw.home, r.headers["x-request-id"])
    assert entry is not None and (entry["status"], entry["model"]) == (503, "up")

    upstream.default = Reply(status=500)
    with pytest.raises(openai.APIStatusError) as err:
        chat(gw, "hi")
    assert (err.value.status_code, err.value.code) == (502, "upstream_error")

    upstream.default = Reply(text="", raw_call={"id": "bad id", "function": {"name": "f", "arguments": "{}"}})
    with pytest.raises(openai.APIStatusError) as err:
        chat(gw, "hi", stream=False)
    assert (err.value.status_code, err.value.code) == (502, "upstream_invalid_response")


def test_a_stream_cut_by_the_upstream_ends_with_an_error_event(gw: Gateway, upstream: FakeUpstream) -> None:
    upstream.default = Reply(text="one two three four five", drop_after=2)
    with httpx.stream(
        "POST",
        gw.base_url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {gw.admin_key}"},
        json={"model": "up-internal", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeout=30,
    ) as r:
        body = r.read().decode()
        rid = r.headers["x-request-id"]
    assert '"upstream_error"' in body
    assert "[DONE]" not in body
    end = audit_reader.entry(gw.home, rid, "stream_end")
    assert end is not None and end["status"] == 502


def test_requests_are_audited_and_explained_and_the_key_is_nowhere(
    gw: Gateway, upstream: FakeUpstream
) -> None:
    raw = gw.client().chat.completions.with_raw_response.create(
        model="up", messages=[{"role": "user", "content": "Audit me"}], max_tokens=8
    )
    rid = raw.headers["x-request-id"]
    entry = audit_reader.entry(gw.home, rid)
    assert entry is not None
    assert (entry["decision"], entry["status"], entry["model"]) == ("allow", 200, "up")
    assert (entry["prompt_tokens"], entry["completion_tokens"]) == (11, 7)
    record = wait_record(gw, rid)["record"]
    assert record["model_attribution"] == {
        "status": "not_applicable",
        "reason": "remote_model",
        "attribution": None,
    }
    assert record["decision"]["rules"]  # the policy's evidence, as for a local model
    everything = gw.log_path.read_text()
    everything += json.dumps(audit_reader.entries(gw.home))
    with sqlite3.connect(gw.home / "explanations.db") as db:
        everything += "".join(str(b) for (b,) in db.execute("SELECT body FROM explanations"))
    assert KEY not in everything
    assert "acct_42" not in everything


def test_unsafe_disable_turns_off_exactly_what_it_names(tmp_path: Path, upstream: FakeUpstream) -> None:
    port = free_port()
    (tmp_path / "llmos.yaml").write_text(
        f"state_dir: state\nserver: {{port: {port}}}\n"
        "unsafe_disable: [policy, pii, audit]\n"
        "models:\n"
        f"  - {{name: up, kind: upstream, upstream: {{base_url: '{upstream.base_url}', api_key_env: UP_KEY}}}}\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UP_KEY", KEY)
        with serve_config(tmp_path / "llmos.yaml", port, tmp_path / "state") as gw:
            contractor = gw.create_key("contractor-off", "contractor")  # the policy would refuse: it is off
            upstream.default = Reply(echo=True)
            answer = gw.client(contractor).chat.completions.create(
                model="up", messages=[{"role": "user", "content": PROMPT}], max_tokens=8
            )
            assert answer.choices[0].message.content == PROMPT
            assert VALUES["EMAIL_ADDRESS"] in json.dumps(upstream.received[-1].body)  # nothing redacted
            with pytest.raises(openai.AuthenticationError):  # authentication stays on
                gw.client("sk-llmos-not-a-key").models.list()
            requests = [e for e in audit_reader.entries(gw.home) if e["endpoint"] == "chat.completions"]
            assert requests == []
    log = (tmp_path / "server.log").read_text()
    for feature in ("policy", "pii", "audit"):
        assert f"UNSAFE: unsafe_disable lists {feature}" in log
