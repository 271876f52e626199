"""Durable state in SQLite: last plans, every slot ever planned, completed dispatches, events,
retained payloads and small metadata.

One connection, used from one thread (``AsyncStore`` gives it a dedicated worker thread). WAL
journaling lets ``ioagent history`` read while the daemon writes; ``synchronous=FULL`` because
the Pi this runs on loses power without warning, and a few fsyncs per poll are cheap. Every
write is one transaction, so a crash (``kill -9``) loses nothing that was committed.

Times are stored as fixed-width ISO-8601 UTC text with ``Z`` and microseconds
(``2026-02-07T19:30:00.000000Z``), so text order is time order and SQL can compare them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ioagent.kraken.types import BOOST, SMART, SOURCE_BUMP, CompletedDispatch, Dispatch
from ioagent.timeutil import iso_z, parse_iso, to_utc, utc_now

MEMORY = ":memory:"
BUSY_TIMEOUT_MS = 5000
PRUNE_BATCH = 2000
"""Rows deleted per transaction while pruning, so a large prune never holds the lock long."""
_PRUNE_STATEMENTS = (
    "DELETE FROM slots WHERE rowid IN (SELECT rowid FROM slots WHERE end < ? LIMIT ?)",
    "DELETE FROM completed WHERE rowid IN (SELECT rowid FROM completed WHERE end < ? LIMIT ?)",
    "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE at < ? LIMIT ?)",
    "DELETE FROM settled WHERE rowid IN (SELECT rowid FROM settled WHERE start < ? LIMIT ?)",
    "DELETE FROM signal_transitions WHERE rowid IN "
    "(SELECT rowid FROM signal_transitions WHERE at < ? LIMIT ?)",
)


class StoreError(Exception):
    """The database cannot be used as it is (schema from a newer ioagent, missing file...)."""


MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE plans (
        account   TEXT NOT NULL,
        device_id TEXT NOT NULL,
        plan_json TEXT NOT NULL,
        saved_at  TEXT NOT NULL,
        PRIMARY KEY (account, device_id)
    );
    CREATE TABLE slots (
        account      TEXT NOT NULL,
        device_id    TEXT NOT NULL,
        start        TEXT NOT NULL,
        end          TEXT NOT NULL,
        type         TEXT NOT NULL,
        kwh          REAL,
        first_seen   TEXT NOT NULL,
        last_seen    TEXT NOT NULL,
        withdrawn_at TEXT,
        replaced_at  TEXT,
        PRIMARY KEY (account, device_id, start, end)
    );
    CREATE INDEX slots_by_start ON slots (account, start);
    CREATE INDEX slots_by_end ON slots (end);
    CREATE TABLE completed (
        account    TEXT NOT NULL,
        start      TEXT NOT NULL,
        end        TEXT NOT NULL,
        kind       TEXT NOT NULL,
        ordinal    INTEGER NOT NULL,
        source     TEXT,
        location   TEXT,
        kwh        REAL,
        first_seen TEXT NOT NULL,
        last_seen  TEXT NOT NULL,
        PRIMARY KEY (account, start, end, kind, ordinal)
    );
    CREATE INDEX completed_by_end ON completed (end);
    CREATE TABLE events (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        account    TEXT NOT NULL,
        at         TEXT NOT NULL,
        event_json TEXT NOT NULL
    );
    CREATE INDEX events_by_account ON events (account, id);
    CREATE INDEX events_by_at ON events (at);
    CREATE TABLE retained (
        topic   TEXT PRIMARY KEY,
        payload TEXT NOT NULL,
        at      TEXT NOT NULL
    );
    """,
    # 2: the settlement ledger (ioagent/store/ledger.py): one row per settled half-hour, and
    # every published off-peak transition so the bill can be held against it later.
    """
    CREATE TABLE settled (
        account        TEXT NOT NULL,
        start          TEXT NOT NULL,
        end            TEXT NOT NULL,
        home_band      TEXT NOT NULL,
        car_band       TEXT NOT NULL,
        home_kwh       REAL NOT NULL,
        car_kwh        REAL NOT NULL,
        cost_pence     REAL NOT NULL,
        standing_pence REAL NOT NULL,
        buckets_json   TEXT NOT NULL,
        unknown_labels TEXT NOT NULL,
        first_seen     TEXT NOT NULL,
        last_seen      TEXT NOT NULL,
        rebilled_at    TEXT,
        PRIMARY KEY (account, start)
    );
    CREATE INDEX settled_by_start ON settled (start);
    CREATE TABLE signal_transitions (
        account TEXT NOT NULL,
        signal  TEXT NOT NULL,
        at      TEXT NOT NULL,
        value   INTEGER NOT NULL,
        PRIMARY KEY (account, signal, at)
    );
    CREATE INDEX signal_transitions_by_at ON signal_transitions (at);
    """,
)


def watching_since_key(account: str) -> str:
    """Meta key of the daemon's first successful poll of ``account`` (history starts there)."""
    return f"watching_since:{account}"


def stored_time(value: datetime) -> str:
    """The fixed-width UTC text every time column holds."""
    return to_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Bring the schema up to ``len(migrations)``; each step commits with its version number,
    so a crash mid-upgrade leaves the database at the previous version, never half-way."""
    current = schema_version(conn)
    if current > len(migrations):
        raise StoreError(
            f"database schema version {current} is newer than this ioagent understands "
            f"({len(migrations)}); upgrade ioagent or point [storage] path at another file"
        )
    for version in range(current + 1, len(migrations) + 1):
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{migrations[version - 1]}\n"
                f"PRAGMA user_version = {version};\nCOMMIT;"
            )
        except BaseException:
            # executescript stops at the failing statement with the transaction still open.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return len(migrations)


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """A planned slot as the store remembers it."""

    account: str
    device_id: str
    start: datetime
    end: datetime
    type: str
    kwh: float | None
    first_seen: datetime
    last_seen: datetime
    withdrawn_at: datetime | None
    replaced_at: datetime | None


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_z(value)
    return str(value)


def _dispatch_to_json(dispatch: Dispatch) -> dict[str, Any]:
    return {
        "start": iso_z(dispatch.start),
        "end": iso_z(dispatch.end),
        "type": dispatch.type,
        "kwh": dispatch.kwh,
        "location": dispatch.location,
        "source": dispatch.source,
        "device_id": dispatch.device_id,
    }


def _dispatch_from_json(data: dict[str, Any]) -> Dispatch:
    return Dispatch(
        start=parse_iso(data["start"]),
        end=parse_iso(data["end"]),
        type=data["type"],
        kwh=data.get("kwh"),
        location=data.get("location"),
        source=data.get("source"),
        device_id=data.get("device_id"),
    )


def _completed_keys(
    completed: Sequence[CompletedDispatch],
) -> list[tuple[CompletedDispatch, str, str, int]]:
    """(dispatch, start, end, ordinal) per record. Completed dispatches carry no id, so the key is
    start + end + kind, where kind is BOOST for a ``bump-charge`` source and SMART otherwise: the
    key of every record stored so far, and one a later classification cannot flip. (What a
    record *was* is decided when it is read, from the slots on record: classify_completed.)
    Two records with the same key in one answer (two cars charging in the same slot) get
    ordinals 0, 1...: the next overlapping poll returns them again and maps them to the same
    rows. Times are normalised to stored UTC text, so ``+00:00`` vs ``Z`` or ``.000000`` do not
    matter."""
    seen: dict[tuple[str, str, str], int] = {}
    keyed = []
    for dispatch in completed:
        start, end = stored_time(dispatch.start), stored_time(dispatch.end)
        key = (start, end, BOOST if dispatch.source == SOURCE_BUMP else SMART)
        ordinal = seen.get(key, 0)
        seen[key] = ordinal + 1
        keyed.append((dispatch, start, end, ordinal))
    return keyed


class Store:
    """Synchronous SQLite store. Not thread-safe: use it from the thread that opened it."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        self.path = path

    # --- lifecycle ---

    @classmethod
    def open(cls, path: Path | str, *, read_only: bool = False) -> Store:
        """Open (creating it and its directory if needed) and migrate the database at ``path``.

        ``read_only`` opens an existing file without writing anything, for ``ioagent history``;
        the schema must then already be current. Raises ``sqlite3.Error``, ``OSError`` or
        :class:`StoreError`.
        """
        target = str(path)
        if target == MEMORY:
            conn = sqlite3.connect(MEMORY, isolation_level=None)
        elif read_only:
            if not Path(target).exists():
                raise StoreError(
                    f"database {target} does not exist (`ioagent run` creates it on its first"
                    " start; check [storage] path)"
                )
            conn = sqlite3.connect(
                Path(target).absolute().as_uri() + "?mode=ro", uri=True, isolation_level=None
            )
        else:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(target, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if read_only:
                version = schema_version(conn)
                if version != len(MIGRATIONS):
                    raise StoreError(
                        f"database {target} has schema version {version}, this ioagent "
                        f"expects {len(MIGRATIONS)}; start the daemon once to upgrade it"
                    )
            else:
                if target != MEMORY:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    if str(mode).lower() != "wal":
                        raise StoreError(f"database {target} cannot use WAL mode ({mode})")
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA foreign_keys = ON")
                migrate(conn)
        except BaseException:
            conn.close()
            raise
        return cls(conn, target)

    @classmethod
    def open_memory(cls) -> Store:
        return cls.open(MEMORY)

    def copy_to_memory(self) -> Store:
        """A memory-only copy of everything readable (degraded mode after a disk failure)."""
        memory = sqlite3.connect(MEMORY, isolation_level=None)
        self.conn.backup(memory)
        return Store(memory, MEMORY)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    # --- plans and slots ---

    def load_plan(self, account: str, device_id: str) -> list[Dispatch] | None:
        """The plan last saved for the device, or None if none was ever saved."""
        row = self.conn.execute(
            "SELECT plan_json FROM plans WHERE account = ? AND device_id = ?",
            (account, device_id),
        ).fetchone()
        if row is None:
            return None
        return [_dispatch_from_json(item) for item in json.loads(row[0])]

    def save_plan(
        self, account: str, device_id: str, plan: Sequence[Dispatch], now: datetime
    ) -> None:
        """Remember the plan and record each slot (first/last seen).

        A slot that has not started and is no longer in the plan is *replaced* when a slot of
        the new plan overlaps it (Octopus moved or resized it) and *withdrawn* otherwise. A
        slot that already started and then vanished ran (Octopus drops running slots), so it
        is left alone. A slot that comes back loses its withdrawn/replaced mark."""
        at = stored_time(now)
        plan_json = json.dumps([_dispatch_to_json(d) for d in plan], separators=(",", ":"))
        present = {(stored_time(d.start), stored_time(d.end)) for d in plan}
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO plans (account, device_id, plan_json, saved_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (account, device_id) DO UPDATE SET"
                " plan_json = excluded.plan_json, saved_at = excluded.saved_at",
                (account, device_id, plan_json, at),
            )
            conn.executemany(
                "INSERT INTO slots (account, device_id, start, end, type, kwh, first_seen,"
                " last_seen, withdrawn_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)"
                " ON CONFLICT (account, device_id, start, end) DO UPDATE SET"
                " type = excluded.type, kwh = excluded.kwh, last_seen = excluded.last_seen,"
                " withdrawn_at = NULL, replaced_at = NULL",
                [
                    (
                        account,
                        device_id,
                        stored_time(d.start),
                        stored_time(d.end),
                        d.type,
                        d.kwh,
                        at,
                        at,
                    )
                    for d in plan
                ],
            )
            pending = conn.execute(
                "SELECT start, end FROM slots WHERE account = ? AND device_id = ?"
                " AND withdrawn_at IS NULL AND replaced_at IS NULL AND start > ?",
                (account, device_id, at),
            ).fetchall()
            for start, end in pending:
                if (start, end) in present:
                    continue
                # Fixed-width time text compares like the times themselves.
                replaced = any(s < end and e > start for s, e in present)
                conn.execute(
                    f"UPDATE slots SET {'replaced_at' if replaced else 'withdrawn_at'} = ?"
                    " WHERE account = ? AND device_id = ? AND start = ? AND end = ?",
                    (at, account, device_id, start, end),
                )

    def slots_between(self, account: str, start: datetime, end: datetime) -> list[SlotRecord]:
        """Every slot ever planned for the account that starts in ``[start, end)``."""
        rows = self.conn.execute(
            "SELECT account, device_id, start, end, type, kwh, first_seen, last_seen,"
            " withdrawn_at, replaced_at FROM slots WHERE account = ? AND start >= ? AND start < ?"
            " ORDER BY start, device_id",
            (account, stored_time(start), stored_time(end)),
        ).fetchall()
        return [
            SlotRecord(
                account=row[0],
                device_id=row[1],
                start=parse_iso(row[2]),
                end=parse_iso(row[3]),
                type=row[4],
                kwh=row[5],
                first_seen=parse_iso(row[6]),
                last_seen=parse_iso(row[7]),
                withdrawn_at=parse_iso(row[8]) if row[8] is not None else None,
                replaced_at=parse_iso(row[9]) if row[9] is not None else None,
            )
            for row in rows
        ]

    def ran_between(self, account: str, start: datetime, end: datetime) -> list[SlotRecord]:
        """Slots starting in ``[start, end)`` that were neither withdrawn nor replaced: what was
        planned and (as far as ioagent knows) ran."""
        return [
            s
            for s in self.slots_between(account, start, end)
            if s.withdrawn_at is None and s.replaced_at is None
        ]

    def withdrawn_between(self, account: str, start: datetime, end: datetime) -> list[SlotRecord]:
        """Slots meant to start in ``[start, end)`` that were withdrawn before they started."""
        return [s for s in self.slots_between(account, start, end) if s.withdrawn_at is not None]

    # --- completed dispatches ---

    def add_completed(
        self,
        account: str,
        completed: Sequence[CompletedDispatch],
        now: datetime | None = None,
    ) -> int:
        """Store completed dispatches once each; return how many were new. A record seen again
        updates its kWh and location (Octopus relabels AT_HOME/AWAY after the fact)."""
        if not completed:
            return 0
        new = 0
        with self._transaction() as conn:
            seen_at = stored_time(now if now is not None else utc_now())
            for dispatch, start, end, ordinal in _completed_keys(completed):
                kind = BOOST if dispatch.source == SOURCE_BUMP else SMART
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO completed (account, start, end, kind, ordinal,"
                    " source, location, kwh, first_seen, last_seen)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        account,
                        start,
                        end,
                        kind,
                        ordinal,
                        dispatch.source,
                        dispatch.location,
                        dispatch.kwh,
                        seen_at,
                        seen_at,
                    ),
                )
                if cursor.rowcount == 1:
                    new += 1
                    continue
                conn.execute(
                    "UPDATE completed SET source = ?, location = ?, kwh = ?, last_seen = ?"
                    " WHERE account = ? AND start = ? AND end = ? AND kind = ? AND ordinal = ?",
                    (
                        dispatch.source,
                        dispatch.location,
                        dispatch.kwh,
                        seen_at,
                        account,
                        start,
                        end,
                        kind,
                        ordinal,
                    ),
                )
        return new

    def completed_between(
        self, account: str, start: datetime, end: datetime
    ) -> list[CompletedDispatch]:
        """Completed dispatches that overlap ``[start, end)``, in time order."""
        rows = self.conn.execute(
            "SELECT start, end, kwh, source, location FROM completed"
            " WHERE account = ? AND start < ? AND end > ? ORDER BY start, end, kind, ordinal",
            (account, stored_time(end), stored_time(start)),
        ).fetchall()
        return [
            CompletedDispatch(
                start=parse_iso(row[0]),
                end=parse_iso(row[1]),
                kwh=row[2],
                source=row[3],
                location=row[4],
            )
            for row in rows
        ]

    def first_seen(self, account: str) -> datetime | None:
        """The earliest instant the store has data for ``account``: the start of its record.

        The daemon's first successful poll (meta ``watching_since:<account>``), the first slot
        or completed dispatch it saw, or the start of the oldest completed dispatch Octopus
        reported, whichever is earliest; ``None`` when the store knows nothing of the account.
        """
        row = self.conn.execute(
            "SELECT MIN(t) FROM ("
            " SELECT MIN(first_seen) AS t FROM slots WHERE account = ?"
            " UNION ALL SELECT MIN(first_seen) FROM completed WHERE account = ?"
            " UNION ALL SELECT MIN(start) FROM completed WHERE account = ?"
            ")",
            (account, account, account),
        ).fetchone()
        seen = [parse_iso(row[0])] if row and row[0] else []
        since = self.get_meta(watching_since_key(account))
        if since:
            seen.append(parse_iso(since))
        return min(seen) if seen else None

    def accounts(self) -> list[str]:
        """Every account with slots or completed dispatches on record."""
        rows = self.conn.execute(
            "SELECT account FROM completed UNION SELECT account FROM slots ORDER BY 1"
        ).fetchall()
        return [str(row[0]) for row in rows]

    # --- events ---

    def log_event(self, account: str, event: dict[str, Any], at: datetime) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO events (account, at, event_json) VALUES (?, ?, ?)",
                (account, stored_time(at), json.dumps(event, default=_json_default)),
            )

    def recent_events(self, account: str, limit: int) -> list[dict[str, Any]]:
        """The account's last ``limit`` events, newest first."""
        rows = self.conn.execute(
            "SELECT event_json FROM events WHERE account = ? ORDER BY id DESC LIMIT ?",
            (account, limit),
        ).fetchall()
        return [json.loads(row[0]) for row in rows]

    # --- retained payloads ---

    def save_retained(self, topic: str, payload: str, at: datetime) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO retained (topic, payload, at) VALUES (?, ?, ?)"
                " ON CONFLICT (topic) DO UPDATE SET payload = excluded.payload, at = excluded.at",
                (topic, payload, stored_time(at)),
            )

    def load_retained(self) -> dict[str, tuple[str, datetime]]:
        rows = self.conn.execute("SELECT topic, payload, at FROM retained").fetchall()
        return {str(row[0]): (str(row[1]), parse_iso(row[2])) for row in rows}

    def delete_retained(self, topic: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM retained WHERE topic = ?", (topic,))

    # --- metadata ---

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # --- retention ---

    def prune_batch(self, now: datetime, keep_days: int) -> int:
        """Delete at most ``PRUNE_BATCH`` rows older than ``keep_days`` in one short transaction
        (slots first, then completed dispatches, events, settled half-hours and signal
        transitions); 0 once none are left."""
        cutoff = stored_time(now - timedelta(days=keep_days))
        for statement in _PRUNE_STATEMENTS:
            with self._transaction() as conn:
                count: int = conn.execute(statement, (cutoff, PRUNE_BATCH)).rowcount
            if count:
                return count
        return 0

    def prune(self, now: datetime, keep_days: int) -> int:
        """Delete slots, completed dispatches and events older than ``keep_days``; return the
        number of rows deleted. Plans, retained payloads and metadata are current state and
        are kept. Deletes run in small batches so readers and the next write never wait long."""
        deleted = 0
        while count := self.prune_batch(now, keep_days):
            deleted += count
        return deleted
