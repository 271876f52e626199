"""The tolerant parsers: odd but valid input parses correctly, junk never crashes."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from ioagent.kraken.types import (
    AT_HOME,
    AWAY,
    BOOST,
    DAYS_OF_WEEK,
    SMART,
    SOURCE_BUMP,
    UNKNOWN,
    CompletedDispatch,
    Device,
    Dispatch,
    Preferences,
    parse_completed,
    parse_completed_list,
    parse_device,
    parse_devices,
    parse_dispatch,
    parse_dispatches,
    parse_kwh,
    parse_preferences,
    parse_time_of_day,
)


def _unique(prefix: str) -> str:
    """An enum value no other test uses, so the warn-once memory does not hide its warning."""
    return f"{prefix}_{uuid.uuid4().hex[:8].upper()}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-02-07T19:30:00+00:00", datetime(2026, 2, 7, 19, 30, tzinfo=UTC)),
        ("2026-02-07T19:30:00Z", datetime(2026, 2, 7, 19, 30, tzinfo=UTC)),
        ("2026-07-07T20:30:00+01:00", datetime(2026, 7, 7, 19, 30, tzinfo=UTC)),
        ("2026-02-07T14:00:00-05:30", datetime(2026, 2, 7, 19, 30, tzinfo=UTC)),
        (
            "2026-02-07T13:37:11.123456+00:00",
            datetime(2026, 2, 7, 13, 37, 11, 123456, tzinfo=UTC),
        ),
    ],
)
def test_dispatch_start_accepts_any_offset_and_microseconds(text: str, expected: datetime) -> None:
    dispatch = parse_dispatch(
        {"start": text, "end": "2026-12-31T00:00:00+00:00", "type": "SMART", "energyAddedKwh": None}
    )
    assert dispatch.start == expected
    assert dispatch.start.tzinfo == UTC


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("-3.37", 3.37),
        ("3.37", 3.37),
        ("0", 0.0),
        (-1.5, 1.5),
        (7, 7.0),
        (None, None),
        ("not a number", None),
        ("NaN", None),
        ("Infinity", None),
        (True, None),
        ({"x": 1}, None),
    ],
)
def test_kwh_is_positive_float_or_none(raw: Any, expected: float | None) -> None:
    assert parse_kwh(raw) == expected


def test_planned_dispatch_fields() -> None:
    dispatch = parse_dispatch(
        {
            "start": "2026-02-07T13:37:11+00:00",
            "end": "2026-02-07T13:38:27+00:00",
            "type": "BOOST",
            "energyAddedKwh": "-0.42",
        },
        device_id="dev-1",
    )
    assert dispatch == Dispatch(
        start=datetime(2026, 2, 7, 13, 37, 11, tzinfo=UTC),
        end=datetime(2026, 2, 7, 13, 38, 27, tzinfo=UTC),
        type=BOOST,
        kwh=0.42,
        device_id="dev-1",
    )


def test_completed_dispatch_nulls_and_negative_delta() -> None:
    completed = parse_completed(
        {"start": "2026-02-07T01:00:00+00:00", "end": "2026-02-07T01:30:00+00:00", "delta": None}
    )
    assert completed.kwh is None
    assert completed.source is None and completed.location is None
    # Source null says nothing: not smart until ioagent classifies it (classify_completed).
    assert completed.type == UNKNOWN
    assert replace(completed, kind=SMART).type == SMART

    bump = parse_completed(
        {
            "start": "2026-02-07T01:00:00+00:00",
            "end": "2026-02-07T01:30:00+00:00",
            "delta": "-3.37",
            "meta": {"source": SOURCE_BUMP, "location": AWAY},
        }
    )
    assert bump.kwh == 3.37
    assert bump.type == BOOST
    assert bump.location == AWAY


def test_completed_list_is_in_start_order_and_skips_malformed_items() -> None:
    raw = [
        {"start": "2026-02-07T03:00:00+00:00", "end": "2026-02-07T03:30:00+00:00", "delta": "-1"},
        {"start": "garbage", "end": "2026-02-07T02:30:00+00:00", "delta": "-1"},
        "not an object",
        {"start": "2026-02-07T02:00:00+00:00", "end": "2026-02-07T01:00:00+00:00"},
        {
            "start": "2026-02-07T01:00:00+00:00",
            "end": "2026-02-07T01:30:00+00:00",
            "delta": "-2",
            "meta": {"location": AT_HOME},
        },
    ]
    with capture_logs() as logs:
        completed = parse_completed_list(raw)
    assert [c.kwh for c in completed] == [2.0, 1.0]
    skipped = [entry for entry in logs if entry["event"] == "kraken_item_skipped"]
    assert [entry["index"] for entry in skipped] == [1, 2, 3]


def test_planned_list_sorted_and_device_id_set() -> None:
    raw = [
        {"start": "2026-02-07T03:00:00Z", "end": "2026-02-07T03:30:00Z", "type": "SMART"},
        {"start": "2026-02-07T01:00:00Z", "end": "2026-02-07T01:15:00Z", "type": "SMART"},
    ]
    plan = parse_dispatches(raw, "ev")
    assert [d.start.hour for d in plan] == [1, 3]
    assert {d.device_id for d in plan} == {"ev"}


def test_naive_datetime_is_skipped_not_guessed() -> None:
    assert parse_dispatches([{"start": "2026-02-07T01:00:00", "end": "2026-02-07T02:00:00Z"}]) == []


def test_unknown_enum_kept_raw_and_warned_once() -> None:
    new_type = _unique("FLEX")
    raw = {"start": "2026-02-07T01:00:00Z", "end": "2026-02-07T02:00:00Z", "type": new_type}
    with capture_logs() as logs:
        first = parse_dispatch(raw)
        second = parse_dispatch(raw)
    assert first.type == second.type == new_type
    warnings = [e for e in logs if e["event"] == "kraken_unexpected_value"]
    assert len(warnings) == 1
    assert warnings[0]["value"] == new_type
    assert warnings[0]["log_level"] == "warning"


def test_unknown_device_state_kept_raw() -> None:
    state = _unique("HOVERING")
    with capture_logs() as logs:
        device = parse_device({"id": "d1", "status": {"currentState": state}})
    assert device.current_state == state
    assert any(e.get("value") == state for e in logs)


def test_null_type_counts_as_smart() -> None:
    raw = {"start": "2026-02-07T01:00:00Z", "end": "2026-02-07T02:00:00Z", "type": None}
    assert parse_dispatch(raw).type == SMART


PREFERENCES = {
    "mode": "CHARGE",
    "targetType": "RELATIVE_STATE_OF_CHARGE",
    "unit": "PERCENTAGE",
    "isChargingDurationCapped": "ENABLED",
    "schedules": [
        {"dayOfWeek": day, "time": "07:30:00", "min": None, "max": 80, "upperLimit": 100}
        for day in reversed(DAYS_OF_WEEK)
    ],
}


def test_device_with_preferences() -> None:
    device = parse_device(
        {
            "__typename": "SmartFlexVehicle",
            "id": "ev-1",
            "provider": "TESLA",
            "deviceType": "ELECTRIC_VEHICLES",
            "make": "Tesla",
            "model": "Model 3",
            "status": {
                "current": "LIVE",
                "currentState": "SMART_CONTROL_CAPABLE",
                "isSuspended": False,
            },
            "preferences": PREFERENCES,
        }
    )
    assert device.is_live
    assert device.is_suspended is False
    assert device.preferences is not None
    assert device.preferences.charging_duration_capped == "ENABLED"
    assert [s.day_of_week for s in device.preferences.schedules] == list(DAYS_OF_WEEK)
    monday = device.preferences.schedule_for("MONDAY")
    assert monday is not None
    assert monday.time == time(7, 30)
    assert monday.max == 80.0


# Every day differs; SATURDAY is missing and SUNDAY has no target.
PER_DAY = parse_preferences(
    {
        "mode": "CHARGE",
        "schedules": [
            {"dayOfWeek": "SUNDAY", "time": "09:00:00", "max": None},
            {"dayOfWeek": "WEDNESDAY", "time": "07:00:00", "max": 70},
            {"dayOfWeek": "MONDAY", "time": "06:00:00", "max": 60},
            {"dayOfWeek": "FRIDAY", "time": "08:00:00", "max": 80},
            {"dayOfWeek": "TUESDAY", "time": "06:30:00", "max": 65},
            {"dayOfWeek": "THURSDAY", "time": "07:30:00", "max": "75.5"},
        ],
    }
)
LONDON_SUMMER = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    ("day", "target", "ready_by"),
    [
        pytest.param("MONDAY", 60.0, time(6, 0), id="monday"),
        pytest.param("TUESDAY", 65.0, time(6, 30), id="tuesday"),
        pytest.param("WEDNESDAY", 70.0, time(7, 0), id="wednesday"),
        pytest.param("THURSDAY", 75.5, time(7, 30), id="thursday-decimal-string"),
        pytest.param("friday", 80.0, time(8, 0), id="lower-case-name"),
        pytest.param("SATURDAY", 60.0, time(6, 0), id="missing-day-falls-back-to-first"),
        pytest.param("SUNDAY", None, time(9, 0), id="no-target"),
        pytest.param(date(2026, 2, 11), 70.0, time(7, 0), id="date-a-wednesday"),
        pytest.param(
            datetime(2026, 2, 6, 0, 30, tzinfo=LONDON_SUMMER),
            80.0,
            time(8, 0),
            id="aware-datetime-uses-its-own-local-day",
        ),
    ],
)
def test_target_soc_and_ready_by_per_day(
    day: str | date, target: float | None, ready_by: time
) -> None:
    assert PER_DAY.target_soc_for(day) == target
    assert PER_DAY.ready_by_for(day) == ready_by


def test_no_schedules_no_target_or_ready_by() -> None:
    empty = Preferences(mode=None, target_type=None, unit=None, charging_duration_capped=None)
    assert empty.target_soc_for("MONDAY") is None
    assert empty.ready_by_for(date(2026, 2, 9)) is None


def test_device_tolerates_nulls_everywhere() -> None:
    device = parse_device({"id": "x", "status": None, "preferences": None})
    assert device == Device(
        id="x",
        provider=None,
        device_type=None,
        typename=None,
        make=None,
        model=None,
        status_current=None,
        current_state=None,
        is_suspended=None,
        preferences=None,
    )
    assert not device.is_live


def test_bad_preferences_do_not_lose_the_device() -> None:
    devices = parse_devices([{"id": "x", "preferences": "broken"}, {"no": "id"}])
    assert [d.id for d in devices] == ["x"]
    assert devices[0].preferences is None


def test_bad_schedule_items_are_skipped() -> None:
    preferences = parse_preferences(
        {
            "mode": "CHARGE",
            "schedules": [
                {"dayOfWeek": "MONDAY", "time": "7:30", "max": "80"},
                {"dayOfWeek": "FUNDAY", "time": "07:30", "max": 80},
                {"dayOfWeek": "TUESDAY", "time": "25:00", "max": 80},
                None,
            ],
        }
    )
    assert preferences == Preferences(
        mode="CHARGE",
        target_type=None,
        unit=None,
        charging_duration_capped=None,
        schedules=preferences.schedules,
    )
    assert [(s.day_of_week, s.time, s.max) for s in preferences.schedules] == [
        ("MONDAY", time(7, 30), 80.0)
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("07:30:00", time(7, 30)),
        ("07:30", time(7, 30)),
        ("4:00", time(4)),
        ("23:59:59", time(23, 59)),
    ],
)
def test_time_of_day(text: str, expected: time) -> None:
    assert parse_time_of_day(text) == expected


@pytest.mark.parametrize("text", ["24:00", "7", "", "07:60", "abc"])
def test_time_of_day_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time_of_day(text)


# --- never crashes -------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
fixed_offsets = st.integers(-14 * 60, 14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=fixed_offsets
)
datetime_texts = aware_datetimes.map(lambda d: d.isoformat()) | st.text(max_size=40)
decimal_texts = st.decimals(allow_nan=True, allow_infinity=True).map(str) | st.text(max_size=10)


def _field(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return values | json_values


planned_items = st.fixed_dictionaries(
    {
        "start": _field(datetime_texts),
        "end": _field(datetime_texts),
        "type": _field(st.sampled_from([SMART, BOOST, "TEST", "NEW_KIND"])),
        "energyAddedKwh": _field(decimal_texts),
    }
)
completed_items = st.fixed_dictionaries(
    {
        "start": _field(datetime_texts),
        "end": _field(datetime_texts),
        "delta": _field(decimal_texts),
        "meta": _field(
            st.fixed_dictionaries(
                {"source": _field(st.just(SOURCE_BUMP)), "location": _field(st.just(AWAY))}
            )
        ),
    }
)
schedule_items = st.fixed_dictionaries(
    {
        "dayOfWeek": _field(st.sampled_from(DAYS_OF_WEEK)),
        "time": _field(st.sampled_from(["07:30:00", "04:00", "11:00:00"])),
        "max": _field(st.integers(0, 100)),
        "min": json_values,
        "upperLimit": json_values,
    }
)
device_items = st.fixed_dictionaries(
    {
        "id": _field(st.uuids().map(str)),
        "status": _field(
            st.fixed_dictionaries(
                {
                    "current": _field(st.just("LIVE")),
                    "currentState": _field(st.just("BOOSTING")),
                    "isSuspended": json_values,
                }
            )
        ),
        "preferences": _field(
            st.fixed_dictionaries(
                {"mode": json_values, "schedules": _field(st.lists(schedule_items, max_size=8))}
            )
        ),
        "make": json_values,
    }
)


@settings(max_examples=100, deadline=None)
@given(st.lists(planned_items | json_values, max_size=6) | json_values)
def test_planned_list_never_crashes(raw: Any) -> None:
    with capture_logs():
        plan = parse_dispatches(raw, "dev")
    assert all(isinstance(d, Dispatch) and d.start <= d.end for d in plan)
    assert all(d.start.tzinfo == UTC and d.end.tzinfo == UTC for d in plan)
    assert all(d.kwh is None or d.kwh >= 0 for d in plan)
    assert plan == sorted(plan, key=lambda d: (d.start, d.end))


@settings(max_examples=100, deadline=None)
@given(st.lists(completed_items | json_values, max_size=6) | json_values)
def test_completed_list_never_crashes(raw: Any) -> None:
    with capture_logs():
        completed = parse_completed_list(raw)
    assert all(isinstance(c, CompletedDispatch) and c.start <= c.end for c in completed)
    assert all(c.kwh is None or c.kwh >= 0 for c in completed)


@settings(max_examples=100, deadline=None)
@given(st.lists(device_items | json_values, max_size=4) | json_values)
def test_device_list_never_crashes(raw: Any) -> None:
    with capture_logs():
        devices = parse_devices(raw)
    assert all(isinstance(d, Device) and d.id for d in devices)


@settings(max_examples=100, deadline=None)
@given(aware_datetimes, aware_datetimes, st.decimals(-1000, 1000, places=3))
def test_valid_dispatch_round_trips(start: datetime, end: datetime, kwh: Any) -> None:
    early, late = sorted([start, end])
    dispatch = parse_dispatch(
        {
            "start": early.isoformat(),
            "end": late.isoformat(),
            "type": SMART,
            "energyAddedKwh": str(kwh),
        }
    )
    assert dispatch.start == early
    assert dispatch.end == late
    assert dispatch.kwh == abs(float(kwh))
