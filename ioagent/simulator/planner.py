"""Smart-charge planning for the simulator: which slots Kraken would dispatch for one device.

Pure: everything (the clock reading, the seed) comes in through :class:`PlanRequest`, so the same
request always yields the same plan. The plans imitate what the live API does and what ioagent
must cope with: a short first slot at plug-in time outside the guaranteed 23:30–05:30 window, the
bulk in half-hour blocks (with occasional gaps) during the night, a last slot that ends at the
minute the target energy is reached, and daytime slots when the night is not long enough.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")
WINDOW_START = time(23, 30)
WINDOW_END = time(5, 30)
DAYS_OF_WEEK = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")

_MINUTE = timedelta(minutes=1)
_HALF_HOUR = timedelta(minutes=30)
_FIRST_SLOT_MINUTES = (14, 17, 23, 31, 38, 45)
_GAP_PROBABILITY = 0.35


@dataclass(frozen=True, slots=True)
class ReadyBy:
    """The next charging deadline from the device's schedules."""

    at: datetime
    target_percent: float


@dataclass(frozen=True, slots=True)
class PlanRequest:
    now: datetime
    soc_percent: float
    target_percent: float
    battery_kwh: float
    charger_kw: float
    ready_by: datetime
    seed: str


@dataclass(frozen=True, slots=True)
class PlannedSlot:
    start: datetime
    end: datetime
    kwh: float


@dataclass(frozen=True, slots=True)
class _Interval:
    start: datetime
    end: datetime
    in_window: bool


def ceil_minute(value: datetime) -> datetime:
    floored = value.replace(second=0, microsecond=0)
    return floored if floored == value else floored + _MINUTE


def next_ready_by(
    now: datetime, schedules: Sequence[tuple[str, time, float]], tz: ZoneInfo = LONDON
) -> ReadyBy | None:
    """The first schedule instant strictly after ``now``; schedules are (dayOfWeek, time, max)."""
    by_day = {day: (at, target) for day, at, target in schedules}
    local_today = now.astimezone(tz).date()
    for offset in range(8):
        day = local_today + timedelta(days=offset)
        entry = by_day.get(DAYS_OF_WEEK[day.weekday()])
        if entry is None:
            continue
        candidate = datetime.combine(day, entry[0], tzinfo=tz).astimezone(UTC)
        if candidate > now:
            return ReadyBy(at=candidate, target_percent=entry[1])
    return None


def energy_needed_kwh(soc_percent: float, target_percent: float, battery_kwh: float) -> float:
    return max(0.0, (target_percent - soc_percent) / 100.0 * battery_kwh)


def in_offpeak_window(at: datetime, tz: ZoneInfo = LONDON) -> bool:
    local = at.astimezone(tz).time()
    return local >= WINDOW_START or local < WINDOW_END


def _night_windows(start: datetime, end: datetime, tz: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """The 23:30–05:30 local windows overlapping [start, end), clipped to it."""
    windows = []
    first: date = start.astimezone(tz).date() - timedelta(days=1)
    last: date = end.astimezone(tz).date()
    day = first
    while day <= last:
        opens = datetime.combine(day, WINDOW_START, tzinfo=tz).astimezone(UTC)
        closes = datetime.combine(day + timedelta(days=1), WINDOW_END, tzinfo=tz).astimezone(UTC)
        clipped = (max(opens, start), min(closes, end))
        if clipped[0] < clipped[1]:
            windows.append(clipped)
        day += timedelta(days=1)
    return windows


def _candidate_intervals(
    t0: datetime, ready_by: datetime, first_slot: timedelta, tz: ZoneInfo
) -> list[_Interval]:
    """Free intervals in the order Kraken fills them: first slot, nights, mornings, evenings."""
    windows = _night_windows(t0, ready_by, tz)
    outside: list[tuple[datetime, datetime]] = []
    cursor = t0
    for opens, closes in windows:
        if cursor < opens:
            outside.append((cursor, opens))
        cursor = max(cursor, closes)
    if cursor < ready_by:
        outside.append((cursor, ready_by))

    ordered: list[_Interval] = []
    if outside and outside[0][0] == t0:
        opens, closes = outside.pop(0)
        first_end = min(closes, t0 + first_slot)
        ordered.append(_Interval(t0, first_end, in_window=False))
        if first_end < closes:
            outside.insert(0, (first_end, closes))
    ordered += [_Interval(opens, closes, in_window=True) for opens, closes in windows]
    # Mornings (after a window) before evenings: the car is most likely still plugged in then.
    mornings = [pair for pair in outside if any(pair[0] == closes for _o, closes in windows)]
    evenings = [pair for pair in outside if pair not in mornings]
    ordered += [_Interval(opens, closes, in_window=False) for opens, closes in mornings + evenings]
    return ordered


def _next_block_end(start: datetime, limit: datetime, half_hours: int) -> datetime:
    """End of a block of ``half_hours`` that finishes on a half-hour boundary (UTC-aligned)."""
    aligned = start.replace(minute=(start.minute // 30) * 30, second=0, microsecond=0)
    return min(limit, aligned + half_hours * _HALF_HOUR)


def plan_smart_charge(request: PlanRequest) -> list[PlannedSlot]:
    """Slots (time order, whole minutes) that add the energy to reach the target by ready-by."""
    remaining = energy_needed_kwh(request.soc_percent, request.target_percent, request.battery_kwh)
    t0 = ceil_minute(request.now)
    if remaining < 0.01 or request.charger_kw <= 0 or t0 >= request.ready_by:
        return []
    rng = random.Random(request.seed)
    first_slot = timedelta(minutes=rng.choice(_FIRST_SLOT_MINUTES))
    intervals = _candidate_intervals(t0, request.ready_by, first_slot, LONDON)
    window_minutes_left = sum(
        (item.end - item.start) / _MINUTE for item in intervals if item.in_window
    )
    kw = request.charger_kw
    slots: list[PlannedSlot] = []

    def minutes_needed() -> float:
        return math.ceil(remaining / kw * 60)

    for interval in intervals:
        cursor = interval.start
        while remaining >= 0.005 and cursor < interval.end:
            if interval.in_window:
                end = _next_block_end(cursor, interval.end, rng.randint(1, 4))
            else:
                end = interval.end
            capacity = kw * ((end - cursor) / _MINUTE) / 60
            if capacity >= remaining:
                end = cursor + minutes_needed() * _MINUTE
                slots.append(PlannedSlot(cursor, end, remaining))
                if interval.in_window:
                    window_minutes_left -= (end - cursor) / _MINUTE
                remaining = 0.0
                break
            slots.append(PlannedSlot(cursor, end, capacity))
            remaining -= capacity
            if interval.in_window:
                window_minutes_left -= (end - cursor) / _MINUTE
            cursor = end
            gap_fits = window_minutes_left - 30 >= minutes_needed()
            if interval.in_window and gap_fits and rng.random() < _GAP_PROBABILITY:
                gap_end = min(interval.end, cursor + _HALF_HOUR)
                window_minutes_left -= (gap_end - cursor) / _MINUTE
                cursor = gap_end
        if remaining < 0.005:
            break
    return _merge_touching(sorted(slots, key=lambda slot: slot.start))


def _merge_touching(slots: list[PlannedSlot]) -> list[PlannedSlot]:
    """One slot per contiguous run inside the night window; edges of the window stay split."""
    merged: list[PlannedSlot] = []
    for slot in slots:
        previous = merged[-1] if merged else None
        if (
            previous is not None
            and previous.end == slot.start
            and in_offpeak_window(previous.start)
            and in_offpeak_window(slot.start)
        ):
            merged[-1] = PlannedSlot(previous.start, slot.end, previous.kwh + slot.kwh)
        else:
            merged.append(slot)
    return merged
