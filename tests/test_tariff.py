from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioagent.config import TariffSettings
from ioagent.kraken.types import AT_HOME, AWAY, BOOST, SMART, TEST, Dispatch
from ioagent.tariff.rules import (
    TariffRules,
    TariffState,
    Window,
    capped_smart_windows,
    evaluate,
    fixed_windows,
    offpeak_windows,
    smart_windows,
    transitions,
)

LONDON = ZoneInfo("Europe/London")
KATHMANDU = ZoneInfo("Asia/Kathmandu")  # UTC+05:45: local half-hours are UTC :15/:45
DEFAULT = TariffRules(LONDON, time(23, 30), time(5, 30))
CAPPED = TariffRules(LONDON, time(23, 30), time(5, 30), smart_cap=True)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def slot(start: str, end: str, type_: str = SMART, location: str | None = None) -> Dispatch:
    return Dispatch(start=utc(start), end=utc(end), type=type_, kwh=None, location=location)


def win(start: str, end: str) -> Window:
    return Window(utc(start), utc(end))


# Winter dates unless stated: Europe/London is then UTC, so expectations read as wall clock.
WINDOW_CASES = [
    pytest.param(
        DEFAULT,
        [],
        "2026-01-15 12:00",
        "2026-01-16 12:00",
        [win("2026-01-15 23:30", "2026-01-16 05:30")],
        id="normal-winter-night",
    ),
    pytest.param(
        DEFAULT,
        [],
        "2026-07-01 12:00",
        "2026-07-02 12:00",
        [win("2026-07-01 22:30", "2026-07-02 04:30")],
        id="summer-night-is-bst",
    ),
    pytest.param(
        DEFAULT,
        [],
        "2026-03-28 12:00",
        "2026-03-29 12:00",
        [win("2026-03-28 23:30", "2026-03-29 04:30")],
        id="dst-spring-forward-night-5h",
    ),
    pytest.param(
        DEFAULT,
        [],
        "2026-10-24 12:00",
        "2026-10-25 12:00",
        [win("2026-10-24 22:30", "2026-10-25 05:30")],
        id="dst-fall-back-night-7h",
    ),
    pytest.param(
        DEFAULT,
        [slot("2026-01-15 19:30", "2026-01-15 20:15")],
        "2026-01-15 12:00",
        "2026-01-16 12:00",
        [win("2026-01-15 19:30", "2026-01-15 20:30"), win("2026-01-15 23:30", "2026-01-16 05:30")],
        id="partial-slot-19:30-20:15-widened-to-20:30",
    ),
    pytest.param(
        DEFAULT,
        [slot("2026-01-15 19:30", "2026-01-15 20:00")],
        "2026-01-15 12:00",
        "2026-01-16 12:00",
        [win("2026-01-15 19:30", "2026-01-15 20:00"), win("2026-01-15 23:30", "2026-01-16 05:30")],
        id="aligned-slot-not-widened",
    ),
    pytest.param(
        DEFAULT,
        [slot("2026-01-15 13:37:11", "2026-01-15 13:38:27")],
        "2026-01-15 12:00",
        "2026-01-16 12:00",
        [win("2026-01-15 13:30", "2026-01-15 14:00"), win("2026-01-15 23:30", "2026-01-16 05:30")],
        id="one-minute-slot-whole-half-hour",
    ),
    pytest.param(
        DEFAULT,
        [slot("2026-01-15 22:45", "2026-01-15 23:45")],
        "2026-01-15 12:00",
        "2026-01-16 12:00",
        [win("2026-01-15 22:30", "2026-01-16 05:30")],
        id="slot-straddling-23:30-joins-fixed",
    ),
    pytest.param(
        DEFAULT,
        [slot("2026-01-16 05:00", "2026-01-16 06:10")],
        "2026-01-15 12:00",
        "2026-01-16 12:00",
        [win("2026-01-15 23:30", "2026-01-16 06:30")],
        id="slot-straddling-05:30-extends-fixed",
    ),
    pytest.param(
        DEFAULT,
        [slot("2026-01-15 14:00", "2026-01-15 15:00", BOOST)],
        "2026-01-15 12:00",
        "2026-01-16 12:00",
        [win("2026-01-15 23:30", "2026-01-16 05:30")],
        id="boost-never-offpeak",
    ),
    pytest.param(
        DEFAULT,
        [slot("2026-01-15 14:00", "2026-01-15 15:00", TEST)],
        "2026-01-15 12:00",
        "2026-01-16 12:00",
        [win("2026-01-15 23:30", "2026-01-16 05:30")],
        id="test-charge-never-offpeak",
    ),
    pytest.param(
        DEFAULT,
        [slot("2026-01-15 14:00", "2026-01-15 15:00", SMART, AWAY)],
        "2026-01-15 12:00",
        "2026-01-16 12:00",
        [win("2026-01-15 23:30", "2026-01-16 05:30")],
        id="away-never-offpeak",
    ),
    pytest.param(
        DEFAULT,
        [slot("2026-01-15 14:00", "2026-01-15 15:00", SMART, AT_HOME)],
        "2026-01-15 12:00",
        "2026-01-16 12:00",
        [win("2026-01-15 14:00", "2026-01-15 15:00"), win("2026-01-15 23:30", "2026-01-16 05:30")],
        id="at-home-offpeak",
    ),
    pytest.param(
        DEFAULT,
        [slot("2026-01-15 14:00", "2026-01-15 15:00", SMART, None)],
        "2026-01-15 12:00",
        "2026-01-16 12:00",
        [win("2026-01-15 14:00", "2026-01-15 15:00"), win("2026-01-15 23:30", "2026-01-16 05:30")],
        id="null-location-counts-as-home",
    ),
    pytest.param(
        TariffRules(LONDON, time(23, 30), time(5, 30), round_to_half_hour=False),
        [slot("2026-01-15 19:30", "2026-01-15 20:15")],
        "2026-01-15 12:00",
        "2026-01-16 12:00",
        [win("2026-01-15 19:30", "2026-01-15 20:15"), win("2026-01-15 23:30", "2026-01-16 05:30")],
        id="rounding-off-exact-times",
    ),
    pytest.param(
        TariffRules(LONDON, time(0, 30), time(4, 30)),
        [],
        "2026-01-15 12:00",
        "2026-01-16 12:00",
        [win("2026-01-16 00:30", "2026-01-16 04:30")],
        id="non-default-window-00:30-04:30",
    ),
    pytest.param(
        TariffRules(LONDON, time(12, 0), time(16, 0)),
        [],
        "2026-07-01 00:00",
        "2026-07-02 00:00",
        [win("2026-07-01 11:00", "2026-07-01 15:00")],
        id="daytime-window-12-16-bst",
    ),
    pytest.param(
        TariffRules(LONDON, time(5, 30), time(5, 30)),
        [],
        "2026-01-15 00:00",
        "2026-01-17 00:00",
        [],
        id="equal-start-end-means-no-fixed-window",
    ),
    pytest.param(
        TariffRules(KATHMANDU, time(23, 30), time(5, 30)),
        [slot("2026-01-15 10:05", "2026-01-15 10:20")],
        "2026-01-15 09:00",
        "2026-01-15 12:00",
        [win("2026-01-15 09:45", "2026-01-15 10:45")],
        id="quarter-hour-offset-zone-rounds-on-local-half-hours",
    ),
]


@pytest.mark.parametrize(("rules", "plan", "start", "end", "expected"), WINDOW_CASES)
def test_offpeak_windows(
    rules: TariffRules, plan: list[Dispatch], start: str, end: str, expected: list[Window]
) -> None:
    assert offpeak_windows(plan, rules, utc(start), utc(end)) == expected


def test_fixed_window_real_length_changes_across_dst() -> None:
    spring = fixed_windows(DEFAULT, utc("2026-03-28 12:00"), utc("2026-03-29 12:00"))
    autumn = fixed_windows(DEFAULT, utc("2026-10-24 12:00"), utc("2026-10-25 12:00"))
    assert [w.duration for w in spring] == [timedelta(hours=5)]
    assert [w.duration for w in autumn] == [timedelta(hours=7)]


def test_fixed_windows_are_unclipped_and_only_overlapping() -> None:
    assert fixed_windows(DEFAULT, utc("2026-01-16 01:00"), utc("2026-01-16 02:00")) == [
        win("2026-01-15 23:30", "2026-01-16 05:30")
    ]
    assert fixed_windows(DEFAULT, utc("2026-01-16 05:30"), utc("2026-01-16 23:30")) == []


def test_smart_windows_before_cap_and_types() -> None:
    plan = [
        slot("2026-01-15 14:10", "2026-01-15 14:20"),
        slot("2026-01-15 14:40", "2026-01-15 14:50", SMART, AT_HOME),
        slot("2026-01-15 16:00", "2026-01-15 17:00", BOOST),
        slot("2026-01-15 18:00", "2026-01-15 19:00", SMART, AWAY),
    ]
    assert smart_windows(plan, DEFAULT, utc("2026-01-15 00:00"), utc("2026-01-16 00:00")) == [
        win("2026-01-15 14:00", "2026-01-15 15:00")
    ]


def hourly_minute_slots(first_hour: int, count: int) -> list[Dispatch]:
    return [
        slot(f"2026-01-15 {first_hour + n:02d}:05", f"2026-01-15 {first_hour + n:02d}:06")
        for n in range(count)
    ]


CAP_CASES = [
    pytest.param(
        CAPPED,
        [
            slot("2026-01-15 08:00", "2026-01-15 12:00"),
            slot("2026-01-15 13:00", "2026-01-15 16:00"),
        ],
        [win("2026-01-15 08:00", "2026-01-15 12:00"), win("2026-01-15 13:00", "2026-01-15 15:00")],
        id="cap-on-7h-of-daytime-slots-only-first-6h",
    ),
    pytest.param(
        DEFAULT,
        [
            slot("2026-01-15 08:00", "2026-01-15 12:00"),
            slot("2026-01-15 13:00", "2026-01-15 16:00"),
        ],
        [win("2026-01-15 08:00", "2026-01-15 12:00"), win("2026-01-15 13:00", "2026-01-15 16:00")],
        id="cap-off-all-7h",
    ),
    pytest.param(
        CAPPED,
        hourly_minute_slots(8, 13),
        [win(f"2026-01-15 {h:02d}:00", f"2026-01-15 {h:02d}:30") for h in range(8, 20)],
        id="cap-counts-rounded-half-hours-not-minutes",
    ),
    pytest.param(
        CAPPED,
        [
            slot("2026-01-15 02:00", "2026-01-15 05:30"),
            slot("2026-01-15 06:00", "2026-01-15 12:30"),
        ],
        [win("2026-01-15 02:00", "2026-01-15 05:30"), win("2026-01-15 06:00", "2026-01-15 12:00")],
        id="cap-ignores-smart-time-inside-fixed-window",
    ),
    pytest.param(
        CAPPED,
        [
            slot("2026-01-15 10:00", "2026-01-15 16:00"),
            slot("2026-01-16 10:00", "2026-01-16 16:00"),
        ],
        [win("2026-01-15 10:00", "2026-01-15 16:00"), win("2026-01-16 10:00", "2026-01-16 16:00")],
        id="cap-resets-each-tariff-day",
    ),
    pytest.param(
        TariffRules(LONDON, time(0, 30), time(4, 30), smart_cap=True),
        [slot("2026-01-15 18:00", "2026-01-16 00:30")],
        [win("2026-01-15 18:00", "2026-01-16 00:00")],
        id="cap-day-runs-from-fixed-window-end-not-midnight",
    ),
    pytest.param(
        TariffRules(LONDON, time(23, 30), time(5, 30), smart_cap=True, smart_cap_hours=1.25),
        [slot("2026-01-15 10:00", "2026-01-15 12:00")],
        [win("2026-01-15 10:00", "2026-01-15 11:15")],
        id="fractional-cap-cuts-inside-a-half-hour",
    ),
]


@pytest.mark.parametrize(("rules", "plan", "expected"), CAP_CASES)
def test_smart_cap(rules: TariffRules, plan: list[Dispatch], expected: list[Window]) -> None:
    got = capped_smart_windows(plan, rules, utc("2026-01-14 00:00"), utc("2026-01-17 00:00"))
    assert got == expected


def test_cap_makes_beyond_cap_half_hours_peak() -> None:
    plan = [slot("2026-01-15 08:00", "2026-01-15 15:00")]
    assert evaluate(plan, CAPPED, utc("2026-01-15 13:59")).offpeak is True
    assert evaluate(plan, CAPPED, utc("2026-01-15 14:00")).offpeak is False
    assert evaluate(plan, CAPPED, utc("2026-01-15 14:00")).dispatching is True
    assert evaluate(plan, DEFAULT, utc("2026-01-15 14:00")).offpeak is True


def state(
    offpeak: bool,
    dispatching: bool,
    offpeak_end: str | None,
    next_offpeak_start: str | None,
    next_dispatch_start: str | None,
    next_dispatch_end: str | None,
    next_transition: str | None,
) -> TariffState:
    def parse(text: str | None) -> datetime | None:
        return None if text is None else utc(text)

    return TariffState(
        offpeak=offpeak,
        dispatching=dispatching,
        offpeak_end=parse(offpeak_end),
        next_offpeak_start=parse(next_offpeak_start),
        next_dispatch_start=parse(next_dispatch_start),
        next_dispatch_end=parse(next_dispatch_end),
        next_transition=parse(next_transition),
    )


PARTIAL = [slot("2026-01-15 19:30", "2026-01-15 20:15")]

STATE_CASES = [
    pytest.param(
        DEFAULT,
        [],
        "2026-01-15 14:00",
        state(False, False, "2026-01-16 05:30", "2026-01-15 23:30", None, None, "2026-01-15 23:30"),
        id="peak-afternoon-no-plan",
    ),
    pytest.param(
        DEFAULT,
        [],
        "2026-01-15 23:29:59",
        state(False, False, "2026-01-16 05:30", "2026-01-15 23:30", None, None, "2026-01-15 23:30"),
        id="one-second-before-23:30",
    ),
    pytest.param(
        DEFAULT,
        [],
        "2026-01-15 23:30",
        state(True, False, "2026-01-16 05:30", "2026-01-16 23:30", None, None, "2026-01-16 05:30"),
        id="exactly-23:30-is-offpeak",
    ),
    pytest.param(
        DEFAULT,
        [],
        "2026-01-16 05:30",
        state(False, False, "2026-01-17 05:30", "2026-01-16 23:30", None, None, "2026-01-16 23:30"),
        id="exactly-05:30-is-peak",
    ),
    pytest.param(
        DEFAULT,
        PARTIAL,
        "2026-01-15 14:00",
        state(
            False,
            False,
            "2026-01-15 20:30",
            "2026-01-15 19:30",
            "2026-01-15 19:30",
            "2026-01-15 20:15",
            "2026-01-15 19:30",
        ),
        id="smart-slot-upcoming",
    ),
    pytest.param(
        DEFAULT,
        PARTIAL,
        "2026-01-15 19:30",
        state(
            True,
            True,
            "2026-01-15 20:30",
            "2026-01-15 23:30",
            None,
            "2026-01-15 20:15",
            "2026-01-15 20:15",
        ),
        id="exactly-at-smart-slot-start",
    ),
    pytest.param(
        DEFAULT,
        PARTIAL,
        "2026-01-15 20:15",
        state(
            True,
            False,
            "2026-01-15 20:30",
            "2026-01-15 23:30",
            None,
            None,
            "2026-01-15 20:30",
        ),
        id="dispatch-ended-but-half-hour-still-offpeak",
    ),
    pytest.param(
        DEFAULT,
        PARTIAL,
        "2026-01-15 20:30",
        state(
            False,
            False,
            "2026-01-16 05:30",
            "2026-01-15 23:30",
            None,
            None,
            "2026-01-15 23:30",
        ),
        id="exactly-at-widened-end",
    ),
    pytest.param(
        DEFAULT,
        [slot("2026-01-15 14:00", "2026-01-15 15:00", BOOST)],
        "2026-01-15 14:30",
        state(
            False,
            True,
            "2026-01-16 05:30",
            "2026-01-15 23:30",
            None,
            "2026-01-15 15:00",
            "2026-01-15 15:00",
        ),
        id="boost-dispatching-at-peak",
    ),
    pytest.param(
        DEFAULT,
        [
            slot("2026-01-15 14:00", "2026-01-15 15:00"),
            slot("2026-01-15 16:00", "2026-01-15 17:00"),
        ],
        "2026-01-15 14:30",
        state(
            True,
            True,
            "2026-01-15 15:00",
            "2026-01-15 16:00",
            "2026-01-15 16:00",
            "2026-01-15 15:00",
            "2026-01-15 15:00",
        ),
        id="dispatching-with-another-slot-later",
    ),
    pytest.param(
        DEFAULT,
        [
            slot("2026-01-15 19:00", "2026-01-15 20:00"),
            slot("2026-01-15 20:00", "2026-01-15 21:00", BOOST),
        ],
        "2026-01-15 19:30",
        state(
            True,
            True,
            "2026-01-15 20:00",
            "2026-01-15 23:30",
            None,
            "2026-01-15 21:00",
            "2026-01-15 20:00",
        ),
        id="adjacent-smart-then-boost-one-dispatch-period",
    ),
    pytest.param(
        DEFAULT,
        [slot("2026-01-16 01:00", "2026-01-16 02:00")],
        "2026-01-16 01:30",
        state(
            True,
            True,
            "2026-01-16 05:30",
            "2026-01-16 23:30",
            None,
            "2026-01-16 02:00",
            "2026-01-16 02:00",
        ),
        id="dispatch-inside-fixed-window",
    ),
    pytest.param(
        DEFAULT,
        [],
        "2026-03-29 04:00",
        state(True, False, "2026-03-29 04:30", "2026-03-29 22:30", None, None, "2026-03-29 04:30"),
        id="spring-forward-night-ends-04:30-utc",
    ),
    pytest.param(
        DEFAULT,
        [],
        "2026-10-25 05:00",
        state(True, False, "2026-10-25 05:30", "2026-10-25 23:30", None, None, "2026-10-25 05:30"),
        id="fall-back-night-ends-05:30-utc",
    ),
    pytest.param(
        TariffRules(LONDON, time(0, 30), time(4, 30)),
        [],
        "2026-01-15 23:45",
        state(False, False, "2026-01-16 04:30", "2026-01-16 00:30", None, None, "2026-01-16 00:30"),
        id="non-default-window-peak-at-23:45",
    ),
    pytest.param(
        TariffRules(LONDON, time(5, 30), time(5, 30)),
        [],
        "2026-01-15 12:00",
        state(False, False, None, None, None, None, None),
        id="no-fixed-window-no-plan-nothing-ahead",
    ),
]


@pytest.mark.parametrize(("rules", "plan", "now", "expected"), STATE_CASES)
def test_evaluate(
    rules: TariffRules, plan: list[Dispatch], now: str, expected: TariffState
) -> None:
    assert evaluate(plan, rules, utc(now)) == expected


def test_transitions_lists_every_change_in_order() -> None:
    plan = [*PARTIAL, slot("2026-01-15 21:00", "2026-01-15 21:30", BOOST)]
    assert transitions(plan, DEFAULT, utc("2026-01-15 12:00"), timedelta(hours=24)) == [
        (utc("2026-01-15 19:30"), True, True),
        (utc("2026-01-15 20:15"), True, False),
        (utc("2026-01-15 20:30"), False, False),
        (utc("2026-01-15 21:00"), False, True),
        (utc("2026-01-15 21:30"), False, False),
        (utc("2026-01-15 23:30"), True, False),
        (utc("2026-01-16 05:30"), False, False),
    ]


def test_transitions_horizon_is_inclusive_and_now_exclusive() -> None:
    got = transitions([], DEFAULT, utc("2026-01-15 05:30"), timedelta(hours=18))
    assert got == [(utc("2026-01-15 23:30"), True, False)]


@pytest.mark.parametrize(
    ("mode", "device_capped", "expected"),
    [
        pytest.param("auto", "ENABLED", True, id="auto-enabled"),
        pytest.param("auto", "DISABLED", False, id="auto-disabled"),
        pytest.param("auto", "NOT_APPLICABLE", False, id="auto-not-applicable"),
        pytest.param("auto", None, False, id="auto-unknown"),
        pytest.param("on", "DISABLED", True, id="forced-on"),
        pytest.param("off", "ENABLED", False, id="forced-off"),
    ],
)
def test_rules_from_settings(mode: str, device_capped: str | None, expected: bool) -> None:
    settings_ = TariffSettings.model_validate(
        {
            "timezone": "Asia/Kathmandu",
            "offpeak_start": "00:30",
            "offpeak_end": "04:45",
            "round_to_half_hour": False,
            "smart_cap": mode,
            "smart_cap_hours": 5.5,
        }
    )
    rules = TariffRules.from_settings(settings_, device_capped)
    assert rules == TariffRules(
        zone=KATHMANDU,
        offpeak_start=time(0, 30),
        offpeak_end=time(4, 45),
        round_to_half_hour=False,
        smart_cap=expected,
        smart_cap_hours=5.5,
    )


# --- properties ------------------------------------------------------------------------------

YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2026, 12, 28, tzinfo=UTC)

instants = st.datetimes(
    min_value=YEAR_START.replace(tzinfo=None),
    max_value=YEAR_END.replace(tzinfo=None),
    timezones=st.just(UTC),
)

rules_strategy = st.builds(
    TariffRules,
    zone=st.sampled_from([LONDON, KATHMANDU, ZoneInfo("UTC"), ZoneInfo("America/New_York")]),
    offpeak_start=st.sampled_from([time(23, 30), time(0, 30), time(22, 0), time(12, 0)]),
    offpeak_end=st.sampled_from([time(5, 30), time(4, 30), time(7, 15), time(12, 0)]),
    round_to_half_hour=st.booleans(),
    smart_cap=st.booleans(),
    smart_cap_hours=st.sampled_from([6.0, 1.0, 2.75]),
)


@st.composite
def plan_and_instant(draw: st.DrawFn) -> tuple[list[Dispatch], datetime]:
    now = draw(instants)
    slots = []
    for _ in range(draw(st.integers(0, 8))):
        start = now + timedelta(seconds=draw(st.integers(-30 * 3600, 30 * 3600)))
        length = timedelta(seconds=draw(st.integers(1, 8 * 3600)))
        slots.append(
            Dispatch(
                start=start,
                end=start + length,
                type=draw(st.sampled_from([SMART, SMART, BOOST, TEST])),
                kwh=None,
                location=draw(st.sampled_from([None, AT_HOME, AWAY])),
            )
        )
    return slots, now


def state_key(plan: list[Dispatch], rules: TariffRules, instant: datetime) -> tuple[bool, bool]:
    result = evaluate(plan, rules, instant)
    return result.offpeak, result.dispatching


@settings(max_examples=150, deadline=None)
@given(case=plan_and_instant(), rules=rules_strategy)
def test_evaluate_agrees_with_window_membership(
    case: tuple[list[Dispatch], datetime], rules: TariffRules
) -> None:
    plan, now = case
    windows = offpeak_windows(
        plan, rules, now - timedelta(hours=1), now + timedelta(hours=1), now=now
    )
    assert evaluate(plan, rules, now).offpeak == any(now in w for w in windows)


@settings(max_examples=150, deadline=None)
@given(case=plan_and_instant(), rules=rules_strategy)
def test_windows_do_not_depend_on_the_range_asked(
    case: tuple[list[Dispatch], datetime], rules: TariffRules
) -> None:
    plan, now = case
    narrow = offpeak_windows(plan, rules, now, now + timedelta(minutes=1))
    wide = offpeak_windows(plan, rules, now - timedelta(days=3), now + timedelta(days=3))
    assert set(narrow) <= set(wide)
    assert all(w.start < now + timedelta(minutes=1) and w.end > now for w in narrow)


@settings(max_examples=150, deadline=None)
@given(case=plan_and_instant(), rules=rules_strategy)
def test_next_transition_is_the_first_change(
    case: tuple[list[Dispatch], datetime], rules: TariffRules
) -> None:
    plan, now = case
    current = evaluate(plan, rules, now)
    if current.next_transition is None:
        return
    before = state_key(plan, rules, now)
    assert current.next_transition > now
    midpoint = now + (current.next_transition - now) / 2
    assert state_key(plan, rules, midpoint) == before
    assert state_key(plan, rules, current.next_transition) != before
    first = transitions(plan, rules, now, current.next_transition - now)
    assert first[0][0] == current.next_transition


@settings(max_examples=150, deadline=None)
@given(case=plan_and_instant(), rules=rules_strategy)
def test_cap_only_ever_removes_offpeak_time(
    case: tuple[list[Dispatch], datetime], rules: TariffRules
) -> None:
    plan, now = case
    uncapped = TariffRules(
        rules.zone, rules.offpeak_start, rules.offpeak_end, rules.round_to_half_hour
    )
    start, end = now - timedelta(days=2), now + timedelta(days=2)
    capped_windows = capped_smart_windows(plan, rules, start, end)
    full_windows = smart_windows(plan, uncapped, start, end)
    for window in capped_windows:
        assert any(w.start <= window.start and window.end <= w.end for w in full_windows)


def tariff_days(rules: TariffRules, around: datetime) -> list[Window]:
    """Tariff days (fixed-window end to fixed-window end) within a few days of ``around``."""
    first = around.astimezone(rules.zone).date() - timedelta(days=4)
    anchors = [
        datetime.combine(first + timedelta(days=n), rules.offpeak_end, tzinfo=rules.zone)
        for n in range(9)
    ]
    return [Window(a.astimezone(UTC), b.astimezone(UTC)) for a, b in pairwise(anchors)]


def time_outside_fixed(windows: list[Window], day: Window, rules: TariffRules) -> timedelta:
    fixed = fixed_windows(rules, day.start - timedelta(days=1), day.end + timedelta(days=1))
    total = timedelta(0)
    for window in windows:
        start, end = max(window.start, day.start), min(window.end, day.end)
        if end <= start:
            continue
        total += end - start
        for hole in fixed:
            overlap = min(end, hole.end) - max(start, hole.start)
            total -= max(overlap, timedelta(0))
    return total


@settings(max_examples=150, deadline=None)
@given(case=plan_and_instant(), rules=rules_strategy)
def test_cap_budget_per_tariff_day_is_used_fully_but_never_exceeded(
    case: tuple[list[Dispatch], datetime], rules: TariffRules
) -> None:
    plan, now = case
    capped_rules = TariffRules(
        rules.zone,
        rules.offpeak_start,
        rules.offpeak_end,
        rules.round_to_half_hour,
        smart_cap=True,
        smart_cap_hours=rules.smart_cap_hours,
    )
    start, end = now - timedelta(days=3), now + timedelta(days=3)
    capped_windows = capped_smart_windows(plan, capped_rules, start, end)
    full_windows = smart_windows(plan, capped_rules, start, end)
    budget = timedelta(hours=rules.smart_cap_hours)
    for day in tariff_days(capped_rules, now):
        capped_time = time_outside_fixed(capped_windows, day, capped_rules)
        full_time = time_outside_fixed(full_windows, day, capped_rules)
        assert capped_time == min(full_time, budget)
