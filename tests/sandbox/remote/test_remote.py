"""Remote workers over mutual TLS on loopback: RemoteModel (gateway side) against WorkerHost
(worker host side). One test runs a real sandboxed echo worker behind the host; the others put
a gated in-process model behind it, to hold requests in flight while hosts fail."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import WorkerUnavailable
from gateway.types import ChatMessage, DoneEvent, GenerateEvent, GenerateRequest, GenerationParams, TokenEvent
from sandbox.client import ModelWorker, WorkerSpec
from sandbox.protocol import Frame
from sandbox.remote.client import RemoteModel, RemoteSettings, _Endpoint
from sandbox.remote.host import WorkerHost
from sandbox.remote.tls import gateway_context, host_context
from tests.gateway.certs import Issued, TestCa

FAST = {
    "connect_timeout_s": 2.0,
    "health_interval_s": 0.1,
    "health_timeout_s": 0.5,
    "eject_backoff_initial_s": 0.05,
    "eject_backoff_max_s": 0.2,
}


@dataclass(frozen=True)
class Pki:
    gateway_ca: TestCa
    worker_ca: TestCa
    rogue_ca: TestCa
    gateway: Issued
    worker: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    gateway_ca, worker_ca = TestCa(root / "gw", "gateway CA"), TestCa(root / "wk", "worker CA")
    return Pki(
        gateway_ca,
        worker_ca,
        TestCa(root / "rogue", "rogue CA"),
        gateway_ca.issue("gateway", "gateway-1"),
        worker_ca.issue("worker", "worker-1", server=True, dns=("llmos-worker",)),
    )


class GatedModel:
    """Answers with the last message, then waits at ``gate`` (if shut) before its done event."""

    def __init__(self, state: str = "ready") -> None:
        self.state = state
        self.gate = asyncio.Event()
        self.gate.set()
        self.running = 0
        self.served = 0
        self.cancelled = 0

    async def generate(self, request: GenerateRequest) -> AsyncGenerator[GenerateEvent, None]:
        text = request.messages[-1].content if request.messages else (request.prompt or "")
        self.running += 1
        self.served += 1
        try:
            yield TokenEvent(text=text)
            await self.gate.wait()
            yield DoneEvent(finish_reason="stop", prompt_tokens=1, completion_tokens=1)
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise
        finally:
            self.running -= 1

    def explanation(self, request_id: str) -> asyncio.Future[Frame] | None:
        return None


def request(text: str, rid: str = "req") -> GenerateRequest:
    return GenerateRequest(
        id=rid, params=GenerationParams(max_tokens=8), messages=(ChatMessage(role="user", content=text),)
    )


async def answer(model: RemoteModel, text: str) -> str:
    events = [e async for e in model.generate(request(text))]
    assert isinstance(events[-1], DoneEvent)
    return "".join(e.text for e in events if isinstance(e, TokenEvent))


def host_for(pki: Pki, models: dict[str, Any], *, cert: Issued | None = None, port: int = 0) -> WorkerHost:
    cert = cert or pki.worker
    return WorkerHost(models, host_context(cert.cert, cert.key, pki.gateway_ca.cert_path), "127.0.0.1", port)


def remote(pki: Pki, ports: list[int], *, cert: Issued | None = None, **settings: Any) -> RemoteModel:
    cert = cert or pki.gateway
    values: dict[str, Any] = {"server_name": "llmos-worker", **FAST, **settings}
    return RemoteModel(
        "m",
        RemoteSettings(endpoints=tuple(("127.0.0.1", p) for p in ports), **values),
        gateway_context(cert.cert, cert.key, pki.worker_ca.cert_path),
    )


@contextlib.asynccontextmanager
async def serving(pki: Pki, hosts: list[WorkerHost], **settings: Any) -> AsyncIterator[RemoteModel]:
    """``hosts`` started and a RemoteModel over them; all stopped afterwards (a host a test
    stopped already is stopped again: that is a no-op)."""
    for host in hosts:
        await host.start()
    model = remote(pki, [host.port for host in hosts], **settings)
    await model.start()
    try:
        yield model
    finally:
        await model.stop()
        for host in hosts:
            await host.stop()


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_real_sandboxed_echo_worker_answers_over_mutual_tls(pki: Pki, tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = ModelWorker(WorkerSpec(name="m", model_dir=None, kind="echo", log_path=tmp_path / "w.log"))
        await worker.start()
        await worker.wait_ready(60)
        host = host_for(pki, {"m": worker})
        try:
            async with serving(pki, [host]) as model:
                await until(lambda: model.state == "ready")
                assert await answer(model, "hello over TLS") == "hello over TLS"
                assert model.outstanding == 0
        finally:
            await worker.stop()

    run(scenario)


@pytest.mark.parametrize(
    "case",
    [
        "gateway cert from another CA",
        "worker cert from another CA",
        "worker cert as gateway",
        "wrong name",
        "gateway cert without EKU",
        "worker cert without EKU",
    ],
)
def test_a_wrong_certificate_is_refused(pki: Pki, case: str) -> None:
    async def scenario() -> None:
        host_cert, gateway_cert, name = pki.worker, pki.gateway, "llmos-worker"
        if case == "gateway cert from another CA":
            gateway_cert = pki.rogue_ca.issue("rogue-gw", "gateway-x")
        elif case == "worker cert from another CA":
            host_cert = pki.rogue_ca.issue("rogue-wk", "worker-x", server=True, dns=("llmos-worker",))
        elif case == "worker cert as gateway":  # signed by the right CA for the other role
            gateway_cert = pki.gateway_ca.issue("gw-as-server", "gateway-s", server=True)
        elif case == "gateway cert without EKU":  # OpenSSL alone would accept it
            gateway_cert = pki.gateway_ca.issue("gw-no-eku", "gateway-n", eku=False)
        elif case == "worker cert without EKU":
            host_cert = pki.worker_ca.issue(
                "wk-no-eku", "worker-n", server=True, dns=("llmos-worker",), eku=False
            )
        else:
            name = "someone-else"
        host = host_for(pki, {"m": GatedModel()}, cert=host_cert)
        async with serving(pki, [host], cert=gateway_cert, server_name=name) as model:
            await until(lambda: all(s["last_error"] for s in model.status()))
            assert model.state == "unavailable"
            [status] = model.status()
            assert status["state"] != "ready" and status["last_error"]
            with pytest.raises(WorkerUnavailable) as refused:
                await answer(model, "x")
            assert refused.value.code == "no_worker_host"

    run(scenario)


def test_requests_go_to_the_host_with_the_fewest_in_flight(pki: Pki) -> None:
    async def scenario() -> None:
        a_model, b_model = GatedModel(), GatedModel()
        a, b = host_for(pki, {"m": a_model}), host_for(pki, {"m": b_model})
        async with serving(pki, [a, b]) as model:
            await until(lambda: [s["state"] for s in model.status()] == ["ready", "ready"])
            a_model.gate.clear()
            b_model.gate.clear()
            held = [asyncio.create_task(answer(model, f"q{n}")) for n in range(4)]
            await until(lambda: a_model.running + b_model.running == 4)
            assert (a_model.running, b_model.running) == (2, 2)
            b_model.gate.set()  # b's two finish; a's two stay in flight
            await until(lambda: b_model.running == 0)
            assert await asyncio.gather(answer(model, "r0"), answer(model, "r1")) == ["r0", "r1"]
            assert (a_model.served, b_model.served) == (2, 4)  # the new ones went to b, the less busy
            a_model.gate.set()
            assert sorted(await asyncio.gather(*held)) == ["q0", "q1", "q2", "q3"]

    run(scenario)


def test_a_lost_host_fails_only_its_requests_is_ejected_and_re_admitted(pki: Pki) -> None:
    async def scenario() -> None:
        a_model, b_model = GatedModel(), GatedModel()
        a, b = host_for(pki, {"m": a_model}), host_for(pki, {"m": b_model})
        async with serving(pki, [a, b]) as model:
            a_port = a.port
            await until(
                lambda: (
                    model.state == "ready" and len([s for s in model.status() if s["state"] == "ready"]) == 2
                )
            )
            a_model.gate.clear()
            b_model.gate.clear()
            held = [asyncio.create_task(answer(model, f"q{n}")) for n in range(4)]
            await until(lambda: a_model.running == 2 and b_model.running == 2)
            await a.stop()  # host a is lost with two requests in flight
            b_model.gate.set()
            results = await asyncio.gather(*held, return_exceptions=True)
            lost = [r for r in results if isinstance(r, WorkerUnavailable)]  # 503s
            assert len(lost) == 2 and {e.code for e in lost} == {"worker_stopped"}  # it said why
            assert len([r for r in results if isinstance(r, str)]) == 2  # b's were answered
            await until(lambda: model.status()[0]["state"] != "ready")
            assert [await answer(model, f"after{n}") for n in range(3)] == ["after0", "after1", "after2"]
            assert model.status()[0]["ejections"] == 1

            a2_model = GatedModel()
            a2 = host_for(pki, {"m": a2_model}, port=a_port)  # the host comes back
            await a2.start()
            try:
                await until(lambda: model.status()[0]["state"] == "ready")  # re-admitted
                a2_model.gate.clear()
                b_model.gate.clear()
                back = [asyncio.create_task(answer(model, f"s{n}")) for n in range(2)]
                await until(lambda: a2_model.running + b_model.running == 2)
                assert a2_model.running == 1  # traffic reaches it again
                a2_model.gate.set()
                b_model.gate.set()
                await asyncio.gather(*back)
            finally:
                await a2.stop()

    run(scenario)


def test_a_host_that_stops_answering_pings_is_ejected(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        gated = GatedModel()
        host = host_for(pki, {"m": gated})
        async with serving(pki, [host]) as model:
            await until(lambda: model.state == "ready")
            gated.gate.clear()
            held = asyncio.create_task(answer(model, "q"))
            await until(lambda: gated.running == 1)
            from sandbox.remote import host as host_module

            real = host_module._Connection._handle

            def partitioned(self: Any, frame: Frame) -> None:  # the connection stays up, silent
                if frame.get("type") != "ping":
                    real(self, frame)

            monkeypatch.setattr(host_module._Connection, "_handle", partitioned)
            with pytest.raises(WorkerUnavailable) as lost:
                await held
            assert lost.value.code == "worker_host_lost"
            assert model.state == "unavailable"

    run(scenario)


def test_closing_the_stream_early_cancels_on_the_host(pki: Pki) -> None:
    async def scenario() -> None:
        gated = GatedModel()
        host = host_for(pki, {"m": gated})
        async with serving(pki, [host]) as model:
            await until(lambda: model.state == "ready")
            gated.gate.clear()
            events = model.generate(request("first"))
            first = await events.__anext__()
            assert isinstance(first, TokenEvent) and first.text == "first"
            await events.aclose()
            await until(lambda: gated.cancelled == 1 and gated.running == 0)
            assert model.outstanding == 0

    run(scenario)


def test_a_host_without_the_model_or_with_it_unhealthy_is_not_used(pki: Pki) -> None:
    async def scenario() -> None:
        other = host_for(pki, {"another": GatedModel()})
        sick = host_for(pki, {"m": GatedModel(state="unhealthy")})
        async with serving(pki, [other, sick]) as model:
            await until(lambda: all(s["last_error"] for s in model.status()))
            assert model.state == "unavailable"
            errors = [s["last_error"] for s in model.status()]
            assert "does not serve model 'm'" in errors[0] and "unhealthy" in errors[1]

    run(scenario)


def test_endpoints_follow_dns(pki: Pki) -> None:
    async def scenario() -> None:
        a, b = host_for(pki, {"m": GatedModel()}), host_for(pki, {"m": GatedModel()})
        await a.start()
        await b.start()
        answers = [
            [("127.0.0.1", a.port)],
            [("127.0.0.1", a.port), ("127.0.0.1", b.port)],
            [("127.0.0.1", b.port)],
        ]
        current = answers[0]

        async def resolver(host: str, port: int) -> list[tuple[str, int]]:
            assert (host, port) == ("llmos-worker.test", 7443)
            return current

        settings = RemoteSettings(
            dns=("llmos-worker.test", 7443), server_name="llmos-worker", dns_refresh_s=0.1, **FAST
        )
        model = RemoteModel(
            "m",
            settings,
            gateway_context(pki.gateway.cert, pki.gateway.key, pki.worker_ca.cert_path),
            resolver=resolver,
        )
        await model.start()
        try:
            await until(lambda: [s["endpoint"] for s in model.status()] == [f"127.0.0.1:{a.port}"])
            current = answers[1]
            await until(lambda: len([s for s in model.status() if s["state"] == "ready"]) == 2)
            current = answers[2]
            await until(lambda: [s["endpoint"] for s in model.status()] == [f"127.0.0.1:{b.port}"])
            assert await answer(model, "via dns") == "via dns"
        finally:
            await model.stop()
            await a.stop()
            await b.stop()

    run(scenario)


def test_a_draining_host_finishes_its_requests_and_gets_no_new_ones(pki: Pki) -> None:
    async def scenario() -> None:
        a_model, b_model = GatedModel(), GatedModel()
        a, b = host_for(pki, {"m": a_model}), host_for(pki, {"m": b_model})
        async with serving(pki, [a, b]) as model:
            await until(lambda: [s["state"] for s in model.status()] == ["ready", "ready"])
            a_model.gate.clear()
            held = [asyncio.create_task(answer(model, f"q{n}")) for n in range(2)]
            await until(lambda: a_model.running + b_model.running == 1)  # b's done at once
            stopping = asyncio.create_task(a.stop(drain_s=30))  # a rolling update of host a
            await until(lambda: model.status()[0]["state"] == "draining")
            assert [await answer(model, f"n{n}") for n in range(3)] == ["n0", "n1", "n2"]
            assert a_model.served == 1  # nothing new went to the draining host
            a_model.gate.set()  # its request in flight finishes normally
            assert sorted(await asyncio.gather(*held)) == ["q0", "q1"]
            await stopping

    run(scenario)


class FailingModel(GatedModel):
    async def generate(self, request: GenerateRequest) -> AsyncGenerator[GenerateEvent, None]:
        raise RuntimeError("a bug in the host")
        yield  # pragma: no cover


def test_host_failures_end_the_request_with_the_right_error(pki: Pki) -> None:
    from gateway.errors import WorkerRequestError
    from gateway.pipeline import translate

    async def scenario() -> None:
        host = host_for(pki, {"m": FailingModel(), "other": GatedModel()})
        async with serving(pki, [host]) as model:
            await until(lambda: model.state == "ready")
            with pytest.raises(WorkerRequestError) as failed:  # not a hang
                await answer(model, "x")
            assert failed.value.code == "generation_failed" and translate(failed.value).status == 500

    run(scenario)


def test_explanations_come_back_through_the_hosts_model_pool(pki: Pki, tmp_path: Path) -> None:
    from gateway.config import Config
    from gateway.runtime import build_local_workers, build_pool

    config = Config.from_mapping(
        {"state_dir": str(tmp_path / "state"), "models": [{"name": "m", "kind": "echo"}]},
        source="test",
        base_dir=tmp_path,
    )
    models = list(config.models or [])

    async def scenario() -> None:
        pool = build_pool(config, models, build_local_workers(config, models, None))
        await pool.start()
        host = host_for(pki, pool.models)
        try:
            async with serving(pki, [host]) as model:
                await until(lambda: model.state == "ready")
                asked = GenerateRequest(
                    id="explained",
                    params=GenerationParams(max_tokens=8),
                    messages=(ChatMessage(role="user", content="why"),),
                    explain={},
                )
                events = [e async for e in model.generate(asked)]
                assert isinstance(events[-1], DoneEvent)
                owed = model.explanation("explained")
                assert owed is not None
                frame = await asyncio.wait_for(owed, 10)
                # the worker's own answer, not one the gateway made up
                assert (frame["status"], frame["reason"]) == ("not_applicable", "echo_model")
        finally:
            await pool.stop()

    run(scenario)


def test_stop_ends_an_endpoint_whose_cancellation_was_lost(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Python 3.11 asyncio.wait_for can swallow a cancel that comes as its awaitable finishes:
    the session then fails later instead. stop() must still end the endpoint, not reconnect."""
    in_session = asyncio.Event()

    async def session_losing_the_cancel(self: _Endpoint) -> None:
        in_session.set()
        with contextlib.suppress(asyncio.CancelledError):  # lost, as wait_for may lose it
            await asyncio.sleep(60)
        raise OSError("connection reset")

    monkeypatch.setattr(_Endpoint, "_connected_session", session_losing_the_cancel)

    async def scenario() -> None:
        model = remote(pki, [1])  # never connected: the session is the stand-in above
        await model.start()
        await asyncio.wait_for(in_session.wait(), 5)
        await asyncio.wait_for(model.stop(), 5)  # without the stop flag: reconnects, hangs
        [status] = model.status()
        assert status["state"] == "stopped"

    run(scenario)


def test_an_endpoint_stop_cancelled_while_it_waits_still_fails_the_requests_in_flight(pki: Pki) -> None:
    async def scenario() -> None:
        gated = GatedModel()
        gated.gate.clear()
        async with serving(pki, [host_for(pki, {"m": gated})]) as model:
            await until(lambda: model.status()[0]["state"] == "ready")
            stream = model.generate(request("held"))
            assert isinstance(await anext(stream), TokenEvent)  # in flight, held at the gate
            [endpoint] = model._endpoints.values()
            stopping = asyncio.get_running_loop().create_task(endpoint.stop())
            await asyncio.sleep(0)  # stop() is waiting for the supervisor to end
            stopping.cancel()
            await asyncio.wait({stopping}, timeout=10)
            assert stopping.cancelled()  # the cancel was not swallowed
            with pytest.raises(WorkerUnavailable) as info:
                await anext(stream)
            assert info.value.code == "worker_stopped"  # and the request was still answered
            gated.gate.set()

    run(scenario)
