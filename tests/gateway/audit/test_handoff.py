"""The hand-off between callers and the writer thread, on its own."""

from __future__ import annotations

import asyncio
import queue
import threading

import pytest

from gateway.audit.handoff import Handoff, Job
from gateway.errors import AuditError


def test_jobs_come_out_in_order_and_threads_get_their_answers() -> None:
    handoff: Handoff[int, str] = Handoff(4, "test log")
    jobs: list[Job[int, str]] = [Job(n) for n in range(3)]
    for job in jobs:
        assert handoff.put(job)
    taken = [handoff.get(timeout=0) for _ in range(3)]
    assert taken == jobs
    with pytest.raises(queue.Empty):
        handoff.get(timeout=0)
    handoff.reply([(jobs[0], "zero"), (jobs[1], AuditError("refused")), (jobs[2], "two")])
    assert jobs[0].future is not None and jobs[0].future.result() == "zero"
    assert jobs[1].future is not None
    with pytest.raises(AuditError, match="refused"):
        jobs[1].future.result()


def test_room_is_limited_and_given_back_by_answers() -> None:
    handoff: Handoff[int, str] = Handoff(2, "test log")
    first, second, third = Job[int, str](1), Job[int, str](2), Job[int, str](3)
    assert handoff.put(first) and handoff.put(second)
    assert not handoff.put(third, wait=False)  # full: the caller decides how to wait
    waiter = threading.Thread(target=handoff.put, args=(third,))
    waiter.start()
    waiter.join(0.1)
    assert waiter.is_alive()  # blocked: backpressure
    assert handoff.get(timeout=0) is first
    handoff.reply([(first, "ok")])
    waiter.join(5)
    assert not waiter.is_alive()
    assert [handoff.get(timeout=0) for _ in range(2)] == [second, third]


def test_coroutines_are_answered_on_their_own_loop() -> None:
    handoff: Handoff[int, str] = Handoff(8, "test log")

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        jobs: list[Job[int, str]] = [Job(n, loop) for n in range(3)]
        for job in jobs:
            handoff.put(job)
        writer = threading.Thread(
            target=lambda: handoff.reply([(handoff.get(timeout=1), f"n{n}") for n in range(3)])  # type: ignore[misc]
        )
        writer.start()
        answers = [await job.waiter for job in jobs if job.waiter is not None]
        writer.join()
        return answers

    assert asyncio.run(main()) == ["n0", "n1", "n2"]


def test_close_puts_the_stop_marker_behind_accepted_jobs_and_refuses_more() -> None:
    handoff: Handoff[int, str] = Handoff(1, "test log")
    accepted = Job[int, str](1)
    handoff.put(accepted)
    blocked_errors: list[Exception] = []

    def blocked() -> None:
        try:
            handoff.put(Job(2))
        except AuditError as exc:
            blocked_errors.append(exc)

    waiter = threading.Thread(target=blocked)
    waiter.start()
    waiter.join(0.1)
    assert handoff.close()
    assert not handoff.close()
    waiter.join(5)
    assert [str(e) for e in blocked_errors] == ["test log is closed"]
    assert handoff.get(timeout=0) is accepted
    assert handoff.get(timeout=0) is None  # the stop marker
    with pytest.raises(AuditError, match="test log is closed"):
        handoff.put(Job(3))
