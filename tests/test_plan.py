from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioagent.kraken.types import (
    AT_HOME,
    AWAY,
    BOOST,
    SMART,
    TEST,
    UNKNOWN,
    CompletedDispatch,
    Dispatch,
)
from ioagent.tariff.plan import (
    PlanEvent,
    apply_events,
    carry_started,
    classify_completed,
    diff,
    drop_finished,
    event_json,
    located,
    normalise,
    slot_json,
    whole_second,
)

PLUS_ONE = timezone(timedelta(hours=1))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def slot(
    start: str,
    end: str,
    kwh: float | None = None,
    type_: str = SMART,
    device: str | None = "dev-1",
    location: str | None = None,
) -> Dispatch:
    return Dispatch(
        start=utc(start), end=utc(end), type=type_, kwh=kwh, location=location, device_id=device
    )


NORMALISE_CASES = [
    pytest.param([], (), id="empty"),
    pytest.param(
        [
            Dispatch(
                start=datetime(2026, 2, 7, 20, 30, 0, 123456, tzinfo=PLUS_ONE),
                end=datetime(2026, 2, 7, 20, 59, 59, 999999, tzinfo=PLUS_ONE),
                type=SMART,
                kwh=1.5,
                device_id="dev-1",
            )
        ],
        (slot("2026-02-07 19:30", "2026-02-07 20:00", 1.5),),
        id="offset-to-utc-and-microseconds-rounded",
    ),
    pytest.param(
        [
            slot("2026-02-07 21:00", "2026-02-07 22:00"),
            slot("2026-02-07 19:00", "2026-02-07 20:00"),
        ],
        (
            slot("2026-02-07 19:00", "2026-02-07 20:00"),
            slot("2026-02-07 21:00", "2026-02-07 22:00"),
        ),
        id="sorted-by-start",
    ),
    pytest.param(
        [
            slot("2026-02-07 19:00", "2026-02-07 20:00", device="b"),
            slot("2026-02-07 19:00", "2026-02-07 20:00", device="a", type_=BOOST),
            slot("2026-02-07 19:00", "2026-02-07 20:00", device="a"),
        ],
        (
            slot("2026-02-07 19:00", "2026-02-07 20:00", device="a", type_=BOOST),
            slot("2026-02-07 19:00", "2026-02-07 20:00", device="a"),
            slot("2026-02-07 19:00", "2026-02-07 20:00", device="b"),
        ),
        id="same-start-sorted-by-device-then-type-and-not-merged",
    ),
    pytest.param(
        [
            slot("2026-02-07 19:00", "2026-02-07 20:00", 1.0),
            slot("2026-02-07 19:30", "2026-02-07 21:00", 2.0),
        ],
        (slot("2026-02-07 19:00", "2026-02-07 21:00", 3.0),),
        id="overlapping-merged-kwh-summed",
    ),
    pytest.param(
        [
            slot("2026-02-07 19:00", "2026-02-07 20:00", 1.0),
            slot("2026-02-07 20:00", "2026-02-07 20:30"),
        ],
        (slot("2026-02-07 19:00", "2026-02-07 20:30", 1.0),),
        id="adjacent-merged-kwh-ignores-none",
    ),
    pytest.param(
        [
            slot("2026-02-07 19:00", "2026-02-07 20:00"),
            slot("2026-02-07 20:00", "2026-02-07 20:30"),
        ],
        (slot("2026-02-07 19:00", "2026-02-07 20:30"),),
        id="merged-kwh-none-when-all-none",
    ),
    pytest.param(
        [
            slot("2026-02-07 19:00", "2026-02-07 22:00"),
            slot("2026-02-07 19:30", "2026-02-07 20:00"),
        ],
        (slot("2026-02-07 19:00", "2026-02-07 22:00"),),
        id="contained-slot-absorbed",
    ),
    pytest.param(
        [
            slot("2026-02-07 19:00", "2026-02-07 20:00"),
            slot("2026-02-07 20:00:01", "2026-02-07 21:00"),
        ],
        (
            slot("2026-02-07 19:00", "2026-02-07 20:00"),
            slot("2026-02-07 20:00:01", "2026-02-07 21:00"),
        ),
        id="one-second-gap-not-merged",
    ),
    pytest.param(
        [
            slot("2026-02-07 19:00", "2026-02-07 20:00", location=AT_HOME),
            slot("2026-02-07 19:30", "2026-02-07 21:00", location=AWAY),
        ],
        (
            slot("2026-02-07 19:00", "2026-02-07 20:00", location=AT_HOME),
            slot("2026-02-07 19:30", "2026-02-07 21:00", location=AWAY),
        ),
        id="different-locations-not-merged",
    ),
    pytest.param(
        [
            slot("2026-02-07 19:00", "2026-02-07 19:00"),
            slot("2026-02-07 19:00", "2026-02-07 18:00"),
            slot("2026-02-07 19:00:00.2", "2026-02-07 19:00:00.4"),
            slot("2026-02-07 19:00:00.6", "2026-02-07 19:00:01.4"),
        ],
        (),
        id="zero-negative-and-sub-second-slots-dropped",
    ),
]


@pytest.mark.parametrize(("plan", "expected"), NORMALISE_CASES)
def test_normalise(plan: list[Dispatch], expected: tuple[Dispatch, ...]) -> None:
    assert normalise(plan) == expected
    assert normalise(normalise(plan)) == expected


WHOLE_SECOND_CASES = [
    pytest.param("2026-02-07 19:29:59.999500", "2026-02-07 19:30:00", id="just-before-rounds-up"),
    pytest.param("2026-02-07 19:30:00.000100", "2026-02-07 19:30:00", id="just-after-rounds-down"),
    pytest.param("2026-02-07 19:30:00.499999", "2026-02-07 19:30:00", id="under-half-down"),
    pytest.param("2026-02-07 19:30:00.500000", "2026-02-07 19:30:01", id="half-up-to-odd"),
    pytest.param("2026-02-07 19:30:01.500000", "2026-02-07 19:30:02", id="half-up-to-even"),
    pytest.param("2026-02-07 19:30:02.500000", "2026-02-07 19:30:03", id="half-up-not-to-even"),
    pytest.param("2026-02-07 19:30:00", "2026-02-07 19:30:00", id="whole-unchanged"),
    pytest.param("2026-12-31 23:59:59.750000", "2027-01-01 00:00:00", id="carries-into-new-year"),
    pytest.param("9999-12-31 23:59:59.999999", "9999-12-31 23:59:59", id="no-room-to-round-up"),
]


@pytest.mark.parametrize(("given", "expected"), WHOLE_SECOND_CASES)
def test_whole_second(given: str, expected: str) -> None:
    assert whole_second(utc(given)) == utc(expected)


def test_whole_second_converts_to_utc_first() -> None:
    local = datetime(2026, 2, 7, 20, 29, 59, 999500, tzinfo=PLUS_ONE)
    assert whole_second(local) == utc("2026-02-07 19:30:00")
    assert whole_second(local).tzinfo == UTC


A = slot("2026-02-07 19:00", "2026-02-07 20:00", 2.0)
B = slot("2026-02-07 22:00", "2026-02-07 23:00", 2.0)

DIFF_CASES = [
    pytest.param([A], [A], [], id="identical"),
    pytest.param(
        [A],
        [
            Dispatch(
                start=datetime(2026, 2, 7, 20, 0, 0, 400000, tzinfo=PLUS_ONE),
                end=datetime(2026, 2, 7, 21, 0, tzinfo=PLUS_ONE),
                type=SMART,
                kwh=2.0,
                device_id="dev-1",
            )
        ],
        [],
        id="reserialised-with-offset-and-microseconds",
    ),
    pytest.param(
        [slot("2026-02-07 19:29:59.9995", "2026-02-07 20:15:00.0004", 2.0)],
        [slot("2026-02-07 19:30:00.0001", "2026-02-07 20:14:59.9998", 2.0)],
        [],
        id="sub-second-noise-either-side-of-a-second",
    ),
    pytest.param([A, B], [B, A], [], id="reordered"),
    pytest.param([A], [A, B], [PlanEvent("slot_added", B, None)], id="added"),
    pytest.param([A, B], [B], [PlanEvent("slot_removed", A, None)], id="removed"),
    pytest.param(
        [A],
        [slot("2026-02-07 19:00", "2026-02-07 20:30", 2.0)],
        [PlanEvent("slot_changed", slot("2026-02-07 19:00", "2026-02-07 20:30", 2.0), A)],
        id="extended",
    ),
    pytest.param(
        [A],
        [slot("2026-02-07 19:00", "2026-02-07 20:00", 3.5)],
        [PlanEvent("slot_changed", slot("2026-02-07 19:00", "2026-02-07 20:00", 3.5), A)],
        id="kwh-changed",
    ),
    pytest.param(
        [slot("2026-02-07 19:00", "2026-02-07 20:00", location=AT_HOME)],
        [slot("2026-02-07 19:00", "2026-02-07 20:00", location=AWAY)],
        [
            PlanEvent(
                "slot_changed",
                slot("2026-02-07 19:00", "2026-02-07 20:00", location=AWAY),
                slot("2026-02-07 19:00", "2026-02-07 20:00", location=AT_HOME),
            )
        ],
        id="relabelled-away",
    ),
    pytest.param(
        [A],
        [slot("2026-02-07 20:00", "2026-02-07 21:00", 2.0)],
        [
            PlanEvent("slot_removed", A, None),
            PlanEvent("slot_added", slot("2026-02-07 20:00", "2026-02-07 21:00", 2.0), None),
        ],
        id="moved-without-overlap-is-remove-and-add",
    ),
    pytest.param(
        [slot("2026-02-07 19:00", "2026-02-07 22:00")],
        [
            slot("2026-02-07 19:00", "2026-02-07 20:00"),
            slot("2026-02-07 21:00", "2026-02-07 22:00"),
        ],
        [
            PlanEvent(
                "slot_changed",
                slot("2026-02-07 19:00", "2026-02-07 20:00"),
                slot("2026-02-07 19:00", "2026-02-07 22:00"),
            ),
            PlanEvent("slot_added", slot("2026-02-07 21:00", "2026-02-07 22:00"), None),
        ],
        id="split-earlier-part-changed-later-part-added",
    ),
    pytest.param(
        [
            slot("2026-02-07 19:00", "2026-02-07 20:00"),
            slot("2026-02-07 21:00", "2026-02-07 22:00"),
        ],
        [slot("2026-02-07 19:00", "2026-02-07 22:00")],
        [
            PlanEvent(
                "slot_changed",
                slot("2026-02-07 19:00", "2026-02-07 22:00"),
                slot("2026-02-07 19:00", "2026-02-07 20:00"),
            ),
            PlanEvent("slot_removed", slot("2026-02-07 21:00", "2026-02-07 22:00"), None),
        ],
        id="joined-earlier-old-changed-later-old-removed",
    ),
    pytest.param(
        [A],
        [slot("2026-02-07 19:00", "2026-02-07 20:00", 2.0, device="dev-2")],
        [
            PlanEvent("slot_removed", A, None),
            PlanEvent(
                "slot_added",
                slot("2026-02-07 19:00", "2026-02-07 20:00", 2.0, device="dev-2"),
                None,
            ),
        ],
        id="other-device-never-matches",
    ),
    pytest.param(
        [A],
        [slot("2026-02-07 19:00", "2026-02-07 20:00", 2.0, type_=BOOST)],
        [
            PlanEvent(
                "slot_added", slot("2026-02-07 19:00", "2026-02-07 20:00", 2.0, type_=BOOST), None
            ),
            PlanEvent("slot_removed", A, None),
        ],
        id="other-type-never-matches",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), DIFF_CASES)
def test_diff(old: list[Dispatch], new: list[Dispatch], expected: list[PlanEvent]) -> None:
    events = diff(old, new)
    assert events == expected
    assert apply_events(old, events) == normalise(new)


def test_slot_json_shape() -> None:
    d = Dispatch(
        start=datetime(2026, 2, 7, 19, 30, 0, 250000, tzinfo=UTC),
        end=datetime(2026, 2, 7, 21, 15, tzinfo=PLUS_ONE),
        type=SMART,
        kwh=-3.3700000000000001,
        location=AT_HOME,
        device_id="dev-1",
    )
    assert slot_json(d) == {
        "start": "2026-02-07T19:30:00Z",
        "end": "2026-02-07T20:15:00Z",
        "kwh": 3.37,
        "type": "SMART",
        "location": "AT_HOME",
        "device_id": "dev-1",
    }


def test_slot_json_nulls() -> None:
    d = slot("2026-02-07 19:30", "2026-02-07 20:00", None, type_=TEST, device=None)
    assert slot_json(d) == {
        "start": "2026-02-07T19:30:00Z",
        "end": "2026-02-07T20:00:00Z",
        "kwh": None,
        "type": "TEST",
        "location": None,
        "device_id": None,
    }


def test_event_json() -> None:
    new = slot("2026-02-07 19:00", "2026-02-07 20:30", 2.5)
    at = datetime(2026, 2, 7, 18, 0, 5, 700000, tzinfo=UTC)
    assert event_json(PlanEvent("slot_changed", new, A), at) == {
        "event": "slot_changed",
        "slot": slot_json(new),
        "previous": {
            "start": "2026-02-07T19:00:00Z",
            "end": "2026-02-07T20:00:00Z",
            "kwh": 2.0,
            "type": "SMART",
            "location": None,
            "device_id": "dev-1",
        },
        "at": "2026-02-07T18:00:05Z",
    }
    assert event_json(PlanEvent("slot_added", new, None), at)["previous"] is None


RUNNING = slot("2026-02-07 19:00", "2026-02-07 21:00", 4.0)
FUTURE = slot("2026-02-07 22:00", "2026-02-07 23:00", 2.0)

CARRY_CASES = [
    pytest.param(
        [RUNNING, FUTURE],
        [FUTURE],
        "2026-02-07 20:00",
        (RUNNING, FUTURE),
        id="running-slot-vanished-is-kept",
    ),
    pytest.param(
        [replace(RUNNING, type=BOOST), FUTURE],
        [FUTURE],
        "2026-02-07 20:00",
        (FUTURE,),
        id="running-boost-vanished-was-cancelled",
    ),
    pytest.param(
        [RUNNING],
        [],
        "2026-02-07 21:10",
        (RUNNING,),
        id="ended-slot-vanished-is-kept",
    ),
    pytest.param(
        [RUNNING],
        [],
        "2026-02-07 19:00",
        (RUNNING,),
        id="slot-starting-exactly-now-counts-as-started",
    ),
    pytest.param(
        [RUNNING, FUTURE],
        [RUNNING],
        "2026-02-07 20:00",
        (RUNNING,),
        id="future-slot-vanished-is-a-withdrawal",
    ),
    pytest.param(
        [RUNNING],
        [],
        "2026-02-07 18:59:59",
        (),
        id="vanished-one-second-before-start-is-a-withdrawal",
    ),
    pytest.param(
        [RUNNING],
        [slot("2026-02-07 19:00", "2026-02-07 21:30", 5.0)],
        "2026-02-07 20:00",
        (slot("2026-02-07 19:00", "2026-02-07 21:30", 5.0),),
        id="still-present-fresh-version-wins",
    ),
    pytest.param(
        [RUNNING],
        [slot("2026-02-07 19:00", "2026-02-07 20:30", 3.0)],
        "2026-02-07 20:00",
        (slot("2026-02-07 19:00", "2026-02-07 20:30", 3.0),),
        id="running-slot-really-shortened",
    ),
    pytest.param(
        [RUNNING],
        [slot("2026-02-07 20:00", "2026-02-07 21:00", 2.0)],
        "2026-02-07 20:00",
        (slot("2026-02-07 19:00", "2026-02-07 21:00", 2.0),),
        id="start-trimmed-to-now-elapsed-part-kept",
    ),
    pytest.param(
        [RUNNING],
        [slot("2026-02-07 19:00", "2026-02-07 21:00", 4.0, device="dev-2")],
        "2026-02-07 20:00",
        (RUNNING, slot("2026-02-07 19:00", "2026-02-07 21:00", 4.0, device="dev-2")),
        id="other-device-slot-does-not-replace",
    ),
    pytest.param(
        [],
        [FUTURE],
        "2026-02-07 20:00",
        (FUTURE,),
        id="nothing-known-fresh-plan-as-is",
    ),
]


@pytest.mark.parametrize(("previous", "fresh", "now", "expected"), CARRY_CASES)
def test_carry_started(
    previous: list[Dispatch], fresh: list[Dispatch], now: str, expected: tuple[Dispatch, ...]
) -> None:
    assert carry_started(previous, fresh, utc(now)) == expected


DROP_CASES = [
    pytest.param("2026-02-07 20:00", timedelta(hours=1), (RUNNING, FUTURE), id="nothing-ended"),
    pytest.param("2026-02-07 21:59:59", timedelta(hours=1), (RUNNING, FUTURE), id="within-keep"),
    pytest.param("2026-02-07 22:00", timedelta(hours=1), (FUTURE,), id="exactly-keep-after-end"),
    pytest.param("2026-02-08 23:00", timedelta(0), (), id="keep-zero-drops-ended"),
    pytest.param(
        "2026-02-08 22:59", None, (RUNNING, FUTURE), id="default-keep-remembers-26h-after-end"
    ),
    pytest.param("2026-02-08 23:00", None, (FUTURE,), id="default-keep-forgets-after-26h"),
]


@pytest.mark.parametrize(("now", "keep", "expected"), DROP_CASES)
def test_drop_finished(now: str, keep: timedelta | None, expected: tuple[Dispatch, ...]) -> None:
    plan = [FUTURE, RUNNING]
    if keep is None:
        assert drop_finished(plan, utc(now)) == expected
    else:
        assert drop_finished(plan, utc(now), keep) == expected


def test_drop_finished_rejects_negative_keep() -> None:
    with pytest.raises(ValueError, match="negative"):
        drop_finished([RUNNING], utc("2026-02-07 20:00"), timedelta(seconds=-1))


# --- properties ------------------------------------------------------------------------------

BASE = datetime(2026, 2, 7, tzinfo=UTC)


@st.composite
def dispatches(draw: st.DrawFn) -> Dispatch:
    start = BASE + timedelta(
        seconds=draw(st.integers(0, 3 * 86400)), microseconds=draw(st.integers(0, 999999))
    )
    length = timedelta(seconds=draw(st.integers(-60, 6 * 3600)))
    return Dispatch(
        start=start,
        end=start + length,
        type=draw(st.sampled_from([SMART, BOOST, TEST])),
        kwh=draw(st.one_of(st.none(), st.integers(-400, 400).map(lambda n: n / 4))),
        location=draw(st.sampled_from([None, AT_HOME, AWAY])),
        device_id=draw(st.sampled_from([None, "dev-1", "dev-2"])),
    )


plans = st.lists(dispatches(), max_size=10)


@settings(max_examples=200, deadline=None)
@given(plan=plans)
def test_diff_of_a_plan_with_itself_is_empty(plan: list[Dispatch]) -> None:
    assert diff(plan, plan) == []


@settings(max_examples=200, deadline=None)
@given(
    plan=plans,
    order=st.randoms(use_true_random=False),
    offset_minutes=st.sampled_from([-300, -60, 0, 60, 345]),
)
def test_reserialised_shuffled_copy_gives_no_event(
    plan: list[Dispatch], order: random.Random, offset_minutes: int
) -> None:
    # Both answers report the same whole-second instants, each with its own sub-second noise
    # of either sign, as the API does from one poll to the next.
    zone = timezone(timedelta(minutes=offset_minutes))

    def noisy(instant: datetime) -> datetime:
        noise = timedelta(microseconds=order.randint(-500_000, 499_999))
        return instant.replace(microsecond=0) + noise

    first = [replace(d, start=noisy(d.start), end=noisy(d.end)) for d in plan]
    copy = [
        replace(d, start=noisy(d.start).astimezone(zone), end=noisy(d.end).astimezone(zone))
        for d in plan
    ]
    order.shuffle(copy)
    assert diff(first, copy) == []


@settings(max_examples=300, deadline=None)
@given(old=plans, new=plans)
def test_applying_events_reconstructs_the_new_plan(
    old: list[Dispatch], new: list[Dispatch]
) -> None:
    events = diff(old, new)
    assert apply_events(old, events) == normalise(new)
    for event in events:
        assert (event.previous is not None) == (event.kind == "slot_changed")
        if event.previous is not None:
            assert event.previous != event.slot
            assert event.previous.start < event.slot.end
            assert event.slot.start < event.previous.end


@settings(max_examples=200, deadline=None)
@given(plan=plans)
def test_normalised_plan_has_no_mergeable_neighbours(plan: list[Dispatch]) -> None:
    result = normalise(plan)
    assert all(d.end > d.start and d.start.microsecond == 0 for d in result)
    for i, first in enumerate(result):
        for second in result[i + 1 :]:
            same = (first.device_id, first.type, first.location) == (
                second.device_id,
                second.type,
                second.location,
            )
            assert not (same and first.start <= second.end and second.start <= first.end)


def completed(
    start: str, end: str, location: str | None, source: str | None = "smart-charge"
) -> CompletedDispatch:
    return CompletedDispatch(
        start=utc(start), end=utc(end), kwh=3.0, source=source, location=location
    )


EVENING = slot("2026-11-23T19:30:00", "2026-11-23T20:15:00", 3.4)
LOCATED_CASES = [
    pytest.param([], EVENING, None, id="no-completed-record-counts-as-home"),
    pytest.param(
        [completed("2026-11-23T19:30:00", "2026-11-23T20:15:00", AWAY)],
        EVENING,
        AWAY,
        id="completed-away",
    ),
    pytest.param(
        [completed("2026-11-23T19:45:00", "2026-11-23T20:00:00", AT_HOME)],
        EVENING,
        AT_HOME,
        id="completed-part-at-home",
    ),
    pytest.param(
        [completed("2026-11-23T19:30:00", "2026-11-23T20:15:00", None)],
        EVENING,
        None,
        id="completed-without-location",
    ),
    pytest.param(
        [completed("2026-11-23T20:15:00", "2026-11-23T21:00:00", AWAY)],
        EVENING,
        None,
        id="adjacent-not-overlapping",
    ),
    pytest.param(
        [completed("2026-11-23T19:30:00", "2026-11-23T20:15:00", AWAY, source="bump-charge")],
        EVENING,
        None,
        id="a-boost-record-does-not-locate-a-smart-slot",
    ),
    pytest.param(
        [
            completed("2026-11-23T19:30:00", "2026-11-23T19:50:00", AT_HOME),
            completed("2026-11-23T19:50:00", "2026-11-23T20:15:00", AWAY),
        ],
        EVENING,
        None,
        id="records-disagree",
    ),
    pytest.param(
        [completed("2026-11-23T19:30:00", "2026-11-23T20:15:00", AWAY)],
        replace(EVENING, location=AT_HOME),
        AT_HOME,
        id="a-known-location-is-kept",
    ),
]


@pytest.mark.parametrize(("records", "planned", "expected"), LOCATED_CASES)
def test_located(records: list[CompletedDispatch], planned: Dispatch, expected: str | None) -> None:
    [result] = located([planned], records)
    assert result.location == expected
    assert replace(result, location=planned.location) == planned, "only the location changes"


# --- classify_completed: what a completed record was ---------------------------------------


def _at(hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 2, 7, hh, mm, tzinfo=UTC)


def _record(start: datetime, end: datetime, source: str | None = None) -> CompletedDispatch:
    return CompletedDispatch(start, end, 1.0, source, "AT_HOME")


@pytest.mark.parametrize(
    ("record", "planned", "kind"),
    [
        # source null (as Octopus sends completed records) and a boost planned then: a boost
        (_record(_at(17), _at(17, 30)), [Dispatch(_at(17), _at(18), "BOOST", 6.0)], "BOOST"),
        (_record(_at(19), _at(19, 30)), [Dispatch(_at(18), _at(20), "SMART", 6.0)], "SMART"),
        # nothing planned that overlaps: unknown, not smart
        (_record(_at(19), _at(19, 30)), [Dispatch(_at(20), _at(21), "SMART", 6.0)], UNKNOWN),
        (_record(_at(19), _at(19, 30)), [], UNKNOWN),
        # a source Octopus does send wins over the plan
        (
            _record(_at(17), _at(17, 30), "smart-charge"),
            [Dispatch(_at(17), _at(18), "BOOST", 1.0)],
            "SMART",
        ),
        (_record(_at(3), _at(3, 30), "test-charge"), [], "TEST"),
        (_record(_at(3), _at(3, 30), "bump-charge"), [], "BOOST"),
        # the type with the most time in common; a tie goes to BOOST
        (
            _record(_at(17), _at(17, 30)),
            [
                Dispatch(_at(16), _at(17, 20), "SMART", 1.0),
                Dispatch(_at(17, 20), _at(18), "BOOST", 1.0),
            ],
            "SMART",
        ),
        (
            _record(_at(17), _at(17, 30)),
            [
                Dispatch(_at(16), _at(17, 15), "SMART", 1.0),
                Dispatch(_at(17, 15), _at(18), "BOOST", 1.0),
            ],
            "BOOST",
        ),
        # a zero-length record inside a slot
        (_record(_at(17, 10), _at(17, 10)), [Dispatch(_at(17), _at(18), "BOOST", 1.0)], "BOOST"),
    ],
)
def test_classify_completed(record: CompletedDispatch, planned: list[Dispatch], kind: str) -> None:
    [classified] = classify_completed([record], planned)
    assert classified.kind == kind
    assert classified.type == kind
    assert (classified.start, classified.end, classified.source) == (
        record.start,
        record.end,
        record.source,
    )
