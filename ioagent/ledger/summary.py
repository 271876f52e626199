"""Totals per bucket for a local day or month: the ``ledger/yesterday`` and ``ledger/month``
payloads and the rows of ``ioagent ledger``.

Money is summed in pence and converted to pounds once, at the end, so rounding never drifts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ioagent.ledger.parse import BUCKET_NAMES, SettledHalfHour
from ioagent.ledger.windows import LONDON, half_hours_in, local_day, local_day_bounds
from ioagent.timeutil import iso_z, to_utc


@dataclass
class BucketTotal:
    kwh: float = 0.0
    pence: float = 0.0


@dataclass
class PeriodTotals:
    """Totals over ``[start, end)`` of the settled half-hours found in it."""

    start: datetime
    end: datetime
    expected_half_hours: int
    half_hours: int = 0
    unknown_half_hours: int = 0
    standing_pence: float = 0.0
    buckets: dict[str, BucketTotal] = field(
        default_factory=lambda: {name: BucketTotal() for name in BUCKET_NAMES}
    )

    def add(self, row: SettledHalfHour) -> None:
        self.half_hours += 1
        self.unknown_half_hours += 1 if row.unknown else 0
        self.standing_pence += row.standing_pence
        for bucket in row.buckets:
            total = self.buckets.setdefault(bucket.name, BucketTotal())
            total.kwh += bucket.kwh
            total.pence += bucket.pence

    @property
    def complete(self) -> bool:
        return self.half_hours == self.expected_half_hours

    @property
    def consumption_pence(self) -> float:
        return sum(t.pence for t in self.buckets.values())

    @property
    def total_pence(self) -> float:
        return self.consumption_pence + self.standing_pence

    def as_json(self) -> dict[str, Any]:
        return {
            "start": iso_z(self.start),
            "end": iso_z(self.end),
            "complete": self.complete,
            "half_hours": self.half_hours,
            "expected_half_hours": self.expected_half_hours,
            "unknown_half_hours": self.unknown_half_hours,
            "buckets": {
                name: {"kwh": round(t.kwh, 3), "gbp": round(t.pence / 100, 2)}
                for name, t in self.buckets.items()
            },
            "standing_charge_gbp": round(self.standing_pence / 100, 2),
            "total_gbp": round(self.total_pence / 100, 2),
        }


def totals(
    rows: Sequence[SettledHalfHour], start: datetime, end: datetime, expected: int
) -> PeriodTotals:
    result = PeriodTotals(start, end, expected)
    for row in rows:
        if start <= row.start < end:
            result.add(row)
    return result


def day_totals(rows: Sequence[SettledHalfHour], day: date, zone: ZoneInfo = LONDON) -> PeriodTotals:
    start, end = local_day_bounds(day, zone)
    return totals(rows, start, end, half_hours_in(day, zone))


def last_settled_day(
    rows: Sequence[SettledHalfHour], now: datetime, zone: ZoneInfo = LONDON
) -> date | None:
    """The latest local day before today with every one of its half-hours settled."""
    today = local_day(now, zone)
    days = sorted({local_day(r.start, zone) for r in rows if local_day(r.start, zone) < today})
    for day in reversed(days):
        if day_totals(rows, day, zone).complete:
            return day
    return None


def yesterday_json(
    rows: Sequence[SettledHalfHour], now: datetime, zone: ZoneInfo = LONDON
) -> dict[str, Any] | None:
    """``ledger/yesterday``: the last fully settled local day (None before there is one)."""
    day = last_settled_day(rows, now, zone)
    if day is None:
        return None
    return {"day": day.isoformat(), **day_totals(rows, day, zone).as_json()}


def month_json(
    rows: Sequence[SettledHalfHour], now: datetime, zone: ZoneInfo = LONDON
) -> dict[str, Any]:
    """``ledger/month``: the current local month, settled half-hours so far."""
    today = local_day(now, zone)
    first = today.replace(day=1)
    start, _ = local_day_bounds(first, zone)
    _, end = local_day_bounds(today, zone)
    expected = int((end - start) / timedelta(minutes=30))
    result = totals(rows, start, min(end, to_utc(now)), expected)
    return {"month": first.strftime("%Y-%m"), **result.as_json()}


def unknown_label_note(rows: Sequence[SettledHalfHour]) -> str | None:
    """The ``api`` topic's ``ledger`` note for settled half-hours whose labels ioagent does not
    know (kept as ``unknown``, never counted as peak or off-peak), or None when there are none.

    Read from the stored rows, not from one fetch, so it stays while such half-hours are in the
    ledger and goes once they are re-billed with known labels or pruned.
    """
    unknown = [row for row in rows if row.unknown]
    if not unknown:
        return None
    labels = sorted({label for row in unknown for label in row.unknown_labels})
    count = len(unknown)
    return (
        f"unknown labels: {', '.join(labels)} in {count} settled half-hour"
        f"{'' if count == 1 else 's'}, kept as unknown and not compared; please report them"
    )
