from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import ioagent.store.database as store_module
from ioagent.kraken.types import BOOST, SMART, CompletedDispatch, Dispatch
from ioagent.store.async_store import AsyncStore, describe_storage_error
from ioagent.store.database import (
    MIGRATIONS,
    PRUNE_BATCH,
    Store,
    StoreError,
    migrate,
    schema_version,
    stored_time,
)

ACCOUNT = "A-1234ABCD"
DEVICE = "00000000-aaaa-bbbb-cccc-000000000001"
T0 = datetime(2026, 2, 7, 17, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def slot(start_min: float, end_min: float, kind: str = SMART, kwh: float | None = 2.5) -> Dispatch:
    return Dispatch(start=at(start_min), end=at(end_min), type=kind, kwh=kwh)


def done(
    start_min: float,
    end_min: float,
    kwh: float | None = -3.2,
    source: str | None = "smart-charge",
    location: str | None = "AT_HOME",
) -> CompletedDispatch:
    return CompletedDispatch(
        start=at(start_min), end=at(end_min), kwh=kwh, source=source, location=location
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "ioagent.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    opened = Store.open(db_path)
    try:
        yield opened
    finally:
        opened.close()


# --- opening, WAL, migrations ----------------------------------------------------------


def test_open_creates_the_directory_and_uses_wal(store: Store, db_path: Path) -> None:
    assert db_path.exists()
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert schema_version(store.conn) == len(MIGRATIONS)


def test_migrates_an_empty_version_0_database(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    sqlite3.connect(db_path).close()
    raw = sqlite3.connect(db_path)
    assert schema_version(raw) == 0
    raw.close()

    opened = Store.open(db_path)
    tables = {
        row[0] for row in opened.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    opened.close()
    assert {"meta", "plans", "slots", "completed", "events", "retained"} <= tables
    assert schema_version(sqlite3.connect(db_path)) == len(MIGRATIONS)


def test_a_later_migration_upgrades_in_place_and_keeps_data(store: Store) -> None:
    store.set_meta("last_success", "2026-02-07T17:00:00Z")
    extra = "ALTER TABLE meta ADD COLUMN note TEXT; UPDATE meta SET note = 'migrated';"
    assert migrate(store.conn, [*MIGRATIONS, extra]) == len(MIGRATIONS) + 1
    assert schema_version(store.conn) == len(MIGRATIONS) + 1
    row = store.conn.execute("SELECT value, note FROM meta WHERE key = 'last_success'").fetchone()
    assert row == ("2026-02-07T17:00:00Z", "migrated")


def test_a_failing_migration_leaves_the_previous_version(store: Store) -> None:
    broken = "CREATE TABLE half_done (x INTEGER); THIS IS NOT SQL;"
    with pytest.raises(sqlite3.Error):
        migrate(store.conn, [*MIGRATIONS, broken])
    assert schema_version(store.conn) == len(MIGRATIONS)
    names = [r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")]
    assert "half_done" not in names


def test_a_database_from_a_newer_ioagent_is_refused(db_path: Path) -> None:
    Store.open(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    raw.close()
    with pytest.raises(StoreError, match="newer than this ioagent"):
        Store.open(db_path)


def test_read_only_open_needs_an_existing_file_and_writes_nothing(db_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(db_path, read_only=True)
    Store.open(db_path).close()
    reader = Store.open(db_path, read_only=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.set_meta("k", "v")
    reader.close()


# --- plans and slots ------------------------------------------------------------------


def test_plan_survives_a_restart(db_path: Path) -> None:
    plan = [
        Dispatch(
            start=datetime(2026, 2, 7, 19, 30, 0, 123456, tzinfo=UTC),
            end=datetime(2026, 2, 7, 21, 0, tzinfo=timezone(timedelta(hours=1))),
            type=SMART,
            kwh=None,
            location="AT_HOME",
            source="smart-charge",
            device_id=DEVICE,
        ),
        slot(300, 330, BOOST, kwh=7.25),
    ]
    first = Store.open(db_path)
    assert first.load_plan(ACCOUNT, DEVICE) is None
    first.save_plan(ACCOUNT, DEVICE, plan, T0)
    first.close()

    reopened = Store.open(db_path)
    assert reopened.load_plan(ACCOUNT, DEVICE) == plan
    assert reopened.load_plan(ACCOUNT, "other-device") is None
    assert reopened.load_plan("A-OTHER", DEVICE) is None
    reopened.close()


def test_an_empty_plan_is_remembered_as_empty_not_missing(store: Store) -> None:
    store.save_plan(ACCOUNT, DEVICE, [], T0)
    assert store.load_plan(ACCOUNT, DEVICE) == []


def test_slots_keep_first_and_last_seen(store: Store) -> None:
    store.save_plan(ACCOUNT, DEVICE, [slot(120, 180)], at(0))
    store.save_plan(ACCOUNT, DEVICE, [slot(120, 180)], at(30))
    (record,) = store.slots_between(ACCOUNT, at(0), at(600))
    assert (record.first_seen, record.last_seen) == (at(0), at(30))
    assert record.withdrawn_at is None and record.replaced_at is None


@pytest.mark.parametrize(
    ("later_plan", "saved_at", "withdrawn", "replaced"),
    [
        pytest.param([], 30, True, False, id="gone-before-start-is-withdrawn"),
        pytest.param([slot(400, 430)], 30, True, False, id="unrelated-new-slot-still-withdrawn"),
        pytest.param([slot(120, 210)], 30, False, True, id="extended-is-replaced"),
        pytest.param([slot(150, 180)], 30, False, True, id="shortened-is-replaced"),
        pytest.param([], 130, False, False, id="gone-after-start-ran"),
        pytest.param([slot(120, 180)], 30, False, False, id="still-there"),
    ],
)
def test_what_happens_to_a_slot_that_leaves_the_plan(
    store: Store,
    later_plan: list[Dispatch],
    saved_at: float,
    withdrawn: bool,
    replaced: bool,
) -> None:
    store.save_plan(ACCOUNT, DEVICE, [slot(120, 180)], at(0))
    store.save_plan(ACCOUNT, DEVICE, later_plan, at(saved_at))
    original = next(s for s in store.slots_between(ACCOUNT, at(0), at(600)) if s.end == at(180))
    assert (original.withdrawn_at is not None) is withdrawn
    assert (original.replaced_at is not None) is replaced
    if withdrawn:
        assert original.withdrawn_at == at(saved_at)
    assert [s.end for s in store.withdrawn_between(ACCOUNT, at(0), at(600))] == (
        [at(180)] if withdrawn else []
    )


def test_a_withdrawn_slot_that_returns_is_no_longer_withdrawn(store: Store) -> None:
    store.save_plan(ACCOUNT, DEVICE, [slot(120, 180)], at(0))
    store.save_plan(ACCOUNT, DEVICE, [], at(10))
    assert store.withdrawn_between(ACCOUNT, at(0), at(600))
    store.save_plan(ACCOUNT, DEVICE, [slot(120, 180)], at(20))
    assert store.withdrawn_between(ACCOUNT, at(0), at(600)) == []


def test_withdrawal_is_per_device(store: Store) -> None:
    store.save_plan(ACCOUNT, DEVICE, [slot(120, 180)], at(0))
    store.save_plan(ACCOUNT, "second-car", [], at(10))
    assert store.withdrawn_between(ACCOUNT, at(0), at(600)) == []


# --- completed dispatches ----------------------------------------------------------------


def test_overlapping_polls_store_each_completed_dispatch_once(store: Store) -> None:
    first_poll = [done(60, 90), done(0, 30)]
    # The next ~12 h window repeats the 60-90 dispatch, re-serialised by Octopus with another
    # offset and microseconds; it is the same dispatch.
    repeated = CompletedDispatch(
        start=datetime(2026, 2, 7, 19, 0, 0, 0, tzinfo=timezone(timedelta(hours=1))),
        end=at(90),
        kwh=-3.2,
        source="smart-charge",
        location="AT_HOME",
    )
    assert repeated.start == at(60)
    second_poll = [done(120, 150, kwh=-1.0), repeated]
    assert store.add_completed(ACCOUNT, first_poll) == 2
    assert store.add_completed(ACCOUNT, second_poll) == 1
    assert store.add_completed(ACCOUNT, second_poll) == 0
    stored = store.completed_between(ACCOUNT, at(-60), at(600))
    assert [(c.start, c.end) for c in stored] == [
        (at(0), at(30)),
        (at(60), at(90)),
        (at(120), at(150)),
    ]


def test_a_repeated_dispatch_takes_the_latest_location_and_kwh(store: Store) -> None:
    store.add_completed(ACCOUNT, [done(0, 30, kwh=-2.0, location="AT_HOME")])
    assert store.add_completed(ACCOUNT, [done(0, 30, kwh=-2.4, location="AWAY")]) == 0
    (stored,) = store.completed_between(ACCOUNT, at(0), at(30))
    assert (stored.kwh, stored.location) == (-2.4, "AWAY")


def test_null_source_and_smart_charge_are_the_same_dispatch(store: Store) -> None:
    assert store.add_completed(ACCOUNT, [done(0, 30, source=None)]) == 1
    assert store.add_completed(ACCOUNT, [done(0, 30, source="smart-charge")]) == 0


def test_smart_and_boost_at_the_same_time_are_different(store: Store) -> None:
    pair = [done(0, 30), done(0, 30, source="bump-charge")]
    assert store.add_completed(ACCOUNT, pair) == 2
    kinds = sorted(c.type for c in store.completed_between(ACCOUNT, at(0), at(30)))
    assert kinds == [BOOST, SMART]


def test_two_cars_in_the_same_slot_are_kept_and_still_deduplicated(store: Store) -> None:
    two_cars = [done(0, 30, kwh=-3.0), done(0, 30, kwh=-5.0)]
    assert store.add_completed(ACCOUNT, two_cars) == 2
    assert store.add_completed(ACCOUNT, two_cars) == 0
    assert sorted(c.kwh or 0 for c in store.completed_between(ACCOUNT, at(0), at(30))) == [
        -5.0,
        -3.0,
    ]


def test_completed_between_returns_overlaps_for_one_account(store: Store) -> None:
    store.add_completed(ACCOUNT, [done(0, 30), done(100, 130)])
    store.add_completed("A-OTHER", [done(10, 20)])
    assert [c.start for c in store.completed_between(ACCOUNT, at(20), at(101))] == [at(0), at(100)]
    assert store.completed_between(ACCOUNT, at(30), at(100)) == []
    assert store.accounts() == ["A-1234ABCD", "A-OTHER"]


# --- events, retained payloads, meta -------------------------------------------------------


def test_events_are_kept_per_account_newest_first(store: Store) -> None:
    for n in range(5):
        store.log_event(ACCOUNT, {"event": "added", "n": n, "start": at(n)}, at(n))
    store.log_event("A-OTHER", {"event": "removed"}, at(9))
    recent = store.recent_events(ACCOUNT, 3)
    assert [e["n"] for e in recent] == [4, 3, 2]
    assert recent[0]["start"] == "2026-02-07T17:04:00Z"
    assert store.recent_events("A-OTHER", 10) == [{"event": "removed"}]


def test_retained_payloads_are_saved_replaced_and_deleted(db_path: Path) -> None:
    first = Store.open(db_path)
    first.save_retained("ioagent/A/offpeak", "false", at(0))
    first.save_retained("ioagent/A/offpeak", "true", at(5))
    first.save_retained("ioagent/A/dispatches/planned", "[]", at(6))
    first.delete_retained("ioagent/A/dispatches/planned")
    first.close()
    reopened = Store.open(db_path)
    assert reopened.load_retained() == {"ioagent/A/offpeak": ("true", at(5))}
    reopened.close()


def test_meta_values_are_replaced(store: Store) -> None:
    assert store.get_meta("last_success") is None
    store.set_meta("last_success", "a")
    store.set_meta("last_success", "b")
    assert store.get_meta("last_success") == "b"


# --- pruning -------------------------------------------------------------------------------


def test_prune_deletes_old_history_in_batches_and_keeps_current_state(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "PRUNE_BATCH", 3)
    now = at(0) + timedelta(days=30)
    old = [done(n * 40, n * 40 + 30) for n in range(7)]
    store.add_completed(ACCOUNT, [*old, done(60 * 24 * 29, 60 * 24 * 29 + 30)])
    store.save_plan(ACCOUNT, DEVICE, [slot(0, 30), slot(60 * 24 * 29, 60 * 24 * 29 + 30)], at(-1))
    for n in range(4):
        store.log_event(ACCOUNT, {"n": n}, at(n))
    store.log_event(ACCOUNT, {"n": "recent"}, now)
    store.save_retained("ioagent/A/offpeak", "true", at(0))
    store.set_meta("last_success", "x")

    assert store.prune(now, keep_days=10) == 7 + 1 + 4
    assert [c.start for c in store.completed_between(ACCOUNT, at(0), now)] == [at(60 * 24 * 29)]
    assert len(store.slots_between(ACCOUNT, at(-10), now)) == 1
    assert store.recent_events(ACCOUNT, 10) == [{"n": "recent"}]
    assert store.load_plan(ACCOUNT, DEVICE) is not None
    assert store.load_retained() != {}
    assert store.get_meta("last_success") == "x"
    assert store.prune(now, keep_days=10) == 0


# --- crash safety --------------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime, timedelta
    from ioagent.kraken.types import CompletedDispatch, Dispatch
    from ioagent.store.database import Store

    store = Store.open(sys.argv[1])
    base = datetime(2026, 2, 7, tzinfo=UTC)
    n = 0
    while True:
        start = base + timedelta(minutes=n)
        plan = [
            Dispatch(start + timedelta(hours=h), start + timedelta(hours=h, minutes=30), "SMART", 1.0)
            for h in range(1, 40)
        ]
        store.save_plan("A-1", "dev", plan, start)
        store.add_completed(
            "A-1", [CompletedDispatch(start, start + timedelta(minutes=1), float(n), None, None)]
        )
        store.save_retained("ioagent/A-1/counter", str(n), start)
        print(n, flush=True)
        n += 1
    """
)


def test_kill_9_during_writes_loses_nothing_committed(db_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db_path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    reported = -1
    timer = threading.Timer(30, child.kill)  # safety net if the child hangs
    timer.start()
    try:
        for line in child.stdout:
            reported = int(line)
            if reported >= 150:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        timer.cancel()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert reported >= 150

    reopened = Store.open(db_path)
    try:
        assert reopened.integrity_check() == "ok"
        base = datetime(2026, 2, 7, tzinfo=UTC)
        stored = reopened.completed_between("A-1", base, base + timedelta(days=2))
        kwh = {c.kwh for c in stored}
        assert set(map(float, range(reported + 1))) <= kwh
        counter = int(reopened.load_retained()["ioagent/A-1/counter"][0])
        assert counter >= reported
        plan = reopened.load_plan("A-1", "dev")
        assert plan is not None and len(plan) == 39
        assert plan[0].start == base + timedelta(minutes=counter, hours=1)
    finally:
        reopened.close()


# --- AsyncStore ----------------------------------------------------------------------------


async def test_async_store_round_trip_across_a_restart(db_path: Path) -> None:
    first = await AsyncStore.open(db_path)
    assert first.healthy and first.error is None
    await first.save_plan(ACCOUNT, DEVICE, [slot(120, 180)], at(0))
    assert await first.add_completed(ACCOUNT, [done(0, 30)], at(40)) == 1
    await first.save_retained("ioagent/A/offpeak", "true", at(1))
    await first.set_meta("last_success", "2026-02-07T17:00:00Z")
    await first.close()

    second = await AsyncStore.open(db_path)
    assert await second.load_plan(ACCOUNT, DEVICE) == [slot(120, 180)]
    assert await second.add_completed(ACCOUNT, [done(0, 30)]) == 0
    assert await second.load_retained() == {"ioagent/A/offpeak": ("true", at(1))}
    assert await second.get_meta("last_success") == "2026-02-07T17:00:00Z"
    await second.close()


async def test_concurrent_calls_are_serialised_on_one_worker(db_path: Path) -> None:
    store = await AsyncStore.open(db_path)
    counts = await asyncio.gather(
        *(store.add_completed(ACCOUNT, [done(n, n + 1)]) for n in range(50))
    )
    assert counts == [1] * 50
    assert len(await store.completed_between(ACCOUNT, at(0), at(100))) == 50
    await store.close()


async def test_calls_after_close_return_defaults(db_path: Path) -> None:
    store = await AsyncStore.open(db_path)
    await store.close()
    assert await store.load_plan(ACCOUNT, DEVICE) is None
    assert await store.add_completed(ACCOUNT, [done(0, 30)]) == 0
    await store.save_retained("t", "p", at(0))


async def test_unwritable_path_degrades_to_memory_with_a_clear_error(tmp_path: Path) -> None:
    # Root ignores permissions, but nobody can create a directory inside a regular file.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    path = blocker / "sub" / "ioagent.db"
    with capture_logs() as logs:
        store = await AsyncStore.open(path)
    assert not store.healthy and store.memory_only
    assert store.error == f"{path}: a parent of the path is not a directory"
    (line,) = [entry for entry in logs if entry["log_level"] == "error"]
    assert line["path"] == str(path) and line["reason"] == "a parent of the path is not a directory"

    await store.save_plan(ACCOUNT, DEVICE, [slot(120, 180)], at(0))
    assert await store.load_plan(ACCOUNT, DEVICE) == [slot(120, 180)]
    assert await store.add_completed(ACCOUNT, [done(0, 30)]) == 1
    await store.log_event(ACCOUNT, {"event": "added"}, at(0))
    assert await store.recent_events(ACCOUNT, 5) == [{"event": "added"}]
    await store.save_retained("ioagent/A/offpeak", "true", at(0))
    assert await store.load_retained() == {"ioagent/A/offpeak": ("true", at(0))}
    assert await store.prune(at(0), 400) == 0
    await store.close()


async def test_disk_full_while_running_keeps_the_data_in_memory(db_path: Path) -> None:
    store = await AsyncStore.open(db_path)
    await store.save_plan(ACCOUNT, DEVICE, [slot(120, 180)], at(0))
    await store.save_retained("ioagent/A/offpeak", "false", at(0))

    def fill_the_disk(s: Store) -> None:
        # SQLite reports a page cap exactly like a full disk (SQLITE_FULL).
        pages = s.conn.execute("PRAGMA page_count").fetchone()[0]
        s.conn.execute(f"PRAGMA max_page_count = {pages}")

    await store._run(fill_the_disk, None)
    with capture_logs() as logs:
        await store.save_retained("ioagent/A/offpeak", "x" * 200_000, at(1))
    assert not store.healthy and store.memory_only
    assert store.error == f"{db_path}: disk full"
    assert [entry["reason"] for entry in logs if entry["log_level"] == "error"] == ["disk full"]

    # What was on disk is still there, and the write that failed landed in memory.
    assert await store.load_plan(ACCOUNT, DEVICE) == [slot(120, 180)]
    assert (await store.load_retained())["ioagent/A/offpeak"] == ("x" * 200_000, at(1))
    await store.close()

    on_disk = Store.open(db_path)
    assert on_disk.load_retained()["ioagent/A/offpeak"] == ("false", at(0))
    on_disk.close()


GARBAGE = b"this is not a database" * 100


@pytest.fixture
def corrupt_db(db_path: Path) -> Path:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(GARBAGE)
    return db_path


async def test_a_corrupt_file_is_left_alone_and_memory_is_used(corrupt_db: Path) -> None:
    db_path = corrupt_db
    store = await AsyncStore.open(db_path)
    assert not store.healthy
    assert store.error == f"{db_path}: file is not an SQLite database"
    await store.set_meta("k", "v")
    assert await store.get_meta("k") == "v"
    await store.close()
    assert await asyncio.to_thread(db_path.read_bytes) == GARBAGE


async def test_a_newer_schema_is_not_touched(db_path: Path) -> None:
    Store.open(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute("PRAGMA user_version = 99")
    raw.close()
    store = await AsyncStore.open(db_path)
    assert not store.healthy
    assert store.error is not None and "newer than this ioagent" in store.error
    await store.set_meta("k", "v")
    await store.close()
    assert schema_version(sqlite3.connect(db_path)) == 99


def _sqlite_error(provoke: str, tmp_path: Path) -> BaseException:
    """Provoke a real SQLite error of the named kind."""
    path = tmp_path / "provoke.db"
    Store.open(path).close()
    try:
        if provoke == "readonly":
            reader = Store.open(path, read_only=True)
            reader.set_meta("k", "v")
        elif provoke == "full":
            full = Store.open(path)
            full.conn.execute("PRAGMA max_page_count = 1")
            full.set_meta("k", "v" * 100_000)
        elif provoke == "cantopen":
            sqlite3.connect(tmp_path).execute("SELECT 1")
        elif provoke == "notadb":
            path.write_bytes(b"garbage" * 1000)
            sqlite3.connect(path).execute("SELECT * FROM sqlite_master")
    except sqlite3.Error as exc:
        return exc
    raise AssertionError(f"{provoke} did not fail")


@pytest.mark.parametrize(
    ("provoke", "reason"),
    [
        ("readonly", "database is read-only"),
        ("full", "disk full"),
        ("cantopen", "cannot open the database file (missing directory or no permission)"),
        ("notadb", "file is not an SQLite database"),
    ],
)
def test_sqlite_errors_are_described_plainly(provoke: str, reason: str, tmp_path: Path) -> None:
    assert describe_storage_error(_sqlite_error(provoke, tmp_path)) == reason


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(30, "Read-only file system"), "read-only file system"),
        (OSError(28, "No space left on device"), "disk full"),
        (OSError(13, "Permission denied"), "permission denied"),
        (OSError(20, "Not a directory"), "a parent of the path is not a directory"),
        (OSError(71, "Protocol error"), "Protocol error"),
        (StoreError("database x does not exist"), "database x does not exist"),
    ],
)
def test_os_errors_are_described_plainly(error: BaseException, reason: str) -> None:
    assert describe_storage_error(error) == reason


async def test_a_write_during_a_long_prune_waits_for_one_batch_not_the_whole_prune(
    db_path: Path,
) -> None:
    old = stored_time(at(0) - timedelta(days=500))
    seed = Store.open(db_path)
    with seed.conn:
        seed.conn.executemany(
            "INSERT INTO events (account, at, event_json) VALUES (?, ?, ?)",
            [(ACCOUNT, old, "{}")] * (3 * PRUNE_BATCH + 5),
        )
    seed.close()
    store = await AsyncStore.open(db_path)
    try:
        pruning = asyncio.create_task(store.prune(at(0), keep_days=400))
        await asyncio.sleep(0)  # the first batch is now queued on the store's thread
        await store.save_retained("ioagent/A/offpeak", "true", at(0))
        assert not pruning.done(), "the write went in between two batches"
        assert await pruning == 3 * PRUNE_BATCH + 5
        assert await store.load_retained() == {"ioagent/A/offpeak": ("true", at(0))}
    finally:
        await store.close()
