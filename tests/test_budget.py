from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ioagent.budget import (
    BACKOFF_JITTER,
    CallBudget,
    avoid_boundary,
    backoff_delay,
    is_quiet_second,
    next_regular_poll,
    poll_offset_seconds,
)

T0 = datetime(2026, 11, 23, 19, 0, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_per_minute_limit_blocks_the_fifth_call_and_reopens_a_minute_later() -> None:
    budget = CallBudget(per_hour=20, per_minute=4)
    for second in range(4):
        assert budget.allows(at(0) + timedelta(seconds=second))
        budget.spend(at(0) + timedelta(seconds=second))
    assert not budget.allows(at(0) + timedelta(seconds=10))
    assert budget.next_allowed(at(0) + timedelta(seconds=10)) == at(1)
    assert budget.allows(at(1))


def test_hourly_limit_counts_a_rolling_hour() -> None:
    budget = CallBudget(per_hour=3, per_minute=4)
    for minute in (0, 10, 20):
        budget.spend(at(minute))
    assert not budget.allows(at(30))
    assert budget.next_allowed(at(30)) == at(60)
    assert budget.allows(at(60))
    assert budget.used_last_hour(at(60)) == 2


def test_reserve_keeps_room_for_regular_polls() -> None:
    budget = CallBudget(per_hour=5, per_minute=4)
    for minute in (0, 5, 10):
        budget.spend(at(minute))
    assert budget.allows(at(15))
    assert not budget.allows(at(15), reserve=2)
    assert budget.next_allowed(at(15), reserve=2) == at(60)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=300), min_size=1, max_size=200),
    st.integers(min_value=2, max_value=20),
    st.integers(min_value=1, max_value=4),
)
def test_spending_only_when_allowed_never_breaks_a_window(
    wishes: list[float], per_hour: int, per_minute: int
) -> None:
    budget = CallBudget(per_hour=per_hour, per_minute=per_minute)
    spent: list[datetime] = []
    for minute in sorted(wishes):
        now = at(minute)
        if budget.allows(now):
            budget.spend(now)
            spent.append(now)
        else:
            assert budget.next_allowed(now) > now
    for start in spent:
        assert sum(1 for t in spent if start <= t < start + timedelta(hours=1)) <= per_hour
        assert sum(1 for t in spent if start <= t < start + timedelta(minutes=1)) <= per_minute


def test_offset_is_stable_and_in_range() -> None:
    offsets = {poll_offset_seconds(f"A-{n:08X}") for n in range(500)}
    assert min(offsets) >= 30
    assert max(offsets) <= 150
    assert len(offsets) > 50, "offsets should spread installs out"
    assert poll_offset_seconds("A-1234ABCD") == poll_offset_seconds("A-1234ABCD")


@pytest.mark.parametrize(
    ("now", "offset", "expected"),
    [
        (
            datetime(2026, 11, 23, 19, 0, 0, tzinfo=UTC),
            45,
            datetime(2026, 11, 23, 19, 0, 45, tzinfo=UTC),
        ),
        (
            datetime(2026, 11, 23, 19, 0, 45, tzinfo=UTC),
            45,
            datetime(2026, 11, 23, 19, 30, 45, tzinfo=UTC),
        ),
        (
            datetime(2026, 11, 23, 19, 29, 59, tzinfo=UTC),
            150,
            datetime(2026, 11, 23, 19, 32, 30, tzinfo=UTC),
        ),
        (
            datetime(2026, 11, 23, 19, 31, 0, tzinfo=UTC),
            150,
            datetime(2026, 11, 23, 19, 32, 30, tzinfo=UTC),
        ),
        (
            datetime(2026, 11, 23, 23, 59, 0, tzinfo=UTC),
            30,
            datetime(2026, 11, 24, 0, 0, 30, tzinfo=UTC),
        ),
    ],
    ids=["at-boundary", "just-polled", "before-half-hour", "inside-offset", "midnight"],
)
def test_next_regular_poll(now: datetime, offset: int, expected: datetime) -> None:
    assert next_regular_poll(now, offset) == expected


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        ("19:00:00", "19:00:20"),
        ("19:00:19.5", "19:00:20"),
        ("19:29:57", "19:30:20"),
        ("19:30:05", "19:30:20"),
        ("19:14:00", "19:14:00"),
        ("19:29:54", "19:29:54"),
    ],
)
def test_avoid_boundary(wanted: str, expected: str) -> None:
    day = "2026-11-23T"
    result = avoid_boundary(datetime.fromisoformat(f"{day}{wanted}+00:00"))
    assert result == datetime.fromisoformat(f"{day}{expected}+00:00")
    assert not is_quiet_second(result)


def test_backoff_grows_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, jitter=rng.random(), initial=30, maximum=1800) for n in range(1, 12)]
    assert 15 <= delays[0] <= 30
    assert 30 <= delays[1] <= 60
    assert all(900 <= d <= 1800 for d in delays[7:])
    samples = {
        round(backoff_delay(3, jitter=rng.random(), initial=30, maximum=1800), 3) for _ in range(20)
    }
    assert len(samples) > 10, "delays must be jittered"


@pytest.mark.parametrize(
    ("failures", "jitter", "expected"),
    [
        (1, 0.0, 1.0),
        (2, 0.0, 2.0),
        (3, 0.0, 4.0),
        (6, 0.0, 32.0),
        (7, 0.0, 60.0),
        (500, 0.0, 60.0),
        (0, 0.0, 1.0),
        (1, 0.999999, 1.0 - BACKOFF_JITTER * 0.999999),
        (7, 0.5, 60.0 * (1 - BACKOFF_JITTER / 2)),
    ],
)
def test_backoff_delay(failures: int, jitter: float, expected: float) -> None:
    assert backoff_delay(failures, jitter=jitter, initial=1.0, maximum=60.0) == pytest.approx(
        expected
    )


def test_backoff_grows_despite_jitter_until_the_cap() -> None:
    worst_next = [
        backoff_delay(n + 1, jitter=0.999, initial=1.0, maximum=60.0) for n in range(1, 6)
    ]
    best_now = [backoff_delay(n, jitter=0.0, initial=1.0, maximum=60.0) for n in range(1, 6)]
    assert all(later > now for later, now in zip(worst_next, best_now, strict=True))
