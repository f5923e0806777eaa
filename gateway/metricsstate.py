"""What the Prometheus state collector reads from a running gateway (gateway/metrics.py): a
snapshot taken on the event loop (the pool and the workers are not thread-safe), also when the
scrape comes from the ``metrics.listen`` server's own thread."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from gateway.audit.log import AuditLog

if TYPE_CHECKING:
    from gateway.runtime import Runtime

SNAPSHOT_TIMEOUT_S = 5.0


def snapshot(runtime: Runtime) -> dict[str, Any]:
    pipeline = runtime.pipeline
    state: dict[str, Any] = {}
    if isinstance(runtime.audit, AuditLog):
        state["audit_queue"] = runtime.audit.queue_depth
        state["checkpoint_age_s"] = runtime.audit.checkpoint_age_s
    state["workers"] = {
        name: {"state": worker.state, "restarts": getattr(worker, "restarts", 0)}
        for name, worker in pipeline.workers.items()
    }
    pool = runtime.pool.status()
    state["devices"] = pool["devices"]
    state["models"] = pool["models"]
    explanations = pipeline.explanations
    if explanations is not None:
        state["explanation_queue"] = explanations.pending
        state["explanation_failures"] = explanations.failures
    state["policy_failures"] = pipeline.policy_failures
    state["auth_failures"] = dict(pipeline.auth_failures)
    state["limit_store"] = pipeline.limit_store.failures
    return state


class LoopSnapshot:
    """``snapshot(runtime)`` on the runtime's event loop, from whichever thread asks."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __call__(self) -> dict[str, Any]:
        loop = self._loop
        if loop is None or not loop.is_running() or self._on(loop):
            return snapshot(self._runtime)

        async def take() -> dict[str, Any]:
            return snapshot(self._runtime)

        return asyncio.run_coroutine_threadsafe(take(), loop).result(SNAPSHOT_TIMEOUT_S)

    @staticmethod
    def _on(loop: asyncio.AbstractEventLoop) -> bool:
        try:
            return asyncio.get_running_loop() is loop
        except RuntimeError:  # a thread with no loop: the listen server's
            return False
