"""Unit rates per half-hour from the products REST feeds, as pure functions.

Legacy tariffs have one feed, ``standard-unit-rates``, whose entries carry their own time
windows; a smart half-hour outside the night window is billed at the night value. Four-rate
tariffs have four flat, windowless feeds: ``day`` (home standard), ``night`` (home low),
``ev_peak`` and ``ev_off_peak``. The feeds can lag each other, so each band carries its *own*
last value forward and one band is never filled from another. An unknown value stays None:
ioagent never publishes a guessed number.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ioagent.kraken.types import UnitRate
from ioagent.tariff.signals import Segment
from ioagent.timeutil import iso_z, to_utc

Band = Literal["standard", "day", "night", "ev_peak", "ev_off_peak"]
LEGACY_BANDS: tuple[Band, ...] = ("standard",)
FOUR_RATE_BANDS: tuple[Band, ...] = ("day", "night", "ev_peak", "ev_off_peak")
FEED_PATHS: dict[Band, str] = {
    "standard": "standard-unit-rates",
    "day": "day-unit-rates",
    "night": "night-unit-rates",
    "ev_peak": "ev-device-peak-unit-rates",
    "ev_off_peak": "ev-device-off-peak-unit-rates",
}
_LEGACY_SPAN = timedelta(hours=24)


@dataclass(frozen=True)
class RateFeeds:
    """The rate entries of the account's tariff, by band, as last read."""

    family: str
    tariff: str | None
    feeds: Mapping[Band, Sequence[UnitRate]] = field(default_factory=dict)


def value_at(entries: Sequence[UnitRate], instant: datetime) -> float | None:
    """The entry in force at ``instant``, else the latest one that started before it."""
    instant = to_utc(instant)
    started = [e for e in entries if e.valid_from is None or e.valid_from <= instant]
    current = [e for e in started if e.valid_to is None or instant < e.valid_to]
    pool = current or started
    if not pool:
        return None
    latest = max(pool, key=lambda e: (e.valid_from is not None, e.valid_from or instant))
    return latest.value_inc_vat


def _legacy_low_high(
    entries: Sequence[UnitRate], instant: datetime
) -> tuple[float | None, float | None]:
    near = [
        e
        for e in entries
        if (e.valid_from is None or e.valid_from < instant + _LEGACY_SPAN)
        and (e.valid_to is None or e.valid_to > instant - _LEGACY_SPAN)
    ]
    if not near:
        return None, None
    values = [e.value_inc_vat for e in near]
    return min(values), max(values)


@dataclass(frozen=True)
class HalfHourRate:
    start: datetime
    home: float | None
    ev: float | None
    home_offpeak: bool
    ev_offpeak: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "start": iso_z(self.start),
            "home": self.home,
            "ev": self.ev,
            "home_offpeak": self.home_offpeak,
            "ev_offpeak": self.ev_offpeak,
        }


def rate_at(
    feeds: RateFeeds | None, instant: datetime, home_offpeak: bool, ev_offpeak: bool
) -> tuple[float | None, float | None]:
    """(home, car) pence per kWh including VAT at ``instant`` given the signals there."""
    if feeds is None:
        return None, None
    if feeds.family == "four_rate":
        home_band: Band = "night" if home_offpeak else "day"
        ev_band: Band = "ev_off_peak" if ev_offpeak else "ev_peak"
        return (
            value_at(feeds.feeds.get(home_band, ()), instant),
            value_at(feeds.feeds.get(ev_band, ()), instant),
        )
    entries = feeds.feeds.get("standard", ())
    low, high = _legacy_low_high(entries, instant)
    home = low if home_offpeak else value_at(entries, instant)
    if not home_offpeak and home is None:
        home = high
    # One rate for the whole house on legacy: the car pays the home's rate.
    return home, home


def half_hour_rates(
    feeds: RateFeeds | None, segments: Sequence[Segment], start: datetime, end: datetime
) -> list[HalfHourRate]:
    """One entry per 30 minutes from ``start`` (a half-hour) to ``end``, from the signals'
    segments (which must cover the range)."""
    rows = []
    cursor = to_utc(start)
    while cursor < end:
        seg = next((s for s in segments if s.start <= cursor < s.end), None)
        home_offpeak = seg.home_offpeak if seg else False
        ev_offpeak = seg.ev_offpeak if seg else False
        home, ev = rate_at(feeds, cursor, home_offpeak, ev_offpeak)
        rows.append(HalfHourRate(cursor, home, ev, home_offpeak, ev_offpeak))
        cursor += timedelta(minutes=30)
    return rows


__all__ = [
    "FEED_PATHS",
    "FOUR_RATE_BANDS",
    "LEGACY_BANDS",
    "Band",
    "HalfHourRate",
    "RateFeeds",
    "half_hour_rates",
    "rate_at",
    "value_at",
]
