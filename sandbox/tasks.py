"""Stopping asyncio tasks without losing the stopper's own cancellation."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has finished; its outcome is not raised.

    Unlike ``task.cancel()`` then ``with suppress(CancelledError): await task``, a cancellation of
    the *caller* that arrives while it waits still propagates. In a ``finally`` of a supervising
    loop the suppressing form swallowed that cancel when it came at this moment: the loop went
    on reconnecting and whoever stopped it waited forever.
    """
    task.cancel()
    await asyncio.wait({task})
    if not task.cancelled():
        task.exception()  # retrieved, so never reported as "exception was never retrieved"
