"""The write path under concurrency: backpressure, close() racing appends, and coroutines
(``append_async``) that are cancelled or wait for room: every append is written or refused,
none is lost and none hangs."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.audit.log import AuditLog
from gateway.audit.store import AuditStore
from gateway.audit.verify import verify_log
from gateway.errors import AuditError

from .conftest import KeyPair, make_record


def fill(log: AuditLog, first: int, last: int) -> None:
    for n in range(first, last + 1):
        log.append(make_record(n))


def test_a_backlog_blocks_appenders_and_loses_nothing(db_path: Path, keypair: KeyPair) -> None:
    with AuditLog(db_path, keypair.private_key, max_pending=2, max_batch=1) as log:
        threads = [threading.Thread(target=fill, args=(log, t * 10 + 1, t * 10 + 5)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert verify_log(db_path, keypair.public_key).entries == 40


def test_appends_racing_close_are_written_or_refused_never_lost(db_path: Path, keypair: KeyPair) -> None:
    log = AuditLog(db_path, keypair.private_key, max_batch=4)
    written: list[str] = []
    refused: list[str] = []

    def appender(t: int) -> None:
        for n in range(t * 100, t * 100 + 100):
            try:
                written.append(log.append(make_record(n)).request_id)
            except AuditError as exc:
                assert "closed" in str(exc)
                refused.append(str(n))

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    time.sleep(0.05)
    log.close()
    for th in threads:
        th.join(timeout=10)
        assert not th.is_alive()
    assert len(written) + len(refused) == 400
    with AuditStore.open_readonly(db_path) as store:
        assert sorted(row.request_id for row in store.iter_entries()) == sorted(written)
    assert verify_log(db_path, keypair.public_key).entries == len(written)


def test_async_appends_under_backpressure_lose_nothing(db_path: Path, keypair: KeyPair) -> None:
    log = AuditLog(db_path, keypair.private_key, max_pending=2, max_batch=1)

    async def main() -> list[int]:
        results = await asyncio.gather(*(log.append_async(make_record(n)) for n in range(40)))
        return sorted(r.seq for r in results)

    assert asyncio.run(main()) == list(range(1, 41))
    log.close()
    assert verify_log(db_path, keypair.public_key).entries == 40


def test_a_cancelled_async_append_is_still_written(db_path: Path, keypair: KeyPair) -> None:
    log = AuditLog(db_path, keypair.private_key, max_pending=1)
    gate = threading.Event()
    log._store.insert_nodes = _blocking(log._store.insert_nodes, gate)  # type: ignore[method-assign]

    async def main() -> None:
        first = asyncio.ensure_future(log.append_async(make_record(1)))  # holds the only permit
        second = asyncio.ensure_future(log.append_async(make_record(2)))  # waits for room
        await asyncio.sleep(0.05)
        first.cancel()
        second.cancel()  # the client went away: its entry must still be written
        with contextlib.suppress(asyncio.CancelledError):
            await first
        with contextlib.suppress(asyncio.CancelledError):
            await second
        gate.set()

    asyncio.run(main())
    log.close()
    with AuditStore.open_readonly(db_path) as store:
        assert [row.request_id for row in store.iter_entries()] == ["req-0001", "req-0002"]


def _blocking(insert: Callable[..., None], gate: threading.Event) -> Callable[..., None]:
    def wrapper(*args: object) -> None:
        gate.wait(10)
        insert(*args)

    return wrapper


def test_a_closed_log_refuses_async_appends(db_path: Path, keypair: KeyPair) -> None:
    log = AuditLog(db_path, keypair.private_key)
    log.close()
    with pytest.raises(AuditError, match="closed"):
        asyncio.run(log.append_async(make_record(1)))


def test_a_lazy_append_rides_on_the_next_commit(
    db_path: Path, keypair: KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A long hold, so a stall of a loaded machine cannot let the held entry go on its own.
    monkeypatch.setattr("gateway.audit.log.LAZY_WAIT_S", 5.0)
    with AuditLog(db_path, keypair.private_key) as log:

        async def scenario() -> tuple[int, int]:
            before = log.commits
            lazy = asyncio.ensure_future(log.append_async(make_record(1), lazy=True))
            await asyncio.sleep(0.05)  # held: not written on its own yet
            assert not lazy.done() and log.commits == before
            urgent = await log.append_async(make_record(2))
            held = await lazy
            return log.commits - before, urgent.seq - held.seq

        commits, gap = asyncio.run(scenario())
    assert commits == 1  # one transaction for both
    assert gap == 1  # the held entry went first, in the order it was appended
    assert verify_log(db_path, keypair.public_key).entries == 2


def test_a_lazy_append_alone_is_written_within_the_wait(db_path: Path, keypair: KeyPair) -> None:
    from gateway.audit.log import LAZY_WAIT_S

    with AuditLog(db_path, keypair.private_key) as log:

        async def scenario() -> float:
            started = time.monotonic()
            await log.append_async(make_record(1), lazy=True)
            return time.monotonic() - started

        took = asyncio.run(scenario())
    assert took < LAZY_WAIT_S + 2  # not stranded (the bound is generous: a busy CI machine)
    assert verify_log(db_path, keypair.public_key).entries == 1


def test_lazy_appends_held_at_close_are_written(db_path: Path, keypair: KeyPair) -> None:
    log = AuditLog(db_path, keypair.private_key)

    async def scenario() -> list[int]:
        pending = [asyncio.ensure_future(log.append_async(make_record(n), lazy=True)) for n in range(3)]
        await asyncio.sleep(0.01)
        await asyncio.to_thread(log.close)
        return [r.seq for r in await asyncio.gather(*pending)]

    assert sorted(asyncio.run(scenario())) == [1, 2, 3]
    assert verify_log(db_path, keypair.public_key).entries == 3


def test_lazy_appends_that_keep_coming_are_still_written_at_their_deadline(
    db_path: Path, keypair: KeyPair
) -> None:
    from gateway.audit.log import LAZY_WAIT_S

    with AuditLog(db_path, keypair.private_key) as log:

        async def scenario() -> float:
            first = asyncio.ensure_future(log.append_async(make_record(0), lazy=True))
            started = time.monotonic()
            others = []
            while not first.done():  # a lazy append every 10 ms, no urgent one ever
                assert time.monotonic() - started < LAZY_WAIT_S + 2, "held past its deadline"
                others.append(
                    asyncio.ensure_future(log.append_async(make_record(len(others) + 1), lazy=True))
                )
                await asyncio.sleep(0.01)
            waited = time.monotonic() - started
            await asyncio.gather(*others)
            return waited

        waited = asyncio.run(scenario())
    assert waited >= LAZY_WAIT_S * 0.8  # it was held for company, then written
