"""Explanation frames a worker owes, by request id: one ledger for a local worker
(``sandbox.client``) and for worker hosts (``sandbox.remote.client``).

A request that asks for ``explain`` is *expected* before it is sent; once sent it is *owed*
by whoever serves it (a worker process, a worker host). The pipeline *claims* the future after
the answer and awaits it. The frame *resolves* it; if its owner is lost first, every frame it
owed resolves as ``failed`` with the reason. Unclaimed entries beyond ``limit`` are dropped
as they resolve, so a client that never asks cannot grow the ledger.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from sandbox.protocol import Frame

Owner = TypeVar("Owner")
MAX_UNCLAIMED_EXPLANATIONS = 4096


def explanation_frame(status: str, reason: str) -> Frame:
    return {"type": "explanation", "status": status, "reason": reason}


class OwedExplanations(Generic[Owner]):
    def __init__(self, limit: int = MAX_UNCLAIMED_EXPLANATIONS) -> None:
        self._limit = limit
        self._owed: dict[str, tuple[asyncio.Future[Frame], Owner | None]] = {}

    def expect(self, request_id: str, owner: Owner | None = None) -> None:
        self._owed[request_id] = (asyncio.get_running_loop().create_future(), owner)

    def owed_by(self, request_id: str, owner: Owner) -> None:
        entry = self._owed.get(request_id)
        if entry is not None:
            self._owed[request_id] = (entry[0], owner)

    def claim(self, request_id: str) -> asyncio.Future[Frame] | None:
        """The frame's future, to await once the answer was sent; None if none is owed."""
        entry = self._owed.get(request_id)
        if entry is None:
            return None
        future = entry[0]
        future.add_done_callback(lambda _: self._owed.pop(request_id, None))
        return future

    def resolve(self, request_id: str, frame: Frame) -> None:
        entry = self._owed.get(request_id)
        if entry is None:
            return
        if not entry[0].done():
            entry[0].set_result(frame)
        if len(self._owed) > self._limit:
            self._owed.pop(request_id, None)  # nobody asked for it in time: let it go

    def lost(self, owner: Owner | None, reason: str) -> None:
        """Everything ``owner`` owed (None: everything) will not come."""
        for request_id, (_, owed_by) in list(self._owed.items()):
            if owner is None or owed_by is owner:
                self.resolve(request_id, explanation_frame("failed", reason))

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._owed

    def __len__(self) -> int:
        return len(self._owed)
