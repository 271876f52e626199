"""Shared tariff helpers: intervals, the tariff zone's half-hours and the fixed nightly window.

Every product family (``ioagent.tariff.rules`` for legacy, ``ioagent.tariff.four_rate``) is
built from these. Every datetime in and out is aware UTC; wall-clock times are in the tariff's
zone (Europe/London by default), so DST is handled here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from ioagent.timeutil import to_utc

HALF_HOUR_SECONDS = 1800
HALF_HOUR = timedelta(seconds=HALF_HOUR_SECONDS)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Window:
    """A half-open interval ``[start, end)`` of aware UTC instants."""

    start: datetime
    end: datetime

    def __contains__(self, instant: object) -> bool:
        return isinstance(instant, datetime) and self.start <= instant < self.end

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    def overlaps(self, other: Window) -> bool:
        return self.start < other.end and other.start < self.end


def merge(windows: Iterable[Window]) -> list[Window]:
    """Sorted, with overlapping or touching windows joined and empty ones dropped."""
    merged: list[Window] = []
    for window in sorted(windows, key=lambda w: (w.start, w.end)):
        if window.end <= window.start:
            continue
        if merged and window.start <= merged[-1].end:
            if window.end > merged[-1].end:
                merged[-1] = Window(merged[-1].start, window.end)
        else:
            merged.append(window)
    return merged


def subtract(windows: Iterable[Window], holes: Iterable[Window]) -> list[Window]:
    """Parts of merged ``windows`` not inside any of ``holes``."""
    result: list[Window] = []
    hole_list = merge(holes)
    for window in merge(windows):
        cursor = window.start
        for hole in hole_list:
            if hole.end <= cursor or hole.start >= window.end:
                continue
            if hole.start > cursor:
                result.append(Window(cursor, hole.start))
            cursor = max(cursor, hole.end)
            if cursor >= window.end:
                break
        if cursor < window.end:
            result.append(Window(cursor, window.end))
    return result


def overlapping(windows: Iterable[Window], start: datetime, end: datetime) -> list[Window]:
    return [w for w in windows if w.start < end and w.end > start]


def wall(day: date, clock: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time; a time skipped by DST falls after the gap and an
    ambiguous one is its first occurrence (fold=0)."""
    return datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)


def floor_half_hour(instant: datetime, zone: ZoneInfo) -> datetime:
    """The start of the zone's wall-clock half-hour (:00/:30 local) that holds ``instant``."""
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None, "a ZoneInfo always has an offset"
    local_seconds = int((instant + offset).timestamp())
    floored = local_seconds - local_seconds % HALF_HOUR_SECONDS
    return datetime.fromtimestamp(floored, UTC) - offset


def ceil_half_hour(instant: datetime, zone: ZoneInfo) -> datetime:
    floored = floor_half_hour(instant, zone)
    if floored == instant:
        return instant
    return floor_half_hour(floored + HALF_HOUR, zone)


def half_hours(start: datetime, end: datetime, zone: ZoneInfo) -> Iterator[datetime]:
    """The starts of the zone's half-hours that ``[start, end)`` touches, in time order."""
    cursor = floor_half_hour(to_utc(start), zone)
    end = to_utc(end)
    while cursor < end:
        yield cursor
        cursor = floor_half_hour(cursor + HALF_HOUR, zone)


def local_dates(start: datetime, end: datetime, zone: ZoneInfo) -> list[date]:
    """Local dates from the day before ``start`` to the day after ``end`` (a safe margin)."""
    first = start.astimezone(zone).date() - DAY
    last = end.astimezone(zone).date() + DAY
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def nightly_windows(
    zone: ZoneInfo, offpeak_start: time, offpeak_end: time, start: datetime, end: datetime
) -> list[Window]:
    """The nightly fixed windows ``offpeak_start``-``offpeak_end`` overlapping ``[start, end)``.

    ``start > end`` crosses midnight; ``start < end`` lies within one day; ``start == end``
    means no fixed window.
    """
    start, end = to_utc(start), to_utc(end)
    if offpeak_start == offpeak_end:
        return []
    crosses_midnight = offpeak_start > offpeak_end
    windows = []
    for day in local_dates(start, end, zone):
        end_day = day + DAY if crosses_midnight else day
        windows.append(Window(wall(day, offpeak_start, zone), wall(end_day, offpeak_end, zone)))
    return overlapping(merge(windows), start, end)


__all__ = [
    "DAY",
    "HALF_HOUR",
    "HALF_HOUR_SECONDS",
    "Window",
    "ceil_half_hour",
    "floor_half_hour",
    "half_hours",
    "local_dates",
    "merge",
    "nightly_windows",
    "overlapping",
    "subtract",
    "wall",
]
