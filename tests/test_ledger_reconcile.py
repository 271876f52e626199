"""Reconciliation of the published signals with the bill, and the day/month totals —
table-driven, DST days included (Europe/London local days of 46 and 50 half-hours)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from ioagent.ledger.parse import Bucket, SettledHalfHour
from ioagent.ledger.reconcile import (
    agreement_json,
    in_fixed_window,
    reconcile,
    signal_during,
)
from ioagent.ledger.summary import day_totals, last_settled_day, month_json, yesterday_json
from ioagent.ledger.windows import fetch_windows, half_hours_in, local_day_bounds

LONDON = ZoneInfo("Europe/London")
HALF = timedelta(minutes=30)
PRICES = {"home low": 5.5, "home standard": 30.0, "car low": 5.5, "car standard": 30.0}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(day: date, clock: time) -> datetime:
    return datetime.combine(day, clock, tzinfo=LONDON).astimezone(UTC)


def row(
    start: datetime,
    home: str,
    car: str = "none",
    home_kwh: float = 0.3,
    car_kwh: float = 0.0,
    standing: float = 1.0,
) -> SettledHalfHour:
    buckets = []
    for side, band, kwh in (("home", home, home_kwh), ("car", car, car_kwh)):
        for each in ("low", "standard"):
            used = kwh if band == each else 0.0
            name = f"{side} {each}"
            buckets.append(Bucket(name, name, used, used * PRICES[name], PRICES[name]))
    return SettledHalfHour(start, start + HALF, home, car, tuple(buckets), standing)  # type: ignore[arg-type]


# --- the signal held during a half-hour -------------------------------------------------------


T0 = utc("2026-11-20T19:30:00")


@pytest.mark.parametrize(
    ("transitions", "expected"),
    [
        ([], None),
        ([(T0 - HALF, True)], True),
        ([(T0 - HALF, False), (T0 + timedelta(seconds=2), True)], True),  # flip 2 s late
        ([(T0 - HALF, True), (T0 + timedelta(minutes=25), False)], True),
        ([(T0 - HALF, True), (T0 + timedelta(minutes=5), False)], False),
        ([(T0 + timedelta(minutes=20), True)], None),  # unpublished for most of it
        ([(T0 - HALF, True), (T0 + timedelta(minutes=15), False)], None),  # a tie
        ([(T0 + HALF, True)], None),  # published only after
    ],
)
def test_signal_held_for_most_of_the_half_hour(
    transitions: list[tuple[datetime, bool]], expected: bool | None
) -> None:
    assert signal_during(transitions, T0, T0 + HALF) is expected


# --- one half-hour, one side at a time --------------------------------------------------------

DAY = date(2026, 11, 20)
NIGHT = local(DAY, time(1, 0))
EVENING = local(DAY, time(19, 30))


@pytest.mark.parametrize(
    ("case", "billed", "home_signal", "car_signal", "agreed", "reasons"),
    [
        ("window, home low", row(NIGHT, "low"), True, None, True, []),
        ("daytime, home standard", row(EVENING, "standard"), False, None, True, []),
        (
            "smart slot within allowance",
            row(EVENING, "low", "low", car_kwh=3.5),
            True,
            True,
            True,
            [],
        ),
        (
            "allowance used: home lost the bonus",
            row(EVENING, "standard", "standard", car_kwh=3.5),
            True,
            True,
            False,
            [
                "signal offpeak, billed home standard: allowance",
                "signal offpeak, billed car standard: allowance or boost",
            ],
        ),
        (
            "planned slot, no charging (R6)",
            row(EVENING, "standard"),
            True,
            None,
            False,
            ["signal offpeak, billed home standard: no charging"],
        ),
        (
            "the car's cheap half-hour no longer makes the home cheap",
            row(EVENING, "standard", "low", car_kwh=3.5),
            True,
            True,
            False,
            ["signal offpeak, billed home standard: no home bonus"],
        ),
        (
            "Octopus no longer cheap in the window",
            row(NIGHT, "standard"),
            True,
            None,
            False,
            ["signal offpeak, billed home standard: window billed standard"],
        ),
        (
            "ioagent said peak in the window",
            row(NIGHT, "low"),
            False,
            None,
            False,
            ["signal peak, billed home low: window"],
        ),
        (
            "a smart charge ioagent did not see",
            row(EVENING, "low", "low", car_kwh=2.0),
            False,
            False,
            False,
            [
                "signal peak, billed home low: smart charge not in the plan",
                "signal peak, billed car low: charge billed low not in the plan",
            ],
        ),
        (
            "car over its allowance in the window",
            row(NIGHT, "low", "standard", car_kwh=3.5),
            True,
            True,
            False,
            ["signal offpeak, billed car standard: allowance or boost"],
        ),
    ],
)
def test_reconcile_one_half_hour(
    case: str,
    billed: SettledHalfHour,
    home_signal: bool,
    car_signal: bool | None,
    agreed: bool,
    reasons: list[str],
) -> None:
    home = [(billed.start - HALF, home_signal)]
    car = [] if car_signal is None else [(billed.start - HALF, car_signal)]
    result = reconcile([billed], home, car)
    assert result.compared == 1, case
    assert (result.agreed == 1) is agreed, case
    assert [d.reason for d in result.disagreements()] == reasons, case


@pytest.mark.parametrize("band", ["unknown", "split", "none"])
def test_bands_octopus_did_not_state_are_never_counted(band: str) -> None:
    billed = row(EVENING, band, band)
    result = reconcile([billed], [(EVENING - HALF, True)], [(EVENING - HALF, True)])
    assert (result.compared, result.agreed, result.disagreements()) == (0, 0, [])
    assert result.ratio is None


def test_a_half_hour_with_zero_energy_still_has_its_band_compared() -> None:
    billed = row(EVENING, "standard", home_kwh=0.0)
    result = reconcile([billed], [(EVENING - HALF, True)], [])
    assert result.compared == 1
    assert result.agreed == 0


def test_without_a_recorded_signal_nothing_is_compared() -> None:
    result = reconcile([row(EVENING, "standard")], [], [])
    assert result.compared == 0
    assert agreement_json(result, days=1)["not_compared"]["no_signal"] == 1


# --- whole local days, DST included -----------------------------------------------------------


def rule_rows(day: date) -> list[SettledHalfHour]:
    """Every half-hour of a local day billed by the fixed-window rule alone."""
    start, end = local_day_bounds(day, LONDON)
    rows = []
    cursor = start
    while cursor < end:
        rows.append(row(cursor, "low" if in_fixed_window(cursor) else "standard"))
        cursor += HALF
    return rows


def rule_signal(day: date) -> list[tuple[datetime, bool]]:
    """The home signal ioagent publishes under the same rule: flips at 05:30 and 23:30."""
    before = day - timedelta(days=1)
    return [
        (local(before, time(23, 30)), True),
        (local(day, time(5, 30)) + timedelta(seconds=1), False),
        (local(day, time(23, 30)), True),
    ]


@pytest.mark.parametrize(
    ("day", "half_hours"),
    [(date(2026, 3, 29), 46), (date(2026, 10, 25), 50), (date(2026, 11, 20), 48)],
)
def test_a_whole_local_day_agrees_across_dst(day: date, half_hours: int) -> None:
    rows = rule_rows(day)
    assert len(rows) == half_hours == half_hours_in(day, LONDON)
    result = reconcile(rows, rule_signal(day), [])
    assert (result.compared, result.agreed) == (half_hours, half_hours)
    payload = agreement_json(result, days=1)
    assert payload["ratio"] == 1.0
    assert payload["disagreements"] == []
    totals = day_totals(rows, day, LONDON)
    assert totals.complete
    assert totals.expected_half_hours == half_hours
    assert totals.standing_pence == pytest.approx(half_hours * 1.0)


def test_autumn_night_window_is_seven_hours_of_low() -> None:
    # 23:30 on the 24th to 05:30 on the 25th spans the clocks going back: 14 half-hours.
    rows = rule_rows(date(2026, 10, 24)) + rule_rows(date(2026, 10, 25))
    low = [
        r for r in rows if r.home_band == "low" and r.start >= local(date(2026, 10, 24), time(12))
    ]
    assert len(low) == 14 + 1  # the 14 of that night, plus 23:30 on the 25th


def test_agreement_payload_keeps_the_last_twenty_disagreements() -> None:
    start = local(DAY, time(8, 0))
    rows = [row(start + i * HALF, "standard") for i in range(25)]
    result = reconcile(rows, [(start - HALF, True)], [])
    payload = agreement_json(result, days=30)
    assert set(payload) >= {"days", "half_hours", "agreed", "ratio", "disagreements"}
    assert (payload["days"], payload["half_hours"], payload["agreed"]) == (30, 25, 0)
    assert payload["ratio"] == 0.0
    assert len(payload["disagreements"]) == 20
    assert payload["disagreements"][-1] == {
        "start": "2026-11-20T20:00:00Z",
        "topic": "offpeak",
        "signal": "offpeak",
        "billed": "home standard",
        "reason": "signal offpeak, billed home standard: no charging",
    }


# --- totals -----------------------------------------------------------------------------------


def test_yesterday_is_the_last_fully_settled_day_and_month_is_so_far() -> None:
    complete = rule_rows(date(2026, 11, 18))
    partial = rule_rows(date(2026, 11, 19))[:30]
    now = utc("2026-11-21T10:00:00")
    assert last_settled_day(complete + partial, now, LONDON) == date(2026, 11, 18)
    yesterday = yesterday_json(complete + partial, now, LONDON)
    assert yesterday is not None
    assert yesterday["day"] == "2026-11-18"
    assert yesterday["complete"] is True
    # 12 low half-hours x 0.3 kWh at 5.5 p, 36 standard at 30 p, 48 p standing
    assert yesterday["buckets"]["home low"] == {"kwh": 3.6, "gbp": round(12 * 0.3 * 5.5 / 100, 2)}
    assert yesterday["buckets"]["home standard"]["kwh"] == pytest.approx(10.8)
    assert yesterday["standing_charge_gbp"] == 0.48
    expected_total = (12 * 0.3 * 5.5 + 36 * 0.3 * 30.0 + 48) / 100
    assert yesterday["total_gbp"] == round(expected_total, 2)
    month = month_json(complete + partial, now, LONDON)
    assert month["month"] == "2026-11"
    assert month["half_hours"] == 78
    assert month["complete"] is False


def test_no_yesterday_before_a_whole_day_is_settled() -> None:
    assert yesterday_json(rule_rows(date(2026, 11, 19))[:47], utc("2026-11-21T10:00:00")) is None


def test_fetch_windows_are_at_most_twelve_half_hours() -> None:
    start = utc("2026-11-20T00:10:00")
    windows = fetch_windows(start, start + timedelta(hours=13))
    assert windows[0][0] == utc("2026-11-20T00:00:00")
    assert all(end - begin <= 12 * HALF for begin, end in windows)
    assert windows[-1][1] == start + timedelta(hours=13)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(windows))
    with pytest.raises(ValueError):
        fetch_windows(start, start + HALF, size=13)
