"""Which half-hours to ask Octopus for, in windows small enough to keep their statistics."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from ioagent.timeutil import to_utc

HALF_HOUR: Final = timedelta(minutes=30)
MAX_WINDOW_HALF_HOURS: Final = 12
"""Longer windows come back with ``statistics`` stripped over a charging run (EMT's finding)."""
LONDON: Final = ZoneInfo("Europe/London")


def floor_half_hour(instant: datetime) -> datetime:
    utc = to_utc(instant)
    return utc.replace(minute=utc.minute - utc.minute % 30, second=0, microsecond=0)


def fetch_windows(
    start: datetime, end: datetime, size: int = MAX_WINDOW_HALF_HOURS
) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut into half-hour-aligned windows of at most ``size`` half-hours."""
    if not 1 <= size <= MAX_WINDOW_HALF_HOURS:
        raise ValueError(f"window size must be 1..{MAX_WINDOW_HALF_HOURS} half-hours")
    cursor, stop = floor_half_hour(start), to_utc(end)
    windows: list[tuple[datetime, datetime]] = []
    while cursor < stop:
        upper = min(cursor + size * HALF_HOUR, stop)
        windows.append((cursor, upper))
        cursor = upper
    return windows


FETCH_CHUNK_WINDOWS: Final = 4
"""Windows fetched, stored and published together during a long fetch: a day of half-hours, so
a 30-day backfill (hours at the ledger's budget) shows and keeps its progress day by day."""


def fetch_chunks(
    start: datetime, end: datetime, windows: int = FETCH_CHUNK_WINDOWS
) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` in consecutive chunks of ``windows`` fetch windows, oldest first (so an
    interrupted backfill resumes from the newest stored half-hour)."""
    cut = fetch_windows(start, end)
    return [
        (group[0][0], group[-1][1])
        for group in (cut[i : i + windows] for i in range(0, len(cut), windows))
    ]


def local_day_bounds(day: date, zone: ZoneInfo = LONDON) -> tuple[datetime, datetime]:
    """UTC ``[start, end)`` of a local calendar day: 46, 48 or 50 half-hours in London."""
    start = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
    return start, end


def half_hours_in(day: date, zone: ZoneInfo = LONDON) -> int:
    start, end = local_day_bounds(day, zone)
    return int((end - start) / HALF_HOUR)


def local_day(instant: datetime, zone: ZoneInfo = LONDON) -> date:
    return to_utc(instant).astimezone(zone).date()
