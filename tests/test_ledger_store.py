"""The ledger's tables: one row per half-hour, re-bills replaced and reported, pruning."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ioagent.ledger.parse import Bucket, parse_measurements
from ioagent.store.database import MIGRATIONS, Store, migrate, schema_version
from ioagent.store.ledger import (
    HOME_SIGNAL,
    latest_settled,
    rebilled_since,
    record_transition,
    save_settled,
    settled_between,
    transitions_between,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "ledger"
ACCOUNT = "A-1234ABCD"
NOW = datetime(2026, 10, 8, 9, 0, tzinfo=UTC)
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def fixture_rows(name: str) -> list:  # type: ignore[type-arg]
    data = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return parse_measurements(data).half_hours


def test_rows_round_trip_with_buckets_bands_and_unknown_labels() -> None:
    store = Store.open_memory()
    rows = fixture_rows("v2_page.json") + fixture_rows("unknown_label_page.json")
    result = save_settled(store, ACCOUNT, rows, NOW)
    assert (result.added, result.unchanged, result.rebilled) == (4, 0, [])
    assert settled_between(store, ACCOUNT, *EVER) == rows
    assert settled_between(store, "A-OTHER", *EVER) == []
    assert latest_settled(store, ACCOUNT) == rows[-1].start


def test_an_unchanged_refetch_is_not_a_rebill() -> None:
    store = Store.open_memory()
    rows = fixture_rows("v1_page1.json")
    save_settled(store, ACCOUNT, rows, NOW)
    again = save_settled(store, ACCOUNT, fixture_rows("v1_page1.json"), NOW + timedelta(hours=6))
    assert (again.added, again.unchanged, again.rebilled) == (0, 2, [])
    assert rebilled_since(store, ACCOUNT, NOW) == []


def test_a_rebill_replaces_the_row_and_is_reported() -> None:
    store = Store.open_memory()
    first, second = fixture_rows("v1_page1.json")
    save_settled(store, ACCOUNT, [first, second], NOW)
    # Octopus moves the home's energy from the low bucket to the standard one.
    moved = tuple(
        Bucket(b.label, b.name, 1.98 if b.name == "home standard" else 0.0, 63.97, b.price_pence)
        if b.name.startswith("home")
        else b
        for b in first.buckets
    )
    rebill = replace(first, home_band="standard", buckets=moved)
    later = NOW + timedelta(days=1)
    result = save_settled(store, ACCOUNT, [rebill, second], later)
    assert (result.added, result.unchanged) == (0, 1)
    assert len(result.rebilled) == 1
    assert result.rebilled[0].before == first
    assert result.rebilled[0].after == rebill
    assert "home low" in result.rebilled[0].as_log()["before"]
    assert settled_between(store, ACCOUNT, *EVER) == [rebill, second]
    assert rebilled_since(store, ACCOUNT, later) == [first.start]


def test_transitions_store_only_changes_and_give_the_value_before_a_range() -> None:
    store = Store.open_memory()
    t0 = datetime(2026, 10, 7, 22, 30, tzinfo=UTC)
    assert record_transition(store, ACCOUNT, HOME_SIGNAL, t0, True)
    assert not record_transition(store, ACCOUNT, HOME_SIGNAL, t0 + timedelta(minutes=5), True)
    assert record_transition(store, ACCOUNT, HOME_SIGNAL, t0 + timedelta(hours=6), False)
    got = transitions_between(
        store, ACCOUNT, HOME_SIGNAL, t0 + timedelta(hours=1), t0 + timedelta(hours=8)
    )
    assert got == [(t0, True), (t0 + timedelta(hours=6), False)]
    assert transitions_between(store, ACCOUNT, "ev/offpeak", *EVER) == []


def test_history_days_prunes_settled_rows_and_transitions() -> None:
    store = Store.open_memory()
    rows = fixture_rows("v1_page1.json") + fixture_rows("split_page.json")
    save_settled(store, ACCOUNT, rows, NOW)
    record_transition(store, ACCOUNT, HOME_SIGNAL, rows[0].start, True)
    record_transition(store, ACCOUNT, HOME_SIGNAL, rows[-1].start, False)
    # split_page is 7 Oct; v1 is 30 Aug: keep 10 days from 8 Oct
    deleted = store.prune(NOW, keep_days=10)
    assert deleted == 3
    assert [r.start for r in settled_between(store, ACCOUNT, *EVER)] == [rows[-1].start]
    assert transitions_between(store, ACCOUNT, HOME_SIGNAL, *EVER) == [(rows[-1].start, False)]


def test_a_version_1_database_is_upgraded_with_its_data_kept(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    raw = sqlite3.connect(path, isolation_level=None)
    migrate(raw, MIGRATIONS[:1])
    raw.execute("INSERT INTO meta (key, value) VALUES ('kept', 'yes')")
    raw.close()
    store = Store.open(path)
    assert schema_version(store.conn) == len(MIGRATIONS) == 2
    assert store.get_meta("kept") == "yes"
    save_settled(store, ACCOUNT, fixture_rows("legacy_page.json"), NOW)
    store.close()
    reader = Store.open(path, read_only=True)
    assert len(settled_between(reader, ACCOUNT, *EVER)) == 2
    reader.close()
