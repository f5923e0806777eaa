from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from sandbox.tasks import cancel_and_wait


async def _slow_to_stop() -> None:
    """A task whose cleanup after a cancel takes a moment (like a connection's reader closing)."""
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        await asyncio.sleep(0.05)
        raise


async def _suppressing(task: asyncio.Task[Any]) -> None:
    """The form this replaces: it swallows a cancel of the caller that comes while it waits."""
    task.cancel()
    with contextlib.suppress(BaseException):
        await task


async def _supervisor_stops(stop_inner: Callable[[asyncio.Task[Any]], Awaitable[None]]) -> bool:
    """The shape of a connection supervisor: a session ends with an error, its finally stops the
    session's reader, the loop retries. Cancel the supervisor while the finally waits: does it
    end?"""

    give_up = False  # only for this test's clean-up: the suppressing form never ends otherwise

    async def supervise() -> None:
        while not give_up:
            reader = asyncio.get_running_loop().create_task(_slow_to_stop())
            await asyncio.sleep(0)
            try:
                try:
                    raise TimeoutError("health check timed out")
                finally:
                    await stop_inner(reader)
            except TimeoutError:
                await asyncio.sleep(0.01)  # back off, then reconnect

    supervisor = asyncio.get_running_loop().create_task(supervise())
    await asyncio.sleep(0.02)  # inside the finally, waiting for the reader's cleanup
    supervisor.cancel()
    done, _ = await asyncio.wait({supervisor}, timeout=1.0)
    if not done:
        give_up = True
        await asyncio.wait({supervisor}, timeout=1.0)
    return bool(done) and supervisor.cancelled()


def test_a_cancel_of_the_caller_while_it_waits_is_not_swallowed() -> None:
    assert asyncio.run(_supervisor_stops(cancel_and_wait)) is True


def test_the_suppressing_form_it_replaces_would_have_swallowed_it() -> None:
    assert asyncio.run(_supervisor_stops(_suppressing)) is False


@pytest.mark.parametrize("outcome", ["error", "result", "cancelled"])
def test_waits_until_the_task_is_done_and_raises_nothing_of_it(outcome: str) -> None:
    async def main() -> None:
        async def work() -> int:
            if outcome == "error":
                raise RuntimeError("its own failure")
            if outcome == "cancelled":
                await asyncio.sleep(60)
            return 1

        task = asyncio.get_running_loop().create_task(work())
        if outcome != "cancelled":
            await asyncio.sleep(0)  # it finishes before the cancel
        await cancel_and_wait(task)
        assert task.done()
        assert task.cancelled() is (outcome == "cancelled")

    asyncio.run(main())
