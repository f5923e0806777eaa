from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from explain.record import ExplanationError, ModelAttribution
from explain.store import ExplanationStore
from tests.explain import factories


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ExplanationStore]:
    with ExplanationStore(tmp_path / "explanations.db") as opened:
        yield opened


def _sql(store: ExplanationStore, statement: str, *args: object) -> None:
    with sqlite3.connect(store.path) as db:
        db.execute(statement, args)
    db.close()


def test_pending_then_final(store: ExplanationStore) -> None:
    pending = factories.record(ModelAttribution.pending())
    stored = store.put(pending)
    assert stored.digest == pending.digest() and stored.evidence_digest == pending.evidence_digest()
    got = store.get("req-0001")
    assert got is not None and got.record == pending
    assert (got.principal_id, got.tenant) == ("key:3f2a9c0d1e4b5a69", "acme")
    final = pending.with_attribution(ModelAttribution.ok(factories.attribution("full")))
    store.put(final)
    got = store.get("req-0001")
    assert got is not None and got.record == final and got.digest == final.digest()
    assert got.evidence_digest == pending.digest()


def test_a_pending_record_may_be_put_again(store: ExplanationStore) -> None:
    pending = factories.record(ModelAttribution.pending())
    store.put(pending)
    store.put(pending)
    store.put(pending.with_attribution(ModelAttribution("skipped", "overload")))
    got = store.get("req-0001")
    assert got is not None and got.record.model_attribution == ModelAttribution("skipped", "overload")


def test_final_records_never_change(store: ExplanationStore) -> None:
    final = factories.record()
    store.put(final)
    for again in (final, replace(final, model_attribution=ModelAttribution("failed", "timeout"))):
        with pytest.raises(ExplanationError, match="is final"):
            store.put(again)
    got = store.get("req-0001")
    assert got is not None and got.record == final


def test_a_replacement_fills_in_the_attribution_only(store: ExplanationStore) -> None:
    pending = factories.record(ModelAttribution.pending())
    store.put(pending)
    for changed in (
        replace(pending, principal_id="key:someone-else"),
        replace(pending, tenant="other"),
        replace(pending, decision=replace(pending.decision, status=201)),
        replace(pending, pii_findings=()),
    ):
        with pytest.raises(ExplanationError, match="model attribution only"):
            store.put(changed.with_attribution(ModelAttribution.ok(factories.attribution())))
    got = store.get("req-0001")
    assert got is not None and got.record == pending


def test_unknown_request(store: ExplanationStore) -> None:
    assert store.get("req-none") is None


def test_altered_rows_are_rejected(store: ExplanationStore) -> None:
    record = factories.record()
    store.put(record)
    a = record.model_attribution.attribution
    assert a is not None
    altered = replace(record, model_attribution=ModelAttribution.ok(replace(a, scores=(0.5, *a.scores[1:]))))
    _sql(store, "UPDATE explanations SET body = ?", altered.canonical_bytes())
    with pytest.raises(ExplanationError, match="does not match its digest"):
        store.get("req-0001")
    # An editor who also rewrites the digest changes the owner columns' record: caught too.
    moved = replace(record, tenant="other")
    _sql(store, "UPDATE explanations SET body = ?, digest = ?", moved.canonical_bytes(), moved.digest())
    with pytest.raises(ExplanationError, match="columns disagree"):
        store.get("req-0001")
    # Not canonical (pretty-printed), with a matching digest.
    pretty = json.dumps(record.to_json(), indent=1).encode()
    _sql(store, "UPDATE explanations SET body = ?, digest = ?", pretty, hashlib.sha256(pretty).hexdigest())
    with pytest.raises(ExplanationError, match="not canonical"):
        store.get("req-0001")
    garbage = b'{"v": 1}'
    _sql(store, "UPDATE explanations SET body = ?, digest = ?", garbage, hashlib.sha256(garbage).hexdigest())
    with pytest.raises(ExplanationError, match="malformed explanation"):
        store.get("req-0001")


def test_file_is_private_and_in_wal_mode(store: ExplanationStore) -> None:
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_reopening_keeps_the_records(tmp_path: Path) -> None:
    record = factories.record()
    with ExplanationStore(tmp_path / "x.db") as first:
        first.put(record)
    with ExplanationStore(tmp_path / "x.db") as second:
        got = second.get(record.request_id)
    assert got is not None and got.record == record


def test_threads(store: ExplanationStore) -> None:
    def work(i: int) -> str:
        pending = factories.record(ModelAttribution.pending(), request_id=f"req-{i}")
        store.put(pending)
        store.put(pending.with_attribution(ModelAttribution.ok(factories.attribution())))
        got = store.get(f"req-{i}")
        assert got is not None
        return got.record.model_attribution.status

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(work, range(40))) == ["ok"] * 40


def test_unusable_path(tmp_path: Path) -> None:
    with pytest.raises(ExplanationError, match="cannot open"):
        ExplanationStore(tmp_path / "missing-dir" / "x.db")
