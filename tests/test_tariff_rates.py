"""Unit rates per half-hour from the REST feeds (pure): each band carries its own last value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ioagent.kraken.types import UnitRate, parse_unit_rates
from ioagent.tariff.rates import RateFeeds, half_hour_rates, rate_at, value_at
from ioagent.tariff.signals import Segment


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def flat(value: float, since: str) -> UnitRate:
    return UnitRate(value, utc(since), None)


# The night feed moved on 2026-07-05, the day feed only two days later (feeds lag each other).
FOUR = RateFeeds(
    "four_rate",
    "E-1R-IOG-SMB-VAR-24-10-29-H",
    {
        "day": [flat(29.0, "2026-04-01 00:00"), flat(30.371355, "2026-07-07 23:00")],
        "night": [flat(7.5, "2026-04-01 00:00"), flat(6.89997, "2026-07-05 23:00")],
        "ev_peak": [flat(27.4785, "2026-04-01 00:00")],
        "ev_off_peak": [],
    },
)


@pytest.mark.parametrize(
    ("instant", "home_offpeak", "ev_offpeak", "expected"),
    [
        ("2026-07-06 12:00", False, False, (29.0, 27.4785)),  # the day band's own last value
        ("2026-07-06 01:00", True, False, (6.89997, 27.4785)),
        ("2026-07-08 12:00", False, False, (30.371355, 27.4785)),
        # No car off-peak value published: None, never the night value.
        ("2026-07-08 12:00", True, True, (6.89997, None)),
        ("2026-03-01 12:00", False, False, (None, None)),
    ],
)
def test_four_rate_bands(
    instant: str, home_offpeak: bool, ev_offpeak: bool, expected: tuple[float | None, float | None]
) -> None:
    assert rate_at(FOUR, utc(instant), home_offpeak, ev_offpeak) == expected


LEGACY_ENTRIES = parse_unit_rates(
    [
        {
            "value_inc_vat": 27.5,
            "valid_from": "2026-01-15T05:30:00Z",
            "valid_to": "2026-01-15T23:30:00Z",
        },
        {
            "value_inc_vat": 7.0,
            "valid_from": "2026-01-14T23:30:00Z",
            "valid_to": "2026-01-15T05:30:00Z",
        },
        {
            "value_inc_vat": 7.0,
            "valid_from": "2026-01-15T23:30:00Z",
            "valid_to": "2026-01-16T05:30:00Z",
        },
    ]
)
LEGACY = RateFeeds("legacy", "E-1R-INTELLI-VAR-24-10-29-H", {"standard": LEGACY_ENTRIES})


@pytest.mark.parametrize(
    ("instant", "offpeak", "expected"),
    [
        ("2026-01-15 12:00", False, (27.5, 27.5)),
        ("2026-01-15 19:30", True, (7.0, 7.0)),  # a smart half-hour: the night value
        ("2026-01-16 00:00", True, (7.0, 7.0)),
    ],
)
def test_legacy_rates(instant: str, offpeak: bool, expected: tuple[float, float]) -> None:
    assert rate_at(LEGACY, utc(instant), offpeak, offpeak) == expected


def test_no_feeds_no_numbers() -> None:
    assert rate_at(None, utc("2026-01-15 12:00"), False, False) == (None, None)


def test_value_at_prefers_the_entry_in_force() -> None:
    entries = [
        UnitRate(1.0, utc("2026-01-01 00:00"), utc("2026-01-02 00:00")),
        UnitRate(2.0, utc("2026-01-02 00:00"), None),
    ]
    assert value_at(entries, utc("2026-01-01 12:00")) == 1.0
    assert value_at(entries, utc("2026-01-03 12:00")) == 2.0


def test_half_hour_rows_follow_the_segments() -> None:
    start = utc("2026-07-08 19:00")
    segments = [
        Segment(start, start + timedelta(minutes=30), False, False, "none"),
        Segment(start + timedelta(minutes=30), start + timedelta(hours=2), True, True, "charging"),
    ]
    rows = half_hour_rates(FOUR, segments, start, start + timedelta(hours=1))
    assert [r.as_json() for r in rows] == [
        {
            "start": "2026-07-08T19:00:00Z",
            "home": 30.371355,
            "ev": 27.4785,
            "home_offpeak": False,
            "ev_offpeak": False,
        },
        {
            "start": "2026-07-08T19:30:00Z",
            "home": 6.89997,
            "ev": None,
            "home_offpeak": True,
            "ev_offpeak": True,
        },
    ]
