from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioagent.victron.slots import (
    Interval,
    SlotPlan,
    SlotState,
    WindowLike,
    Write,
    desired_slots,
    disabled_day,
    gx_schedule,
    plan_writes,
    upcoming_windows,
)

LONDON = ZoneInfo("Europe/London")
OWNED = (3, 4)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@dataclass(frozen=True)
class TariffWindow:
    """Stands in for ioagent.tariff.rules.Window: any object with .start and .end."""

    start: datetime
    end: datetime


def disabled(day: int = -7) -> SlotState:
    return SlotState(day, 0, 0, 100, False)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        pytest.param(
            utc(2025, 1, 15, 23, 30), utc(2025, 1, 16, 5, 30), (3, 84600, 21600), id="winter-wed"
        ),
        pytest.param(
            utc(2025, 7, 1, 22, 30), utc(2025, 7, 2, 4, 30), (2, 84600, 21600), id="summer-tue"
        ),
        pytest.param(
            utc(2025, 3, 29, 23, 30), utc(2025, 3, 30, 0, 0), (6, 84600, 1800), id="saturday-is-6"
        ),
        pytest.param(
            utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 2, 30), (0, 1800, 10800), id="spring-sunday"
        ),
        pytest.param(
            utc(2025, 3, 30, 1, 30), utc(2025, 3, 30, 3, 0), (0, 9000, 5400), id="spring-after"
        ),
        pytest.param(
            utc(2025, 10, 25, 23, 30),
            utc(2025, 10, 26, 4, 30),
            (0, 1800, 14400),
            id="autumn-sunday",
        ),
        pytest.param(
            utc(2025, 10, 26, 1, 30),
            utc(2025, 10, 26, 3, 0),
            (0, 7200, 3600),
            id="autumn-start-in-repeated-hour-moves-later",
        ),
        pytest.param(
            utc(2025, 10, 25, 23, 0),
            utc(2025, 10, 26, 0, 30),
            (0, 0, 3600),
            id="autumn-end-in-repeated-hour-moves-earlier",
        ),
        pytest.param(
            utc(2025, 10, 26, 0, 15), utc(2025, 10, 26, 1, 45), None, id="inside-repeated-hour"
        ),
    ],
)
def test_gx_schedule_uses_local_wall_clock(
    start: datetime, end: datetime, expected: tuple[int, int, int] | None
) -> None:
    assert gx_schedule(start, end, LONDON) == expected


@pytest.mark.parametrize(
    ("windows", "expected"),
    [
        pytest.param([], [], id="none"),
        pytest.param(
            [(utc(2025, 1, 1, 2), utc(2025, 1, 1, 3)), (utc(2025, 1, 1, 1), utc(2025, 1, 1, 2))],
            [Interval(utc(2025, 1, 1, 1), utc(2025, 1, 1, 3))],
            id="adjacent-merged-and-sorted",
        ),
        pytest.param(
            [(utc(2025, 1, 1, 1), utc(2025, 1, 1, 4)), (utc(2025, 1, 1, 2), utc(2025, 1, 1, 3))],
            [Interval(utc(2025, 1, 1, 1), utc(2025, 1, 1, 4))],
            id="contained-merged",
        ),
        pytest.param(
            [(utc(2024, 12, 31, 20), utc(2024, 12, 31, 23, 59))],
            [],
            id="ended-dropped",
        ),
        pytest.param(
            [(utc(2025, 1, 2, 0, 0), utc(2025, 1, 2, 2))],
            [],
            id="starts-24h-later-dropped",
        ),
        pytest.param(
            [(utc(2025, 1, 1, 23, 59), utc(2025, 1, 2, 5))],
            [Interval(utc(2025, 1, 1, 23, 59), utc(2025, 1, 2, 5))],
            id="starts-within-24h-kept-whole",
        ),
        pytest.param(
            [TariffWindow(utc(2025, 1, 1, 1), utc(2025, 1, 1, 2))],
            [Interval(utc(2025, 1, 1, 1), utc(2025, 1, 1, 2))],
            id="window-objects",
        ),
        pytest.param(
            [
                (
                    datetime(2025, 1, 1, 3, tzinfo=timezone(timedelta(hours=2))),
                    datetime(2025, 1, 1, 4, tzinfo=timezone(timedelta(hours=2))),
                )
            ],
            [Interval(utc(2025, 1, 1, 1), utc(2025, 1, 1, 2))],
            id="other-offsets-converted",
        ),
    ],
)
def test_upcoming_windows(windows: list[WindowLike], expected: list[Interval]) -> None:
    assert upcoming_windows(windows, utc(2025, 1, 1, 0, 0)) == expected


@pytest.mark.parametrize(
    ("current", "expected"), [(None, -7), (-3, -3), (0, -10), (4, -4), (7, -7)]
)
def test_disabled_day_keeps_the_weekday(current: int | None, expected: int) -> None:
    assert disabled_day(current) == expected


def plan(
    windows: list[tuple[datetime, datetime]],
    now: datetime,
    current: dict[int, SlotState] | None = None,
    *,
    soc: int = 100,
    allow_discharge: bool = False,
) -> dict[int, SlotState]:
    plans = desired_slots(
        windows,
        now=now,
        zone=LONDON,
        owned=OWNED,
        soc=soc,
        allow_discharge=allow_discharge,
        current=current or {3: disabled(), 4: disabled()},
    )
    return {slot: p.state for slot, p in plans.items()}


WED_NIGHT = (utc(2025, 1, 15, 23, 30), utc(2025, 1, 16, 5, 30))
THU_SMART = (utc(2025, 1, 16, 13, 0), utc(2025, 1, 16, 14, 30))


@pytest.mark.parametrize(
    ("windows", "now", "current", "expected"),
    [
        pytest.param(
            [],
            utc(2025, 1, 15, 12),
            None,
            {3: disabled(), 4: disabled()},
            id="nothing-planned",
        ),
        pytest.param(
            [WED_NIGHT],
            utc(2025, 1, 15, 12),
            None,
            {3: SlotState(3, 84600, 21600, 100, False), 4: disabled()},
            id="one-window-lowest-slot",
        ),
        pytest.param(
            [
                (utc(2025, 1, 15, 23, 30), utc(2025, 1, 16, 1)),
                (utc(2025, 1, 16, 1), utc(2025, 1, 16, 3)),
                (utc(2025, 1, 16, 2), utc(2025, 1, 16, 5, 30)),
            ],
            utc(2025, 1, 15, 12),
            None,
            {3: SlotState(3, 84600, 21600, 100, False), 4: disabled()},
            id="merged-into-one-slot",
        ),
        pytest.param(
            [THU_SMART, WED_NIGHT, (utc(2025, 1, 16, 15), utc(2025, 1, 16, 15, 30))],
            utc(2025, 1, 15, 16),
            None,
            {3: SlotState(3, 84600, 21600, 100, False), 4: SlotState(4, 46800, 5400, 100, False)},
            id="earliest-two-fit",
        ),
        pytest.param(
            [WED_NIGHT],
            utc(2025, 1, 16, 5, 30),
            {3: SlotState(3, 84600, 21600, 100, False), 4: disabled()},
            {3: SlotState(-3, 84600, 21600, 100, False), 4: disabled()},
            id="ended-window-disabled",
        ),
        pytest.param(
            [WED_NIGHT],
            utc(2025, 1, 16, 1, 10, 42),
            None,
            {3: SlotState(4, 4200, 15600, 100, False), 4: disabled()},
            id="running-window-clipped-to-the-minute",
        ),
        pytest.param(
            [WED_NIGHT],
            utc(2025, 1, 16, 3, 0),
            {3: SlotState(4, 4200, 15600, 100, False), 4: disabled()},
            {3: SlotState(4, 4200, 15600, 100, False), 4: disabled()},
            id="running-window-not-moved-every-minute",
        ),
        pytest.param(
            [WED_NIGHT],
            utc(2025, 1, 16, 3, 0),
            {3: SlotState(4, 4200, 14000, 100, False), 4: disabled()},
            {3: SlotState(4, 10800, 9000, 100, False), 4: disabled()},
            id="running-window-with-wrong-end-rewritten",
        ),
        pytest.param(
            [WED_NIGHT, THU_SMART],
            utc(2025, 1, 16, 6),
            {
                3: SlotState(3, 84600, 21600, 100, False),
                4: SlotState(4, 46800, 5400, 100, False),
            },
            {
                3: SlotState(-3, 84600, 21600, 100, False),
                4: SlotState(4, 46800, 5400, 100, False),
            },
            id="windows-stay-in-their-slots",
        ),
        pytest.param(
            [WED_NIGHT],
            utc(2025, 1, 15, 12),
            {3: disabled(), 4: SlotState(3, 84600, 21600, 100, False)},
            {3: disabled(), 4: SlotState(3, 84600, 21600, 100, False)},
            id="window-found-in-higher-slot-stays",
        ),
        pytest.param(
            [(utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 2, 30))],
            utc(2025, 3, 29, 20),
            None,
            {3: SlotState(0, 1800, 10800, 100, False), 4: disabled()},
            id="spring-change",
        ),
        pytest.param(
            [(utc(2025, 10, 25, 23, 30), utc(2025, 10, 26, 4, 30))],
            utc(2025, 10, 25, 20),
            None,
            {3: SlotState(0, 1800, 14400, 100, False), 4: disabled()},
            id="autumn-change",
        ),
    ],
)
def test_desired_slots(
    windows: list[tuple[datetime, datetime]],
    now: datetime,
    current: dict[int, SlotState] | None,
    expected: dict[int, SlotState],
) -> None:
    assert plan(windows, now, current) == expected


def test_desired_slots_carry_soc_discharge_and_window() -> None:
    plans = desired_slots(
        [WED_NIGHT],
        now=utc(2025, 1, 15, 12),
        zone=LONDON,
        owned=[4],
        soc=80,
        allow_discharge=True,
        current={},
    )
    assert plans[4].state == SlotState(3, 84600, 21600, 80, True)
    assert plans[4].window == Interval(*WED_NIGHT)


def test_unknown_slot_is_disabled_with_default_day() -> None:
    plans = desired_slots(
        [], now=utc(2025, 1, 15), zone=LONDON, owned=[2], soc=90, allow_discharge=False, current={}
    )
    assert plans[2].state == SlotState(-7, 0, 0, 90, False)
    assert plans[2].window is None


ENABLED = SlotState(3, 84600, 21600, 100, False)


@pytest.mark.parametrize(
    ("current", "desired", "expected"),
    [
        pytest.param({3: ENABLED}, {3: ENABLED}, [], id="unchanged"),
        pytest.param({3: disabled(-4)}, {3: disabled(-4)}, [], id="disabled-unchanged"),
        pytest.param(
            {3: disabled(-4)}, {3: disabled(-7)}, [], id="any-negative-day-is-already-disabled"
        ),
        pytest.param(
            {3: ENABLED},
            {3: SlotState(3, 84600, 21600, 80, False)},
            [Write(3, "Soc", 80)],
            id="only-soc",
        ),
        pytest.param(
            {3: disabled()},
            {3: ENABLED},
            [Write(3, "Start", 84600), Write(3, "Duration", 21600), Write(3, "Day", 3)],
            id="enable-day-last",
        ),
        pytest.param(
            {3: ENABLED},
            {3: SlotState(-3, 84600, 21600, 100, False)},
            [Write(3, "Day", -3)],
            id="disable-day-only",
        ),
        pytest.param(
            {3: {"Day": 3, "Start": 84600}},
            {3: ENABLED},
            [
                Write(3, "Duration", 21600),
                Write(3, "Soc", 100),
                Write(3, "AllowDischarge", 0),
            ],
            id="partial-current-writes-unknown-fields",
        ),
        pytest.param(
            {},
            {4: SlotState(-7, 0, 0, 100, False)},
            [Write(4, "Day", -7)],
            id="unknown-slot-disabled",
        ),
        pytest.param(
            {0: disabled(), 1: ENABLED, 3: disabled()},
            {3: SlotState(3, 84600, 21600, 100, True)},
            [
                Write(3, "Start", 84600),
                Write(3, "Duration", 21600),
                Write(3, "AllowDischarge", 1),
                Write(3, "Day", 3),
            ],
            id="other-slots-never-written",
        ),
    ],
)
def test_plan_writes(
    current: dict[int, SlotState | dict[str, int | None]],
    desired: dict[int, SlotState],
    expected: list[Write],
) -> None:
    assert plan_writes(current, desired) == expected


instants = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)
window_lists = st.lists(
    st.tuples(instants, st.integers(min_value=1, max_value=12 * 60)).map(
        lambda pair: (pair[0], pair[0] + timedelta(minutes=pair[1]))
    ),
    max_size=6,
)


@given(windows=window_lists, now=instants, owned=st.sets(st.integers(0, 4), min_size=1))
def test_applying_the_plan_converges(
    windows: list[tuple[datetime, datetime]], now: datetime, owned: set[int]
) -> None:
    owned_slots = sorted(owned)

    def desired(current: dict[int, dict[str, int | None]]) -> dict[int, SlotPlan]:
        return desired_slots(
            windows,
            now=now,
            zone=LONDON,
            owned=owned_slots,
            soc=100,
            allow_discharge=False,
            current=current,
        )

    first = desired({})
    writes = plan_writes({}, first)
    assert {w.slot for w in writes} <= owned
    applied: dict[int, dict[str, int | None]] = {}
    for write in writes:
        applied.setdefault(write.slot, {})[write.field] = write.value
    # Fields a disabled slot never needs stay unknown, as on a GX that was never read.
    second = desired(applied)
    assert plan_writes(applied, second) == []
    for slot_plan in second.values():
        if slot_plan.window is not None:
            assert slot_plan.state.enabled
            assert slot_plan.state.duration > 0
