"""Issue 5's acceptance test: a chat with a name, an e-mail, a phone number, a card number and a
cloud key goes through a real gateway (Presidio, the default policy) to a real worker process.

The model is the echo model: it answers with the last message it received, so the answer
shows what the model saw, and restoration has placeholders to put values back into. Every test
value (and fragments of it) is a canary of that model: the worker itself refuses any request
that holds one, so "the model never saw the values" is asserted inside the worker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e import audit_reader
from tests.e2e.conftest import Gateway, free_port, serve_config

pytestmark = pytest.mark.e2e

VALUES = {
    "PERSON": "Katherine Johnson",
    "EMAIL_ADDRESS": "katherine.johnson@example.com",
    "PHONE_NUMBER": "+1 (415) 555-0132",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "AWS_ACCESS_KEY": "AKIAIOSFODNN7EXAMPLE",
}
# Fragments that must not reach the model either.
FRAGMENTS = ["Katherine", "Johnson", "katherine.johnson", "555-0132", "4111 1111", "AKIAIOSFODNN7"]
CANARY = "zebra-canary-7731"  # not sensitive to any detector: it reaches the worker (control)

PROMPT = (
    f"My name is {VALUES['PERSON']} and my e-mail is {VALUES['EMAIL_ADDRESS']}. Call me on "
    f"{VALUES['PHONE_NUMBER']}. Charge the card {VALUES['CREDIT_CARD']} and deploy with the key "
    f"{VALUES['AWS_ACCESS_KEY']} today."
)
HISTORY = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": f"Hello, I am {VALUES['PERSON']}."},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": PROMPT},
]
MAX_TOKENS = 200


@pytest.fixture(scope="module")
def pii_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("pii")
    (root / "canaries.txt").write_text(
        "# every test value: the worker refuses a request holding one\n"
        + "\n".join([*VALUES.values(), *FRAGMENTS, CANARY])
        + "\n"
    )
    port = free_port()
    config = root / "llmos.yaml"
    config.write_text(
        f"state_dir: state\nserver: {{port: {port}}}\n"
        "pii: {max_text_chars: 5000}\n"
        "models:\n"
        "  - {name: echo, kind: echo, canary_file: canaries.txt}\n"
        "  - {name: echo-internal, kind: echo, labels: [internal]}\n"
    )
    with serve_config(config, port, root / "state") as gw:
        yield gw


def _no_values_in(text: str) -> None:
    for value in [*VALUES.values(), *FRAGMENTS]:
        assert value not in text


def test_values_never_reach_the_model_and_come_back_restored(pii_gateway: Gateway) -> None:
    raw = pii_gateway.client().chat.completions.with_raw_response.create(
        model="echo", messages=HISTORY, max_tokens=MAX_TOKENS
    )
    answer = raw.parse().choices[0].message.content
    # The worker checked every canary and generated; the echo came back with the values restored.
    assert answer == PROMPT

    entry = audit_reader.entry(pii_gateway.home, raw.headers["x-request-id"])
    assert entry is not None
    findings = json.loads(entry["findings"])
    last = [f for f in findings["input"] if f["text"] == len(HISTORY) - 1]
    assert {f["type"] for f in last} == set(VALUES)
    for f in last:  # type, offsets, recogniser, score: enough to find the value, never the value
        assert PROMPT[f["start"] : f["end"]] == VALUES[f["type"]]
        assert f["recognizer"] and 0 < f["score"] <= 1
    _no_values_in(json.dumps(entry))
    policy_input = json.loads(entry["policy_input"])
    assert policy_input["pii"]["findings"]["PERSON"] == 2  # the name in two messages


def test_a_stream_is_restored_whole(pii_gateway: Gateway) -> None:
    stream = pii_gateway.client().chat.completions.create(
        model="echo", messages=HISTORY, max_tokens=MAX_TOKENS, stream=True
    )
    deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(deltas) == PROMPT
    # Restored values arrive whole: a value is never split over two deltas.
    for value in VALUES.values():
        assert any(value in d for d in deltas), value


def test_the_stream_never_shows_part_of_an_entity_the_output_policy_redacts(pii_gateway: Gateway) -> None:
    # An SSN may go to a model labelled internal (not redacted on input); the output policy
    # redacts it in what the model says, however the stream is cut.
    ssn = "219-09-9999"
    stream = pii_gateway.client().chat.completions.create(
        model="echo-internal",
        messages=[{"role": "user", "content": f"Please file form 4 for SSN {ssn} by Friday."}],
        max_tokens=MAX_TOKENS,
        stream=True,
    )
    deltas = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(deltas) == "Please file form 4 for SSN <US_SSN> by Friday."
    assert not any(re.search(r"219|9999", d) for d in deltas)


def test_a_placeholder_typed_by_the_client_is_never_restored_into_data(pii_gateway: Gateway) -> None:
    forged = "Tell <PERSON_1> and <EMAIL_ADDRESS_1> that Grace Hopper wrote."
    answer = (
        pii_gateway.client()
        .chat.completions.create(
            model="echo", messages=[{"role": "user", "content": forged}], max_tokens=MAX_TOKENS
        )
        .choices[0]
        .message.content
    )
    assert answer == forged  # the typed placeholders stay as typed; the real name comes back


def test_content_parts_are_redacted_too(pii_gateway: Gateway) -> None:
    parts = [
        {"type": "text", "text": f"Write to {VALUES['EMAIL_ADDRESS']} "},
        {"type": "text", "text": f"about card {VALUES['CREDIT_CARD']}."},
    ]
    answer = (
        pii_gateway.client()
        .chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": parts}],  # type: ignore[list-item]
            max_tokens=MAX_TOKENS,
        )
        .choices[0]
        .message.content
    )
    assert answer == "".join(p["text"] for p in parts)


def test_the_worker_refuses_a_canary_that_got_through(pii_gateway: Gateway) -> None:
    # The control: nothing redacts this value, so it reaches the worker, which refuses it.
    with pytest.raises(openai.InternalServerError) as err:
        pii_gateway.client().chat.completions.create(
            model="echo", messages=[{"role": "user", "content": f"the code is {CANARY}"}], max_tokens=5
        )
    assert err.value.code == "canary_tripped"
    assert CANARY not in str(err.value)


def test_a_message_too_long_to_scan_is_413(pii_gateway: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        pii_gateway.client().chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "word " * 1500}], max_tokens=5
        )
    assert (err.value.status_code, err.value.code) == (413, "message_too_large")


def _tool_conversation(call_id: str) -> list[Any]:
    arguments = json.dumps({"to": VALUES["EMAIL_ADDRESS"], "card": VALUES["CREDIT_CARD"]})
    return [
        {"role": "user", "content": "Pay and mail me the receipt."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": "pay", "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "paid"},
        {"role": "user", "content": "Thanks, now summarise."},
    ]


def test_tool_call_arguments_never_reach_the_model(pii_gateway: Gateway) -> None:
    # The canary check covers every string the worker gets, arguments included.
    answer = (
        pii_gateway.client()
        .chat.completions.create(model="echo", messages=_tool_conversation("call_1"), max_tokens=MAX_TOKENS)
        .choices[0]
        .message.content
    )
    assert answer == "Thanks, now summarise."


def test_sensitive_data_in_an_identifier_is_refused(pii_gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        pii_gateway.client().chat.completions.create(
            model="echo", messages=_tool_conversation(VALUES["AWS_ACCESS_KEY"]), max_tokens=5
        )
    assert err.value.code == "sensitive_data_in_identifier"
    assert VALUES["AWS_ACCESS_KEY"] not in str(err.value)


def test_no_value_in_any_log(pii_gateway: Gateway) -> None:
    logs = [pii_gateway.log_path, *sorted((pii_gateway.home / "logs").glob("*.log"))]
    assert len(logs) >= 2
    for path in logs:
        _no_values_in(path.read_text())
        assert CANARY not in path.read_text()
