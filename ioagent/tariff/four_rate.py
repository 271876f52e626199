"""The 2026 four-rate Intelligent Octopus Go products (``IOG-SMB-…``) as pure functions.

The rules (docs/tariff.md gives the evidence and the config key of each open one):

* R1: the home is cheap in the nightly window (23:30–05:30 local) whatever the car does.
* R2: the car has an allowance (6 h) per period from local noon to local noon (23 h or 25 h on
  DST days). Smart time counts in whole half-hours touched (R2a, ``allowance_measure``), in and
  out of the window, in time order. A half-hour belongs to the period in which it starts, so a
  slot across noon is split at noon (R8, ``across_noon``).
* R3: outside the window, a half-hour touched by a counting smart slot within the allowance
  is cheap for the home (the "home bonus") and for the car.
* R4: beyond the allowance the car pays its standard rate everywhere and the home loses the
  bonus; inside the window the home stays cheap.
* R5: boost (and test) charging is never cheap for the car and never counts.
* R6: a planned slot in which the car does not charge earns no home bonus: with
  ``smart_offpeak = "charging"`` only confirmed slots make the home cheap.

Everything is computed on a grid of the zone's half-hours, starting at the beginning of the
allowance period that holds the range asked for, so the answer never depends on the range.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from ioagent.kraken.types import Dispatch
from ioagent.tariff.evidence import Confidence, confirmed, counts
from ioagent.tariff.windows import (
    DAY,
    HALF_HOUR,
    Window,
    floor_half_hour,
    half_hours,
    nightly_windows,
    wall,
)
from ioagent.timeutil import to_utc

SmartOffpeak = Literal["planned", "charging"]
AllowanceMeasure = Literal["half_hours", "slot_time"]
AcrossNoon = Literal["split", "slot_start"]
NOON = time(12, 0)


@dataclass(frozen=True)
class FourRateRules:
    zone: ZoneInfo
    window_start: time = time(23, 30)
    window_end: time = time(5, 30)
    allowance_hours: float = 6.0
    period_start: time = NOON
    smart_offpeak: SmartOffpeak = "charging"
    """Whether an unconfirmed smart half-hour makes the home cheap (``planned``) or not."""
    allowance_counts: SmartOffpeak = "planned"
    """Whether a slot that ended without being confirmed still used allowance (``planned``)."""
    allowance_measure: AllowanceMeasure = "half_hours"
    """R2a: a half-hour touched uses a whole half-hour (``half_hours``), or only the minutes of
    the slots in it (``slot_time``)."""
    across_noon: AcrossNoon = "split"
    """R8: a slot across noon is split at noon (``split``), or all of it belongs to the period
    in which it starts (``slot_start``)."""

    def __post_init__(self) -> None:
        if self.allowance_hours < 0:
            raise ValueError("allowance_hours must not be negative")

    @property
    def allowance(self) -> timedelta:
        return timedelta(hours=self.allowance_hours)


@dataclass(frozen=True)
class HalfHour:
    """One half-hour of the grid and what the tariff makes of it."""

    start: datetime
    end: datetime
    period: datetime
    """The start of the allowance period this half-hour belongs to."""
    in_window: bool
    smart: bool
    """Touched by a counting smart slot."""
    confirmed: bool
    """One of those slots is confirmed charging."""
    uses_allowance: bool
    """It consumes allowance (a counting slot that has not ended unconfirmed, see the rules)."""
    counted: timedelta
    """How much allowance it uses (R2a): the whole half-hour, or its slots' minutes; zero when
    it uses none."""
    within_allowance: bool
    home_offpeak: bool
    ev_offpeak: bool
    confidence: Confidence


def period_start(instant: datetime, rules: FourRateRules) -> datetime:
    """The start (local noon) of the allowance period holding ``instant``."""
    instant = to_utc(instant)
    today = instant.astimezone(rules.zone).date()
    candidate = wall(today, rules.period_start, rules.zone)
    return candidate if candidate <= instant else wall(today - DAY, rules.period_start, rules.zone)


def next_reset(instant: datetime, rules: FourRateRules) -> datetime:
    """The end of the allowance period holding ``instant`` (the next local noon)."""
    start = period_start(instant, rules)
    local_day = start.astimezone(rules.zone).date()
    return wall(local_day + DAY, rules.period_start, rules.zone)


def grid(
    plan: Iterable[Dispatch],
    evidence: Sequence[Window],
    rules: FourRateRules,
    now: datetime,
    start: datetime,
    end: datetime,
) -> list[HalfHour]:
    """The half-hours from the allowance period holding ``start`` until ``end``.

    With ``across_noon = "slot_start"`` the grid starts at the period of a slot that runs into
    that period, so that the half-hours it charges to its own period are known.
    """
    now, start, end = to_utc(now), to_utc(start), to_utc(end)
    first = period_start(start, rules)
    slots = [slot for slot in plan if counts(slot, now) and slot.end > slot.start]
    if rules.across_noon == "slot_start":
        first = min([first, *(period_start(s.start, rules) for s in slots if s.end > first)])
    windows = nightly_windows(rules.zone, rules.window_start, rules.window_end, first, end)
    touched: dict[datetime, list[_Mark]] = {}
    for slot in slots:
        is_confirmed = confirmed(slot, evidence)
        ended_unconfirmed = to_utc(slot.end) <= now and not is_confirmed
        uses = not ended_unconfirmed or rules.allowance_counts == "planned"
        home_period = period_start(slot.start, rules)
        for cell in half_hours(slot.start, slot.end, rules.zone):
            touched.setdefault(cell, []).append(
                _Mark(is_confirmed, uses, home_period, to_utc(slot.start), to_utc(slot.end))
            )

    cells: list[HalfHour] = []
    used: dict[datetime, timedelta] = {}
    cursor = floor_half_hour(first, rules.zone)
    while cursor < end:
        cell_end = floor_half_hour(cursor + HALF_HOUR, rules.zone)
        marks = touched.get(cursor, [])
        period = period_start(cursor, rules)
        if marks and rules.across_noon == "slot_start":
            period = min(mark.period for mark in marks)
        smart = bool(marks)
        is_confirmed = any(mark.confirmed for mark in marks)
        uses = any(mark.uses for mark in marks)
        cost = _cost(marks, cursor, cell_end, rules)
        counted = _cost([m for m in marks if m.uses], cursor, cell_end, rules)
        before = used.get(period, timedelta(0))
        # Whole half-hours only: a half-hour that would cross the allowance is beyond it.
        within = smart and before + cost <= rules.allowance
        used[period] = before + counted  # zero when no slot here uses allowance
        in_window = any(cursor in w for w in windows)
        bonus = smart and within and (is_confirmed or rules.smart_offpeak == "planned")
        confidence: Confidence
        if in_window:
            confidence = "guaranteed"
        elif smart and within:
            confidence = "charging" if is_confirmed else "planned"
        else:
            confidence = "none"
        cells.append(
            HalfHour(
                start=cursor,
                end=cell_end,
                period=period,
                in_window=in_window,
                smart=smart,
                confirmed=is_confirmed,
                uses_allowance=uses,
                counted=counted,
                within_allowance=within,
                home_offpeak=in_window or bonus,
                ev_offpeak=smart and within,
                confidence=confidence,
            )
        )
        cursor = cell_end
    return cells


@dataclass(frozen=True)
class _Mark:
    """A counting smart slot that touches a half-hour."""

    confirmed: bool
    uses: bool
    period: datetime
    """The allowance period in which the slot starts."""
    start: datetime
    end: datetime


def _cost(
    marks: Sequence[_Mark], start: datetime, end: datetime, rules: FourRateRules
) -> timedelta:
    """The allowance that ``marks`` use in the half-hour ``[start, end)`` (R2a)."""
    if not marks:
        return timedelta(0)
    if rules.allowance_measure == "half_hours":
        return end - start
    # slot_time: the union of the slots' minutes in the half-hour (slots can overlap).
    spans = sorted((max(m.start, start), min(m.end, end)) for m in marks)
    total, reach = timedelta(0), start
    for span_start, span_end in spans:
        span_start = max(span_start, reach)
        if span_end > span_start:
            total += span_end - span_start
            reach = span_end
    return total


@dataclass(frozen=True)
class Allowance:
    """The car allowance at one instant (hours)."""

    hours: float
    used: float
    remaining: float
    resets_at: datetime
    exhausted_at: datetime | None
    """When the current plan uses the allowance up (the end of its last cheap half-hour)."""
    changes_at: tuple[datetime, ...]
    """Instants after now at which ``used`` changes (half-hour starts, and the reset)."""


def allowance_at(cells: Sequence[HalfHour], rules: FourRateRules, now: datetime) -> Allowance:
    """The allowance of the period holding ``now``; ``cells`` must cover that period.

    A half-hour is used as soon as it starts (with ``slot_time``, all its slots' minutes then).
    """
    now = to_utc(now)
    period = period_start(now, rules)
    resets_at = next_reset(now, rules)
    spending = [c for c in cells if c.period == period and c.uses_allowance and c.within_allowance]
    used = sum((c.counted for c in spending if c.start <= now), timedelta(0))
    planned = sum((c.counted for c in spending), timedelta(0))
    exhausted_at = spending[-1].end if spending and planned >= rules.allowance else None
    cap = rules.allowance
    return Allowance(
        hours=rules.allowance_hours,
        used=min(used, cap).total_seconds() / 3600,
        remaining=max(cap - used, timedelta(0)).total_seconds() / 3600,
        resets_at=resets_at,
        exhausted_at=exhausted_at,
        changes_at=(*(c.start for c in spending if c.start > now), resets_at),
    )


__all__ = [
    "AcrossNoon",
    "Allowance",
    "AllowanceMeasure",
    "FourRateRules",
    "HalfHour",
    "SmartOffpeak",
    "allowance_at",
    "grid",
    "next_reset",
    "period_start",
]
