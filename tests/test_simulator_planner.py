"""Table tests for the simulator's smart-charge planner (pure, no sockets)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioagent.simulator.planner import (
    LONDON,
    PlannedSlot,
    PlanRequest,
    ceil_minute,
    in_offpeak_window,
    next_ready_by,
    plan_smart_charge,
)

WEEK = [
    (day, time(7, 30), 80.0)
    for day in ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def request(
    now: datetime, soc: float, target: float = 80.0, ready_by: datetime | None = None
) -> PlanRequest:
    if ready_by is None:
        found = next_ready_by(now, [(d, t, target) for d, t, _ in WEEK])
        assert found is not None
        ready_by = found.at
    return PlanRequest(
        now=now,
        soc_percent=soc,
        target_percent=target,
        battery_kwh=60.0,
        charger_kw=7.0,
        ready_by=ready_by,
        seed="table",
    )


def aligned(at: datetime) -> bool:
    return at.second == 0 and at.microsecond == 0 and at.minute in (0, 30)


def check_invariants(req: PlanRequest, slots: list[PlannedSlot]) -> None:
    for slot in slots:
        assert slot.start < slot.end
        assert slot.start.second == 0 and slot.end.second == 0
        assert slot.kwh <= req.charger_kw * (slot.end - slot.start).total_seconds() / 3600 + 1e-9
        assert slot.kwh > 0
        assert ceil_minute(req.now) <= slot.start and slot.end <= ceil_minute(req.ready_by)
    for earlier, later in itertools.pairwise(slots):
        assert earlier.end <= later.start


# (plug-in time UTC, soc %, expected energy kWh, expect a slot outside 23:30-05:30)
CASES = [
    ("2026-01-12 18:07:31", 30.0, 30.0, True),  # winter evening, long night available
    ("2026-07-13 19:42:05", 20.0, 36.0, True),  # summer (BST) evening
    ("2026-01-13 01:10:00", 60.0, 12.0, False),  # plugged in inside the window, small top-up
    ("2026-01-13 03:55:20", 50.0, 18.0, True),  # late plug-in: the night is too short
    ("2026-01-12 10:03:00", 50.0, 18.0, True),  # mid-morning plug-in, plan for the next morning
]


@pytest.mark.parametrize(("now_text", "soc", "energy", "outside"), CASES)
def test_plan_reaches_target_energy(
    now_text: str, soc: float, energy: float, outside: bool
) -> None:
    req = request(utc(now_text), soc)
    slots = plan_smart_charge(req)
    check_invariants(req, slots)
    assert sum(slot.kwh for slot in slots) == pytest.approx(energy, abs=1e-6)
    assert any(not in_offpeak_window(slot.start) for slot in slots) is outside


@pytest.mark.parametrize(("now_text", "soc", "energy", "outside"), CASES)
def test_plan_starts_at_plug_in_minute_and_ends_off_the_half_hour(
    now_text: str, soc: float, energy: float, outside: bool
) -> None:
    now = utc(now_text)
    slots = plan_smart_charge(request(now, soc))
    assert slots[0].start == ceil_minute(now)
    assert not aligned(slots[-1].end) or not aligned(slots[0].start)


def test_evening_plan_has_a_non_aligned_slot_outside_the_window() -> None:
    now = utc("2026-01-12 18:07:31")
    slots = plan_smart_charge(request(now, 30.0))
    first = slots[0]
    assert first.start == utc("2026-01-12 18:08:00")
    assert not in_offpeak_window(first.start)
    assert not aligned(first.end) or not aligned(first.start)
    assert any(in_offpeak_window(slot.start) and aligned(slot.start) for slot in slots[1:])


def test_last_slot_ends_at_the_minute_the_energy_is_reached() -> None:
    slots = plan_smart_charge(request(utc("2026-01-12 18:07:31"), 30.0))
    last = slots[-1]
    minutes = (last.end - last.start).total_seconds() / 60
    # The slot is the shortest whole-minute run that delivers its energy at 7 kW.
    assert (minutes - 1) * 7.0 / 60 < last.kwh <= minutes * 7.0 / 60


def test_not_enough_time_delivers_what_fits_before_ready_by() -> None:
    now = utc("2026-01-13 06:30:00")  # an hour before ready-by, 48 kWh wanted
    req = request(now, 0.0)
    slots = plan_smart_charge(req)
    check_invariants(req, slots)
    assert slots[-1].end == req.ready_by
    assert sum(slot.kwh for slot in slots) == pytest.approx(7.0, abs=0.2)


def test_already_at_target_plans_nothing() -> None:
    assert plan_smart_charge(request(utc("2026-01-12 18:00:00"), 85.0)) == []


def test_plan_is_deterministic_for_a_seed_and_varies_between_seeds() -> None:
    now = utc("2026-01-12 18:07:31")
    base = request(now, 10.0)
    assert plan_smart_charge(base) == plan_smart_charge(base)
    layouts = {
        tuple((s.start, s.end) for s in plan_smart_charge(_with_seed(base, str(seed))))
        for seed in range(12)
    }
    assert len(layouts) > 1


def _with_seed(req: PlanRequest, seed: str) -> PlanRequest:
    return PlanRequest(
        req.now,
        req.soc_percent,
        req.target_percent,
        req.battery_kwh,
        req.charger_kw,
        req.ready_by,
        seed,
    )


READY_BY_CASES = [
    # now (UTC), expected ready-by (UTC): 07:30 London, today if still ahead else tomorrow
    ("2026-01-12 06:00:00", "2026-01-12 07:30:00"),
    ("2026-01-12 07:30:00", "2026-01-13 07:30:00"),
    ("2026-07-13 05:00:00", "2026-07-13 06:30:00"),  # BST: 07:30 local is 06:30 UTC
    ("2026-03-28 20:00:00", "2026-03-29 06:30:00"),  # across the spring clock change
]


@pytest.mark.parametrize(("now_text", "expected"), READY_BY_CASES)
def test_next_ready_by(now_text: str, expected: str) -> None:
    found = next_ready_by(utc(now_text), WEEK)
    assert found is not None
    assert found.at == utc(expected)
    assert found.target_percent == 80.0


def test_next_ready_by_uses_that_days_schedule() -> None:
    week = [(d, t, 90.0 if d == "SATURDAY" else 80.0) for d, t, _ in WEEK]
    week = [(d, time(9, 0) if d == "SATURDAY" else t, m) for d, t, m in week]
    found = next_ready_by(utc("2026-01-09 21:00:00"), week)  # a Friday evening
    assert found is not None
    assert found.at.astimezone(LONDON).time() == time(9, 0)
    assert found.target_percent == 90.0


@settings(max_examples=60, deadline=None)
@given(
    now=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 1)).map(
        lambda naive: naive.replace(tzinfo=UTC)
    ),
    soc=st.floats(min_value=0, max_value=100),
    seed=st.text(max_size=5),
)
def test_plan_invariants_hold_for_any_plug_in(now: datetime, soc: float, seed: str) -> None:
    req = _with_seed(request(now, soc), seed)
    slots = plan_smart_charge(req)
    check_invariants(req, slots)
    wanted = max(0.0, (80.0 - soc) / 100 * 60.0)
    reachable = 7.0 * (req.ready_by - ceil_minute(now)).total_seconds() / 3600
    delivered = sum(slot.kwh for slot in slots)
    if wanted < 0.01:
        assert slots == []
    else:
        assert delivered == pytest.approx(min(wanted, reachable), abs=0.01)
    assert ceil_minute(now) - now < timedelta(minutes=1)
