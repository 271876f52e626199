"""Hold the published signals against the bill, half-hour by half-hour.

For every settled half-hour, the band Octopus billed the home is compared with what ioagent
published on ``offpeak`` then, and the car's band with ``ev/offpeak``. The signal "then" is
the value it held for most of the half-hour (a flip a second after :00/:30 is the flip for
that half-hour, not a disagreement); a half-hour before the first recorded transition has no
signal and is not compared.

A side is compared only where Octopus states a band (``low`` or ``standard``). ``split``
(both buckets carry energy), ``none`` (two zero buckets) and ``unknown`` (a label ioagent does
not know) are counted apart and never as agreement or disagreement. A half-hour agrees when
every compared side agrees.

A disagreement's reason names the likeliest rule behind it, from what the bill itself shows;
it is a hint for the reader, not a verdict (docs/ledger.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, Final
from zoneinfo import ZoneInfo

from ioagent.ledger.labels import LOW, STANDARD
from ioagent.ledger.parse import NONE, SPLIT, UNKNOWN, Band, SettledHalfHour
from ioagent.ledger.windows import LONDON
from ioagent.timeutil import iso_z, to_utc

Transitions = Sequence[tuple[datetime, bool]]
"""``(at, offpeak)`` in time order: the value published at ``at``, held until the next."""

HOME_TOPIC: Final = "offpeak"
CAR_TOPIC: Final = "ev/offpeak"
FIXED_WINDOW: Final = (time(23, 30), time(5, 30))
LAST_DISAGREEMENTS: Final = 20


def signal_during(transitions: Transitions, start: datetime, end: datetime) -> bool | None:
    """The value held for most of ``[start, end)``; None if unpublished for most of it."""
    held = {True: 0.0, False: 0.0, None: 0.0}
    value: bool | None = None
    cursor = start
    for at, published in transitions:
        at = to_utc(at)
        if at >= end:
            break
        if at > cursor:
            held[value] += (at - cursor).total_seconds()
            cursor = at
        value = published
    held[value] += (end - cursor).total_seconds()
    best = max(held.values())
    winners = [key for key, seconds in held.items() if seconds == best]
    if len(winners) != 1 or winners[0] is None:
        return None
    return winners[0]


def in_fixed_window(
    start: datetime, window: tuple[time, time] = FIXED_WINDOW, zone: ZoneInfo = LONDON
) -> bool:
    clock = to_utc(start).astimezone(zone).time()
    open_at, close_at = window
    if open_at <= close_at:
        return open_at <= clock < close_at
    return clock >= open_at or clock < close_at


def _word(offpeak: bool) -> str:
    return "offpeak" if offpeak else "peak"


def _cause(side: str, signal: bool, row: SettledHalfHour, in_window: bool) -> str:
    """The likeliest rule behind a disagreement, from what the bill shows."""
    car_charged = row.car_kwh > 0
    if side == "home":
        if signal:  # published off-peak, billed home standard
            if in_window:
                return "window billed standard"
            if row.car_band == STANDARD and car_charged:
                return "allowance"
            if row.car_band == LOW and car_charged:
                return "no home bonus"
            if not car_charged:
                return "no charging"
            return "unexplained"
        # published peak, billed home low
        if in_window:
            return "window"
        if row.car_band == LOW and car_charged:
            return "smart charge not in the plan"
        return "unexplained"
    if signal:  # published car off-peak, billed car standard
        if car_charged:
            return "allowance or boost"
        return "unexplained"
    if car_charged:
        return "charge billed low not in the plan"
    return "unexplained"


@dataclass(frozen=True, slots=True)
class Comparison:
    start: datetime
    topic: str
    side: str
    signal: bool | None
    billed: Band
    in_window: bool
    row: SettledHalfHour

    @property
    def compared(self) -> bool:
        return self.signal is not None and self.billed in (LOW, STANDARD)

    @property
    def agreed(self) -> bool:
        return self.compared and self.signal == (self.billed == LOW)

    @property
    def reason(self) -> str:
        if self.signal is None:
            return "no signal recorded"
        head = f"signal {_word(self.signal)}, billed {self.side} {self.billed}"
        if self.billed not in (LOW, STANDARD) or self.agreed:
            return head
        return f"{head}: {_cause(self.side, self.signal, self.row, self.in_window)}"

    def as_json(self) -> dict[str, Any]:
        return {
            "start": iso_z(self.start),
            "topic": self.topic,
            "signal": None if self.signal is None else _word(self.signal),
            "billed": f"{self.side} {self.billed}",
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class HalfHourCheck:
    row: SettledHalfHour
    home: Comparison
    car: Comparison

    @property
    def compared(self) -> bool:
        return self.home.compared or self.car.compared

    @property
    def agreed(self) -> bool:
        sides = [c for c in (self.home, self.car) if c.compared]
        return bool(sides) and all(c.agreed for c in sides)

    @property
    def disagreements(self) -> list[Comparison]:
        return [c for c in (self.home, self.car) if c.compared and not c.agreed]


@dataclass(frozen=True, slots=True)
class Reconciliation:
    checks: tuple[HalfHourCheck, ...]

    @property
    def compared(self) -> int:
        return sum(1 for c in self.checks if c.compared)

    @property
    def agreed(self) -> int:
        return sum(1 for c in self.checks if c.agreed)

    @property
    def ratio(self) -> float | None:
        compared = self.compared
        return None if compared == 0 else self.agreed / compared

    def disagreements(self) -> list[Comparison]:
        return [d for check in self.checks for d in check.disagreements]

    def count_band(self, band: str) -> int:
        return sum(1 for c in self.checks if band in (c.row.home_band, c.row.car_band))

    def unpublished(self) -> int:
        """Half-hours with a stated band but no recorded signal for it."""
        return sum(
            1
            for c in self.checks
            if not c.compared
            and any(s.signal is None and s.billed in (LOW, STANDARD) for s in (c.home, c.car))
        )


def reconcile(
    rows: Sequence[SettledHalfHour],
    home: Transitions,
    car: Transitions,
    *,
    window: tuple[time, time] = FIXED_WINDOW,
    zone: ZoneInfo = LONDON,
) -> Reconciliation:
    home_sorted = sorted(home, key=lambda t: to_utc(t[0]))
    car_sorted = sorted(car, key=lambda t: to_utc(t[0]))
    checks = []
    for row in sorted(rows, key=lambda r: r.start):
        inside = in_fixed_window(row.start, window, zone)
        checks.append(
            HalfHourCheck(
                row,
                Comparison(
                    row.start,
                    HOME_TOPIC,
                    "home",
                    signal_during(home_sorted, row.start, row.end),
                    row.home_band,
                    inside,
                    row,
                ),
                Comparison(
                    row.start,
                    CAR_TOPIC,
                    "car",
                    signal_during(car_sorted, row.start, row.end),
                    row.car_band,
                    inside,
                    row,
                ),
            )
        )
    return Reconciliation(tuple(checks))


def agreement_json(
    result: Reconciliation, days: int, last: int = LAST_DISAGREEMENTS
) -> dict[str, Any]:
    """The ``ledger/agreement`` payload."""
    ratio = result.ratio
    return {
        "days": days,
        "half_hours": result.compared,
        "agreed": result.agreed,
        "ratio": None if ratio is None else round(ratio, 4),
        "disagreements": [d.as_json() for d in result.disagreements()[-last:]] if last else [],
        "not_compared": {
            "unknown_label": result.count_band(UNKNOWN),
            "split": result.count_band(SPLIT),
            "no_band": sum(
                1 for c in result.checks if c.row.home_band == NONE and c.row.car_band == NONE
            ),
            "no_signal": result.unpublished(),
        },
    }
