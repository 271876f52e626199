"""The Intelligent Octopus Go tariff as pure functions: when is the whole house off-peak?

Rules (see docs/tariff.md for examples):

* **Fixed window.** Every night from ``offpeak_start`` to ``offpeak_end`` wall-clock in the
  tariff's zone (23:30–05:30 Europe/London by default). Wall-clock, so DST changes its real
  length: 5 h on the spring-forward night, 7 h on the autumn night. ``start > end`` crosses
  midnight; ``start < end`` lies within one day; ``start == end`` means no fixed window.
* **Smart slots.** A ``SMART`` dispatch (except one still running that is reported ``AWAY``:
  see :func:`counts_for_offpeak`) makes the whole house off-peak for every half-hour it touches (half-hours on :00/:30 of the
  tariff zone's wall clock, so zones with :15/:45 offsets are handled), or exactly its own
  time when ``round_to_half_hour`` is off. ``BOOST`` and ``TEST`` slots never do.
* **Smart-charge cap.** With ``smart_cap`` on, only the first ``smart_cap_hours`` of smart
  off-peak time *outside the fixed window* count per **tariff day**; later smart time is peak.
  Time is measured after rounding, so with the default windows it is whole half-hours.

The tariff day runs from the end of one fixed window to the end of the next (05:30 → 05:30
London by default). It contains exactly one stretch of "daytime" between two guaranteed
windows, so every such stretch gets one full budget, the cap never depends on slots from
before the last fixed window (bounded memory; see ``ioagent.tariff.plan.DEFAULT_KEEP``), and with
the default window it is the same as counting per calendar day, because 05:30–23:30 lies
inside one calendar day. A rolling 24 h window would make the answer for one half-hour
depend on the order in which a day's slots were consumed across two nights, which nobody can
check against a bill. Octopus has not published the exact day boundary; the choice is a
documented assumption, and ``smart_cap`` is off unless the device reports the cap.

Every datetime in and out is aware UTC. Window lists returned here are merged, sorted, and
contain every window that overlaps the requested ``[start, end)`` range, *unclipped*, so the
first and last windows may extend outside the range.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from ioagent.config import TariffSettings
from ioagent.kraken.types import AT_HOME, SMART, Dispatch
from ioagent.tariff.evidence import counts, location_changes
from ioagent.tariff.windows import (
    DAY,
    Window,
    ceil_half_hour,
    floor_half_hour,
    local_dates,
    merge,
    nightly_windows,
    overlapping,
    subtract,
    wall,
)
from ioagent.timeutil import to_utc

LOOKAHEAD = timedelta(hours=48)
"""How far :func:`evaluate` looks ahead for the next off-peak period and dispatch."""

_DAY = DAY


@dataclass(frozen=True)
class TariffRules:
    zone: ZoneInfo
    offpeak_start: time
    offpeak_end: time
    round_to_half_hour: bool = True
    smart_cap: bool = False
    smart_cap_hours: float = 6.0

    def __post_init__(self) -> None:
        if self.smart_cap_hours < 0:
            raise ValueError("smart_cap_hours must not be negative")

    @classmethod
    def from_settings(cls, settings: TariffSettings, device_capped: str | None) -> TariffRules:
        """Build the rules; ``smart_cap = "auto"`` follows the device's
        ``isChargingDurationCapped`` flag (only ``"ENABLED"`` turns the cap on)."""
        if settings.smart_cap == "auto":
            capped = device_capped == "ENABLED"
        else:
            capped = settings.smart_cap == "on"
        return cls(
            zone=settings.zone,
            offpeak_start=settings.start_time,
            offpeak_end=settings.end_time,
            round_to_half_hour=settings.round_to_half_hour,
            smart_cap=capped,
            smart_cap_hours=settings.smart_cap_hours,
        )


@dataclass(frozen=True)
class TariffState:
    """The tariff at one instant.

    ``offpeak_end`` is the end of the current off-peak period, or of the next one when it is
    peak now. ``next_offpeak_start`` is the start of the next off-peak period that begins after
    now (so while off-peak, the one after the current period). The dispatch fields work the
    same way on periods of continuous dispatching (any type, any location, exact times):
    ``next_dispatch_end`` is the end of the current period while dispatching, else of the next
    one; ``next_dispatch_start`` is the start of the next period that begins after now.
    ``next_transition`` is the earliest instant strictly after now at which ``offpeak`` or
    ``dispatching`` changes. Fields are ``None`` when nothing is known within the look-ahead.
    """

    offpeak: bool
    dispatching: bool
    offpeak_end: datetime | None
    next_offpeak_start: datetime | None
    next_dispatch_start: datetime | None
    next_dispatch_end: datetime | None
    next_transition: datetime | None


# --- helpers (shared with the other product families: ioagent.tariff.windows) ---------------

_merge = merge
_subtract = subtract
_overlapping = overlapping
_wall = wall
_floor_half_hour = floor_half_hour
_ceil_half_hour = ceil_half_hour
_local_dates = local_dates


def _tariff_day_starts(start: datetime, end: datetime, rules: TariffRules) -> list[datetime]:
    return [
        _wall(day, rules.offpeak_end, rules.zone) for day in _local_dates(start, end, rules.zone)
    ]


# --- public window functions ------------------------------------------------------------


def fixed_windows(rules: TariffRules, start: datetime, end: datetime) -> list[Window]:
    """The nightly fixed off-peak windows that overlap ``[start, end)``."""
    return nightly_windows(rules.zone, rules.offpeak_start, rules.offpeak_end, start, end)


def counts_for_offpeak(slot: Dispatch, now: datetime | None) -> bool:
    """Whether a slot can make the house off-peak, by its type and location.

    With ``now``: every ``SMART`` slot counts except one *still running or to come* that is
    reported ``AWAY``. Billing data shows completed dispatches later relabelled ``AWAY`` (and
    ``UNABLE_TO_IDENTIFY``) billed at the low rate, so a completed slot counts whatever its
    location says (docs/tariff.md, R7). Without ``now`` the older rule applies: at home or
    unknown (``ioagent history`` no longer uses it: it reads past nights through
    ``ioagent.tariff.signals.timeline``).
    """
    if now is None:
        return slot.type == SMART and slot.location in (AT_HOME, None)
    return counts(slot, now)


def _all_smart_windows(
    plan: Iterable[Dispatch], rules: TariffRules, now: datetime | None = None
) -> list[Window]:
    windows = []
    for slot in plan:
        if not counts_for_offpeak(slot, now):
            continue
        slot_start, slot_end = to_utc(slot.start), to_utc(slot.end)
        if slot_end <= slot_start:
            continue
        if rules.round_to_half_hour:
            slot_start = _floor_half_hour(slot_start, rules.zone)
            slot_end = _ceil_half_hour(slot_end, rules.zone)
        windows.append(Window(slot_start, slot_end))
    return _merge(windows)


def smart_windows(
    plan: Iterable[Dispatch],
    rules: TariffRules,
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
) -> list[Window]:
    """Off-peak windows made by smart slots at home, before the cap, overlapping the range."""
    return _overlapping(_all_smart_windows(plan, rules, now), to_utc(start), to_utc(end))


def _capped(smart: list[Window], rules: TariffRules) -> list[Window]:
    if not rules.smart_cap or not smart:
        return smart
    first, last = smart[0].start, smart[-1].end
    fixed = fixed_windows(rules, first, last)
    outside = _subtract(smart, fixed)
    boundaries = _tariff_day_starts(first, last, rules)

    budget = timedelta(hours=rules.smart_cap_hours)
    used: dict[datetime, timedelta] = {}
    excess: list[Window] = []
    for piece in outside:
        for part in _split(piece, boundaries):
            day = max(b for b in boundaries if b <= part.start)
            remaining = budget - used.get(day, timedelta(0))
            if remaining >= part.duration:
                used[day] = used.get(day, timedelta(0)) + part.duration
                continue
            if remaining > timedelta(0):
                excess.append(Window(part.start + remaining, part.end))
                used[day] = budget
            else:
                excess.append(part)
    return _subtract(smart, excess)


def _split(window: Window, boundaries: list[datetime]) -> list[Window]:
    parts = []
    cursor = window.start
    for boundary in boundaries:
        if cursor < boundary < window.end:
            parts.append(Window(cursor, boundary))
            cursor = boundary
    parts.append(Window(cursor, window.end))
    return parts


def capped_smart_windows(
    plan: Iterable[Dispatch],
    rules: TariffRules,
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
) -> list[Window]:
    """Smart windows after the cap (identical to :func:`smart_windows` when the cap is off).

    The cap is computed over the whole plan, so the answer for a range does not depend on the
    range asked for; pass the remembered past slots of the current tariff day too.
    """
    capped = _capped(_all_smart_windows(plan, rules, now), rules)
    return _overlapping(capped, to_utc(start), to_utc(end))


def offpeak_windows(
    plan: Iterable[Dispatch],
    rules: TariffRules,
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
) -> list[Window]:
    """Whole-house off-peak periods (fixed ∪ capped smart) overlapping ``[start, end)``.

    ``now`` selects the location rule (see :func:`counts_for_offpeak`)."""
    start, end = to_utc(start), to_utc(end)
    slots = list(plan)
    smart = _capped(_all_smart_windows(slots, rules, now), rules)
    # Fixed windows are generated a day beyond the range and the smart windows, so a merged
    # period that runs past the range is reported with its true ends.
    span_start = min([start, *(w.start for w in smart)]) - _DAY
    span_end = max([end, *(w.end for w in smart)]) + _DAY
    merged = _merge([*fixed_windows(rules, span_start, span_end), *smart])
    return _overlapping(merged, start, end)


def dispatch_windows(plan: Iterable[Dispatch], start: datetime, end: datetime) -> list[Window]:
    """Periods of continuous dispatching (any type, any location, exact times)."""
    windows = _merge(Window(to_utc(slot.start), to_utc(slot.end)) for slot in plan)
    return _overlapping(windows, to_utc(start), to_utc(end))


# --- evaluation ----------------------------------------------------------------------------


def _current_and_next(windows: list[Window], now: datetime) -> tuple[Window | None, Window | None]:
    current = next((w for w in windows if now in w), None)
    upcoming = next((w for w in windows if w.start > now), None)
    return current, upcoming


def _state_at(offpeak: list[Window], dispatch: list[Window], now: datetime) -> TariffState:
    current_offpeak, next_offpeak = _current_and_next(offpeak, now)
    current_dispatch, next_dispatch = _current_and_next(dispatch, now)
    offpeak_end_source = current_offpeak or next_offpeak
    dispatch_end_source = current_dispatch or next_dispatch
    boundaries = [
        instant for w in (*offpeak, *dispatch) for instant in (w.start, w.end) if instant > now
    ]
    return TariffState(
        offpeak=current_offpeak is not None,
        dispatching=current_dispatch is not None,
        offpeak_end=offpeak_end_source.end if offpeak_end_source else None,
        next_offpeak_start=next_offpeak.start if next_offpeak else None,
        next_dispatch_start=next_dispatch.start if next_dispatch else None,
        next_dispatch_end=dispatch_end_source.end if dispatch_end_source else None,
        next_transition=min(boundaries, default=None),
    )


def _evaluate_as_of(slots: list[Dispatch], rules: TariffRules, now: datetime) -> TariffState:
    horizon = now + LOOKAHEAD
    return _state_at(
        offpeak_windows(slots, rules, now, horizon, now=now),
        dispatch_windows(slots, now, horizon),
        now,
    )


def evaluate(plan: Iterable[Dispatch], rules: TariffRules, now: datetime) -> TariffState:
    """The tariff state at ``now``, looking :data:`LOOKAHEAD` ahead.

    ``next_transition`` also covers the end of a running ``AWAY`` slot when that changes the
    state: from its end it is a completed dispatch, which counts (:func:`counts_for_offpeak`).
    """
    now = to_utc(now)
    slots = list(plan)
    state = _evaluate_as_of(slots, rules, now)
    key = (state.offpeak, state.dispatching)
    upcoming = state.next_transition
    for change in location_changes(slots, now):
        if upcoming is not None and upcoming <= change:
            break
        later = _evaluate_as_of(slots, rules, change)
        if (later.offpeak, later.dispatching) != key:
            upcoming = change
            break
        upcoming = later.next_transition
    return replace(state, next_transition=upcoming)


def transitions(
    plan: Iterable[Dispatch], rules: TariffRules, now: datetime, horizon: timedelta
) -> list[tuple[datetime, bool, bool]]:
    """Every change ``(instant, offpeak, dispatching)`` in ``(now, now + horizon]``."""
    now = to_utc(now)
    slots = list(plan)
    limit = now + horizon
    # The plan reads the same between two location changes: one set of windows per stretch.
    points = [now, *(c for c in location_changes(slots, now) if c <= limit)]
    # Query one day past the limit so a window starting exactly at the limit is included.
    dispatch = dispatch_windows(slots, now, limit + _DAY)
    stretches = [offpeak_windows(slots, rules, now, limit + _DAY, now=p) for p in points]
    instants = sorted(
        {
            instant
            for w in (*(w for s in stretches for w in s), *dispatch)
            for instant in (w.start, w.end)
            if now < instant <= limit
        }
        | set(points[1:])
    )
    result = []
    previous = (any(now in w for w in stretches[0]), any(now in w for w in dispatch))
    for instant in instants:
        offpeak = stretches[bisect_right(points, instant) - 1]
        value = (any(instant in w for w in offpeak), any(instant in w for w in dispatch))
        if value != previous:
            result.append((instant, *value))
            previous = value
    return result


__all__ = [
    "LOOKAHEAD",
    "TariffRules",
    "TariffState",
    "Window",
    "capped_smart_windows",
    "counts_for_offpeak",
    "dispatch_windows",
    "evaluate",
    "fixed_windows",
    "offpeak_windows",
    "smart_windows",
    "transitions",
]
