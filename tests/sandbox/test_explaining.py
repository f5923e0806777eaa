"""Explanations in the worker: a request that asks for one gets exactly one explanation frame
after its answer (computed by the worker that holds the model), or a frame saying why not."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from explain.types import Attribution
from gateway.types import ChatMessage, DoneEvent, GenerateRequest, GenerationParams
from sandbox.client import ModelWorker, WorkerSpec
from sandbox.explaining import Explainer
from sandbox.protocol import Frame, request_from_frame, request_to_frame


def chat(n: int, explain: dict[str, Any] | None = None, max_tokens: int = 6) -> GenerateRequest:
    return GenerateRequest(
        id=f"req-{n}",
        params=GenerationParams(max_tokens=max_tokens, temperature=0.0),
        messages=(ChatMessage("user", f"tell me about the number {n} please"),),
        explain=explain,
    )


async def answer(
    worker: ModelWorker, request: GenerateRequest
) -> tuple[DoneEvent, asyncio.Future[Frame] | None]:
    events = worker.generate(request)
    first = await anext(events)
    owed = worker.explanation(request.id)  # taken while it answers, as the gateway does
    rest = [e async for e in events]
    done = [first, *rest][-1]
    assert isinstance(done, DoneEvent)
    return done, owed


def worker_for(tmp: Path, demo_model_dir: Path | None, **spec: Any) -> ModelWorker:
    kind = "echo" if demo_model_dir is None else "transformers"
    return ModelWorker(
        WorkerSpec(name="m", kind=kind, model_dir=demo_model_dir, log_path=tmp / "m.log", threads=1, **spec)
    )


@pytest.mark.parametrize("max_batch", [1, 8], ids=["one-at-a-time", "batched"])
def test_each_answer_gets_its_attribution(demo_model_dir: Path, tmp_path: Path, max_batch: int) -> None:
    worker = worker_for(tmp_path, demo_model_dir, max_batch=max_batch)

    async def scenario() -> None:
        await worker.start()
        try:
            await worker.wait_ready(120)
            results = await asyncio.gather(*(answer(worker, chat(n, {})) for n in range(4)))
            for done, owed in results:
                assert owed is not None
                frame = await asyncio.wait_for(owed, 60)
                assert frame["status"] == "ok", frame
                attribution = Attribution.from_json(frame["attribution"])  # a valid attribution
                assert attribution.method == "gradient_x_activation"  # the default
                assert len(attribution.prompt_ids) == attribution.prompt_total == done.prompt_tokens
                assert len(attribution.output_ids) == done.completion_tokens
                assert len(attribution.scores) == done.prompt_tokens
            full = {"scope": "full", "method": "integrated_gradients", "steps": 4}
            done, owed = await answer(worker, chat(9, full, max_tokens=3))
            assert owed is not None
            frame = await asyncio.wait_for(owed, 60)
            attribution = Attribution.from_json(frame["attribution"])
            assert frame["status"] == "ok" and attribution.scope == "full"
            assert len(attribution.scores) == done.completion_tokens
            assert not worker._explaining, "every explanation was taken and forgotten"
        finally:
            await worker.stop()

    asyncio.run(scenario())


def test_no_explanation_is_owed_unless_asked(demo_model_dir: Path, tmp_path: Path) -> None:
    worker = worker_for(tmp_path, demo_model_dir)

    async def scenario() -> None:
        await worker.start()
        try:
            await worker.wait_ready(120)
            _, owed = await answer(worker, chat(1))
            assert owed is None
        finally:
            await worker.stop()

    asyncio.run(scenario())


def test_the_echo_model_says_there_is_nothing_to_attribute(tmp_path: Path) -> None:
    worker = worker_for(tmp_path, None)

    async def scenario() -> None:
        await worker.start()
        try:
            await worker.wait_ready(60)
            _, owed = await answer(worker, chat(1, {}))
            assert owed is not None
            assert (await asyncio.wait_for(owed, 10))["reason"] == "echo_model"
            bad = {"method": "nonsense"}
            _, owed = await answer(worker, chat(2, bad))
            assert owed is not None
            frame = await asyncio.wait_for(owed, 10)
            assert (frame["status"], frame["reason"]) == ("failed", "invalid_result")
        finally:
            await worker.stop()

    asyncio.run(scenario())


def test_a_request_that_was_not_answered_owes_nothing_to_wait_for(tmp_path: Path) -> None:
    worker = worker_for(tmp_path, None)

    async def scenario() -> None:
        await worker.start()
        try:
            await worker.wait_ready(60)
            request = chat(1, {})
            events = worker.generate(request)
            await anext(events)
            owed = worker.explanation(request.id)
            await events.aclose()  # the client went away after the first token
            assert owed is not None
            frame = await asyncio.wait_for(owed, 10)
            assert (frame["status"], frame["reason"]) in (
                ("not_applicable", "not_generated"),
                ("not_applicable", "echo_model"),  # the echo answer may have been complete already
            )
        finally:
            await worker.stop()

    asyncio.run(scenario())


def test_a_worker_crash_fails_the_explanations_it_owed(demo_model_dir: Path, tmp_path: Path) -> None:
    worker = worker_for(tmp_path, demo_model_dir, max_batch=1, restart_backoff_initial_s=0.1)

    async def scenario() -> None:
        await worker.start()
        try:
            await worker.wait_ready(120)
            slow = {"method": "feature_ablation", "scope": "full", "max_output_tokens": 64}
            _, owed = await answer(worker, chat(1, slow, max_tokens=64))
            assert owed is not None
            pid = worker.pid
            assert pid is not None
            import os
            import signal

            os.kill(pid, signal.SIGKILL)
            frame = await asyncio.wait_for(owed, 30)
            if frame["status"] != "ok":  # unless it was quick enough to finish first
                assert (frame["status"], frame["reason"]) == ("failed", "worker_error")
        finally:
            await worker.stop()

    asyncio.run(scenario())


class FakeModel:
    model = object()
    tokenizer = None


def test_the_queue_is_bounded_and_says_overload() -> None:
    sent: list[Frame] = []
    explainer = Explainer(FakeModel(), sent.append, queue_size=2, interleave_after_s=5, clock=lambda: 0.0)
    done = DoneEvent("stop", 3, 2, prompt_ids=(1, 2, 3), output_ids=(4, 5))
    for n in range(3):
        explainer.offer(f"w{n}", chat(n, {}), done)
    assert sent == [{"type": "explanation", "id": "w2", "status": "skipped", "reason": "overload"}]
    assert explainer.pending() and explainer.due()  # half full (or more): one runs between two steps
    explainer.offer("w9", chat(9), done)  # not asked: nothing queued, nothing sent
    explainer.offer("w8", chat(8, {}), DoneEvent("stop", 3, 0, prompt_ids=(1, 2, 3)))
    assert sent[-1]["reason"] == "not_generated"


def test_an_attribution_waits_its_turn_then_interleaves() -> None:
    now = [0.0]
    explainer = Explainer(FakeModel(), [].append, queue_size=4, interleave_after_s=1.0, clock=lambda: now[0])
    explainer.offer("w", chat(1, {}), DoneEvent("stop", 1, 1, prompt_ids=(1,), output_ids=(2,)))
    assert not explainer.due()  # young, and the queue is not half full: only when idle
    now[0] = 1.5
    assert explainer.due()


def test_explain_settings_cross_the_wire() -> None:
    request = chat(3, {"method": "integrated_gradients", "steps": 8})
    back = request_from_frame(request_to_frame("w#1", request))
    assert back.explain == {"method": "integrated_gradients", "steps": 8}
    assert request_from_frame(request_to_frame("w#2", chat(4))).explain is None
    assert "explain" not in request_to_frame("w#2", chat(4))
    done = DoneEvent("stop", 1, 1, prompt_ids=(5,), output_ids=(6,))
    assert done == DoneEvent("stop", 1, 1)  # the ids stay inside the worker


def test_the_configured_queue_reaches_the_worker() -> None:
    from sandbox.worker import parse_args

    spec = WorkerSpec(name="m", kind="echo", explain_queue=3)
    assert parse_args(spec.worker_args(3)).explain_queue == 3
    assert parse_args(WorkerSpec(name="m", kind="echo").worker_args(3)).explain_queue == 64
    with pytest.raises(ValueError, match="explain_queue"):
        WorkerSpec(name="m", kind="echo", explain_queue=0)
