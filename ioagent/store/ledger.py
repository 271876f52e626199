"""The settlement ledger's tables (migration 2): settled half-hours and signal transitions.

A re-fetch that finds a half-hour billed differently (a re-bill) replaces the row, marks it
``rebilled_at`` and is returned to the caller, which logs it. An unchanged re-fetch only moves
``last_seen``. Both tables are pruned with the rest by ``[storage] history_days``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ioagent.ledger.parse import Bucket, SettledHalfHour
from ioagent.store.database import Store, stored_time
from ioagent.timeutil import parse_iso

HOME_SIGNAL = "offpeak"
CAR_SIGNAL = "ev/offpeak"


@dataclass(frozen=True, slots=True)
class Rebill:
    """A settled half-hour that came back billed differently."""

    before: SettledHalfHour
    after: SettledHalfHour

    def as_log(self) -> dict[str, Any]:
        return {
            "start": stored_time(self.after.start),
            "before": f"home {self.before.home_band}, car {self.before.car_band}, "
            f"{self.before.cost_pence:.3f} p",
            "after": f"home {self.after.home_band}, car {self.after.car_band}, "
            f"{self.after.cost_pence:.3f} p",
        }


@dataclass(frozen=True, slots=True)
class SaveResult:
    added: int
    unchanged: int
    rebilled: list[Rebill]


def _row_values(account: str, item: SettledHalfHour) -> tuple[Any, ...]:
    return (
        account,
        stored_time(item.start),
        stored_time(item.end),
        item.home_band,
        item.car_band,
        item.home_kwh,
        item.car_kwh,
        item.cost_pence,
        item.standing_pence,
        json.dumps([b.as_json() for b in item.buckets], separators=(",", ":")),
        json.dumps(list(item.unknown_labels)),
    )


def _from_row(row: Sequence[Any]) -> SettledHalfHour:
    start, end, home_band, car_band, standing, buckets_json, unknown_json = row
    return SettledHalfHour(
        start=parse_iso(start),
        end=parse_iso(end),
        home_band=home_band,
        car_band=car_band,
        buckets=tuple(Bucket.from_json(b) for b in json.loads(buckets_json)),
        standing_pence=float(standing),
        unknown_labels=tuple(json.loads(unknown_json)),
    )


_SELECT = (
    "SELECT start, end, home_band, car_band, standing_pence, buckets_json, unknown_labels "
    "FROM settled"
)


def save_settled(
    store: Store, account: str, items: Sequence[SettledHalfHour], now: datetime
) -> SaveResult:
    """Store fetched half-hours in one transaction; report re-bills."""
    seen = stored_time(now)
    added = unchanged = 0
    rebilled: list[Rebill] = []
    with store._transaction() as conn:
        for item in items:
            found = conn.execute(
                f"{_SELECT} WHERE account = ? AND start = ?", (account, stored_time(item.start))
            ).fetchone()
            if found is None:
                conn.execute(
                    "INSERT INTO settled (account, start, end, home_band, car_band, home_kwh, "
                    "car_kwh, cost_pence, standing_pence, buckets_json, unknown_labels, "
                    "first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*_row_values(account, item), seen, seen),
                )
                added += 1
                continue
            before = _from_row(found)
            if before.same_settlement(item):
                conn.execute(
                    "UPDATE settled SET last_seen = ? WHERE account = ? AND start = ?",
                    (seen, account, stored_time(item.start)),
                )
                unchanged += 1
                continue
            values = _row_values(account, item)
            conn.execute(
                "UPDATE settled SET end = ?, home_band = ?, car_band = ?, home_kwh = ?, "
                "car_kwh = ?, cost_pence = ?, standing_pence = ?, buckets_json = ?, "
                "unknown_labels = ?, last_seen = ?, rebilled_at = ? "
                "WHERE account = ? AND start = ?",
                (*values[2:], seen, seen, account, values[1]),
            )
            rebilled.append(Rebill(before, item))
    return SaveResult(added, unchanged, rebilled)


def settled_between(
    store: Store, account: str, start: datetime, end: datetime
) -> list[SettledHalfHour]:
    rows = store.conn.execute(
        f"{_SELECT} WHERE account = ? AND start >= ? AND start < ? ORDER BY start",
        (account, stored_time(start), stored_time(end)),
    ).fetchall()
    return [_from_row(r) for r in rows]


def latest_settled(store: Store, account: str) -> datetime | None:
    """Start of the newest stored half-hour (where the next fetch resumes)."""
    row = store.conn.execute(
        "SELECT MAX(start) FROM settled WHERE account = ?", (account,)
    ).fetchone()
    return None if row is None or row[0] is None else parse_iso(row[0])


def rebilled_since(store: Store, account: str, since: datetime) -> list[datetime]:
    rows = store.conn.execute(
        "SELECT start FROM settled WHERE account = ? AND rebilled_at >= ? ORDER BY start",
        (account, stored_time(since)),
    ).fetchall()
    return [parse_iso(r[0]) for r in rows]


def record_transition(store: Store, account: str, signal: str, at: datetime, value: bool) -> bool:
    """Record that ``signal`` was published as ``value`` at ``at``; only a change is stored.
    Returns whether it was one."""
    with store._transaction() as conn:
        last = conn.execute(
            "SELECT value FROM signal_transitions WHERE account = ? AND signal = ? AND at <= ? "
            "ORDER BY at DESC LIMIT 1",
            (account, signal, stored_time(at)),
        ).fetchone()
        if last is not None and bool(last[0]) == value:
            return False
        conn.execute(
            "INSERT OR REPLACE INTO signal_transitions (account, signal, at, value) "
            "VALUES (?, ?, ?, ?)",
            (account, signal, stored_time(at), int(value)),
        )
    return True


def transitions_between(
    store: Store, account: str, signal: str, start: datetime, end: datetime
) -> list[tuple[datetime, bool]]:
    """Transitions in ``[start, end)`` plus the last one before ``start`` (the value then)."""
    before = store.conn.execute(
        "SELECT at, value FROM signal_transitions WHERE account = ? AND signal = ? AND at < ? "
        "ORDER BY at DESC LIMIT 1",
        (account, signal, stored_time(start)),
    ).fetchall()
    inside = store.conn.execute(
        "SELECT at, value FROM signal_transitions WHERE account = ? AND signal = ? "
        "AND at >= ? AND at < ? ORDER BY at",
        (account, signal, stored_time(start), stored_time(end)),
    ).fetchall()
    return [(parse_iso(at), bool(value)) for at, value in [*before, *inside]]


def ledger_accounts(store: Store) -> list[str]:
    rows = store.conn.execute("SELECT DISTINCT account FROM settled ORDER BY account").fetchall()
    return [str(r[0]) for r in rows]
