"""gateway.audit.search through a real AuditLog: filters, newest first, paging, sealed fields."""

from __future__ import annotations

from pathlib import Path

from gateway.audit.log import AuditLog
from gateway.audit.search import Filters

from .conftest import KeyPair, make_record


def fill(log: AuditLog) -> None:
    for n in range(1, 31):
        log.append(
            make_record(
                n,
                time=f"2026-11-30T08:{n:02d}:00.000+00:00",
                tenant="acme" if n % 2 else "globex",
                decision="deny" if n % 5 == 0 else "allow",
                model="tiny" if n % 3 else "big",
            )
        )
    log.append(make_record(31, phase="stream_start", time="2026-11-30T08:31:00.000+00:00"))  # not an outcome


def test_filters_pick_outcomes_newest_first(tmp_path: Path, keypair: KeyPair) -> None:
    with AuditLog(tmp_path / "audit.db", keypair.private_key) as log:
        fill(log)
        every = log.search(Filters(), limit=100)
        assert [e["request_id"] for e in every.entries] == [f"req-{n:04d}" for n in range(30, 0, -1)]
        assert every.next_before is None
        denied = log.search(Filters(tenant="acme", decision="deny"), limit=100)
        assert [e["request_id"] for e in denied.entries] == ["req-0025", "req-0015", "req-0005"]
        window = log.search(
            Filters(since="2026-11-30T08:10:00.000+00:00", until="2026-11-30T08:13:00.000+00:00", model="big")
        )
        assert [e["request_id"] for e in window.entries] == ["req-0012"]
        assert set(window.entries[0]) >= {"seq", "time", "tenant", "principal_id", "decision", "status"}


def test_paging_continues_where_the_last_page_ended(tmp_path: Path, keypair: KeyPair) -> None:
    with AuditLog(tmp_path / "audit.db", keypair.private_key) as log:
        fill(log)
        first = log.search(Filters(tenant="globex"), limit=4)
        assert [e["request_id"] for e in first.entries] == ["req-0030", "req-0028", "req-0026", "req-0024"]
        assert first.next_before is not None
        second = log.search(Filters(tenant="globex"), before_seq=first.next_before, limit=4)
        assert [e["request_id"] for e in second.entries] == ["req-0022", "req-0020", "req-0018", "req-0016"]


def test_sealed_fields_are_searched_opened(tmp_path: Path, keypair: KeyPair) -> None:
    with AuditLog(tmp_path / "audit.db", keypair.private_key, sealed_fields=["tenant", "principal_id"]) as log:
        fill(log)
        found = log.search(Filters(tenant="globex", principal_id="key:3f2a9c0d1e4b5a69"), limit=100)
        assert len(found.entries) == 15 and found.entries[0]["tenant"] == "globex"


def test_a_search_stops_well_before_since_and_scans_a_bounded_number(tmp_path: Path, keypair: KeyPair) -> None:
    with AuditLog(tmp_path / "audit.db", keypair.private_key) as log:
        for n in range(1, 1201):  # more than two pages
            hour = "06" if n <= 1100 else "08"
            log.append(make_record(n, time=f"2026-11-30T{hour}:00:{n % 60:02d}.000+00:00"))
        recent = log.search(Filters(since="2026-11-30T08:00:00.000+00:00"), limit=500)
        assert len(recent.entries) == 100 and recent.next_before is None
        assert recent.scanned < 200  # stopped once two hours before `since`, not at the log's start
        every = log.search(Filters(tenant="nobody"), limit=10)
        assert every.entries == [] and every.scanned == 1200 and every.next_before is None
