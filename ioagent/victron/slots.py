"""Map off-peak windows onto Victron ESS scheduled-charge slots: pure functions, no I/O.

A GX slot is ``Day`` (0 = Sunday … 6 = Saturday, negative = disabled), ``Start`` (seconds after
the GX's *local* midnight), ``Duration`` (seconds), ``Soc`` and ``AllowDischarge``. The GX
compares naive local wall-clock time against ``day + Start`` … ``+ Duration`` every 5 s
(dbus-systemcalc-py ``delegates/schedule.py``), so:

* ``Duration`` is measured in wall-clock time. Across the spring change the window 00:30Z–02:30Z
  in London is 00:30 GMT – 03:30 BST: three wall-clock hours although two real hours pass.
* During the repeated autumn hour a wall time happens twice and the GX acts on both. A window
  edge inside that hour is moved out of it (start later, end earlier) so the GX never charges
  outside the window; at most one hour of cheap charging is lost, once a year.
* Slots recur weekly, so a one-off window must be disabled after it ends.

Disabled slots keep their day the way the Victron GUI does: ``Day`` is negated (Sunday becomes
-10, an unknown day -7), and the other fields are left alone to spare the GX's flash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from ioagent.timeutil import to_utc

HORIZON = timedelta(hours=24)
FIELDS = ("Day", "Start", "Duration", "Soc", "AllowDischarge")
DISABLED_UNKNOWN_DAY = -7
"""The GX's default for a disabled slot."""
DISABLED_SUNDAY = -10
"""-0 is 0, so the GUI disables a Sunday slot as -10."""


class TimeWindow(Protocol):
    """Anything with aware ``start`` and ``end``, e.g. ``ioagent.tariff.rules.Window``."""

    @property
    def start(self) -> datetime: ...

    @property
    def end(self) -> datetime: ...


WindowLike = TimeWindow | tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class Interval:
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class SlotState:
    day: int
    start: int
    duration: int
    soc: int
    allow_discharge: bool

    @property
    def enabled(self) -> bool:
        return self.day >= 0

    def fields(self) -> dict[str, int]:
        """The values as the GX names them."""
        return {
            "Day": self.day,
            "Start": self.start,
            "Duration": self.duration,
            "Soc": self.soc,
            "AllowDischarge": int(self.allow_discharge),
        }

    @classmethod
    def from_fields(cls, values: Mapping[str, int | None]) -> SlotState | None:
        """Build from GX field values; ``None`` while any field is still unknown."""
        known = {name: values.get(name) for name in FIELDS}
        day, start, duration, soc, discharge = (known[name] for name in FIELDS)
        if day is None or start is None or duration is None or soc is None or discharge is None:
            return None
        return cls(day, start, duration, soc, bool(discharge))


CurrentSlot = SlotState | Mapping[str, int | None]
"""What is known of a slot on the GX: a full state, or field values read so far."""


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """The desired state of one owned slot and the off-peak window it carries, if any."""

    state: SlotState
    window: Interval | None


@dataclass(frozen=True, slots=True)
class Write:
    slot: int
    field: str
    value: int


def as_interval(window: WindowLike) -> Interval:
    if isinstance(window, tuple):
        start, end = window
    else:
        start, end = window.start, window.end
    return Interval(to_utc(start), to_utc(end))


def upcoming_windows(
    windows: Iterable[WindowLike], now: datetime, horizon: timedelta = HORIZON
) -> list[Interval]:
    """Windows that have not ended and start within ``horizon``, merged where they overlap or
    touch, earliest first. Starts are not clipped here: see :func:`gx_schedule`."""
    now = to_utc(now)
    relevant = sorted(
        (i for i in map(as_interval, windows) if i.end > now and i.start < now + horizon),
        key=lambda i: i.start,
    )
    merged: list[Interval] = []
    for interval in relevant:
        if merged and interval.start <= merged[-1].end:
            if interval.end > merged[-1].end:
                merged[-1] = Interval(merged[-1].start, interval.end)
        else:
            merged.append(interval)
    return merged


def _repeated_hour(instant: datetime, zone: ZoneInfo) -> Interval | None:
    """The real instants of the repeated (autumn) wall-clock period ``instant`` falls in."""
    local = instant.astimezone(zone)
    first, second = local.replace(fold=0), local.replace(fold=1)
    first_offset, second_offset = first.utcoffset(), second.utcoffset()
    if first_offset is None or second_offset is None or first_offset <= second_offset:
        return None
    low = int(first.astimezone(UTC).timestamp())
    high = int(second.astimezone(UTC).timestamp()) + 1
    # Bisect to the second at which the offset changes.
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == first_offset:
            low = middle
        else:
            high = middle
    change = datetime.fromtimestamp(high, UTC)
    shift = first_offset - second_offset
    return Interval(change - shift, change + shift)


def _naive_local(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None, microsecond=0)


def _victron_day(local_date: date) -> int:
    return (local_date.weekday() + 1) % 7


def gx_schedule(start: datetime, end: datetime, zone: ZoneInfo) -> tuple[int, int, int] | None:
    """``(Day, Start, Duration)`` that makes the GX charge within ``[start, end)``, or ``None``
    when nothing of the window can be expressed safely (it lies inside a repeated hour)."""
    repeated = _repeated_hour(start, zone)
    if repeated is not None and repeated.start < start:
        start = repeated.end
    repeated = _repeated_hour(end, zone)
    if repeated is not None and repeated.start < end:
        end = repeated.start
    if start >= end:
        return None
    wall_start = _naive_local(start, zone)
    duration = int((_naive_local(end, zone) - wall_start).total_seconds())
    if duration <= 0:
        return None
    seconds = wall_start.hour * 3600 + wall_start.minute * 60 + wall_start.second
    return _victron_day(wall_start.date()), seconds, duration


def _occurrence_now(state: SlotState, wall_now: datetime) -> tuple[datetime, datetime] | None:
    """The wall-clock occurrence of a single-weekday slot that started last at or before now."""
    if not 0 <= state.day <= 6:
        return None
    for days_back in range(8):
        day = wall_now.date() - timedelta(days=days_back)
        if _victron_day(day) != state.day:
            continue
        begin = datetime.combine(day, datetime.min.time()) + timedelta(seconds=state.start)
        if begin <= wall_now:
            return begin, begin + timedelta(seconds=state.duration)
    return None


def _holds_running_window(
    state: SlotState, window: Interval, now: datetime, zone: ZoneInfo
) -> bool:
    """Whether the slot already covers the rest of a window that has begun.

    A running window's start is clipped to now; without this check every re-evaluation would
    move ``Start`` on by a minute and wear the GX's flash.
    """
    full = gx_schedule(window.start, window.end, zone)
    if full is None:
        return False
    wall_now = _naive_local(now, zone)
    occurrence = _occurrence_now(state, wall_now)
    if occurrence is None:
        return False
    begin, stop = occurrence
    wall_window_start = _naive_local(window.start, zone)
    wall_window_stop = wall_window_start + timedelta(seconds=full[2])
    return wall_window_start <= begin <= wall_now < stop == wall_window_stop


def disabled_day(current_day: int | None) -> int:
    """The negative ``Day`` that disables a slot while remembering its weekday."""
    if current_day is None:
        return DISABLED_UNKNOWN_DAY
    if current_day < 0:
        return current_day
    return DISABLED_SUNDAY if current_day == 0 else -current_day


def _known(current: CurrentSlot | None) -> dict[str, int | None]:
    if current is None:
        return {}
    if isinstance(current, SlotState):
        return dict(current.fields())
    return dict(current)


def desired_slots(
    windows: Iterable[WindowLike],
    *,
    now: datetime,
    zone: ZoneInfo,
    owned: Sequence[int],
    soc: int,
    allow_discharge: bool,
    current: Mapping[int, CurrentSlot],
) -> dict[int, SlotPlan]:
    """The desired state of every owned slot for the windows of the next 24 h.

    The earliest windows that fit get the owned slots. A window stays in the slot that already
    holds it, so that when one window ends the others are not shuffled between slots.
    """
    now = to_utc(now)
    clip_at = now.replace(second=0, microsecond=0)
    schedules: list[tuple[Interval, tuple[int, int, int]]] = []
    for window in upcoming_windows(windows, now):
        schedule = gx_schedule(max(window.start, clip_at), window.end, zone)
        if schedule is not None:
            schedules.append((window, schedule))
    schedules = schedules[: len(owned)]

    known = {slot: _known(current.get(slot)) for slot in owned}
    states = {slot: SlotState.from_fields(known[slot]) for slot in owned}
    assigned: dict[int, tuple[Interval, tuple[int, int, int]]] = {}
    waiting: list[tuple[Interval, tuple[int, int, int]]] = []
    for window, schedule in schedules:
        for slot in owned:
            state = states[slot]
            if slot in assigned or state is None:
                continue
            if (state.day, state.start, state.duration) == schedule or (
                window.start <= now and _holds_running_window(state, window, now, zone)
            ):
                assigned[slot] = (window, (state.day, state.start, state.duration))
                break
        else:
            waiting.append((window, schedule))
    free = [slot for slot in sorted(owned) if slot not in assigned]
    assigned.update(zip(free, waiting, strict=False))

    plans: dict[int, SlotPlan] = {}
    for slot in owned:
        if slot in assigned:
            window, (day, start, duration) = assigned[slot]
            plans[slot] = SlotPlan(SlotState(day, start, duration, soc, allow_discharge), window)
            continue
        values = known[slot]
        current_soc = values.get("Soc")
        plans[slot] = SlotPlan(
            SlotState(
                day=disabled_day(values.get("Day")),
                start=values.get("Start") or 0,
                duration=values.get("Duration") or 0,
                soc=soc if current_soc is None else current_soc,
                allow_discharge=bool(values.get("AllowDischarge")),
            ),
            None,
        )
    return plans


def plan_writes(
    current: Mapping[int, CurrentSlot], desired: Mapping[int, SlotState | SlotPlan]
) -> list[Write]:
    """The writes that bring the GX from ``current`` to ``desired``; only fields that differ.

    Only slots named in ``desired`` are touched. A disabled slot needs only a negative ``Day``
    (any negative value already disables it). When enabling, ``Day`` goes last and when
    disabling it goes first, so the GX never briefly runs a half-written window.
    """
    writes: list[Write] = []
    for slot, target in desired.items():
        state = target.state if isinstance(target, SlotPlan) else target
        have = _known(current.get(slot))
        current_day = have.get("Day")
        if not state.enabled:
            if current_day is None or current_day >= 0:
                writes.append(Write(slot, "Day", state.day))
            continue
        for name, value in state.fields().items():
            if name != "Day" and have.get(name) != value:
                writes.append(Write(slot, name, value))
        if current_day != state.day:
            writes.append(Write(slot, "Day", state.day))
    return writes
