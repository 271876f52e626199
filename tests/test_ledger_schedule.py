"""When the ledger fetches and what it asks for (pure)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from ioagent.budget import is_quiet_second
from ioagent.ledger.schedule import (
    fetch_minute,
    fetch_range,
    ledger_budget,
    next_fetch,
    next_request_at,
)
from ioagent.ledger.windows import fetch_chunks

NOW = datetime(2026, 11, 23, 10, 17, 42, tzinfo=UTC)


def test_first_fetch_backfills_then_later_ones_look_back_for_rebills() -> None:
    assert fetch_range(NOW, None, backfill_days=30, refetch_days=3) == (
        datetime(2026, 10, 24, 10, 0, tzinfo=UTC),
        datetime(2026, 11, 23, 10, 0, tzinfo=UTC),
    )
    latest = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    assert fetch_range(NOW, latest, backfill_days=30, refetch_days=3)[0] == datetime(
        2026, 11, 18, 9, 30, tzinfo=UTC
    )
    # a store older than the backfill never makes the range longer than the backfill
    old = datetime(2026, 1, 1, tzinfo=UTC)
    assert fetch_range(NOW, old, backfill_days=30, refetch_days=3)[0] == datetime(
        2026, 10, 24, 10, 0, tzinfo=UTC
    )


@pytest.mark.parametrize("per_day", [1, 2, 3, 4, 6])
def test_fetches_are_evenly_spaced_at_the_accounts_minute(per_day: int) -> None:
    minute = fetch_minute("A-1234ABCD")
    assert 7 <= minute <= 52
    at = NOW
    times = []
    for _ in range(per_day * 2):
        at = next_fetch(at, "A-1234ABCD", per_day)
        times.append(at)
    assert all(t.minute == minute and t.second == 0 for t in times)
    gaps = {b - a for a, b in itertools.pairwise(times)}
    assert gaps == {timedelta(hours=24 / per_day)}
    assert times[0] > NOW


def test_requests_wait_for_the_budget_and_out_of_the_quiet_seconds() -> None:
    budget = ledger_budget(3)
    quiet = datetime(2026, 11, 23, 10, 29, 57, tzinfo=UTC)
    assert next_request_at(quiet, budget) == datetime(2026, 11, 23, 10, 30, 20, tzinfo=UTC)
    at = datetime(2026, 11, 23, 10, 40, tzinfo=UTC)
    for _ in range(2):
        budget.spend(at)
    # two a minute at most
    assert next_request_at(at, budget) == at + timedelta(minutes=1)
    budget.spend(at + timedelta(minutes=1))
    # three an hour: the next one waits for the first to leave the window; 11:40 is fine
    nxt = next_request_at(at + timedelta(minutes=2), budget)
    assert nxt == at + timedelta(hours=1)
    assert not is_quiet_second(nxt)
    # an hour boundary that lands in the quiet seconds moves past them
    edge = ledger_budget(1)
    edge.spend(datetime(2026, 11, 23, 9, 59, 59, tzinfo=UTC))
    got = next_request_at(datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC), edge)
    assert got == datetime(2026, 11, 23, 11, 0, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("half_hours", "chunks"),
    [(0, 0), (1, 1), (48, 1), (49, 2), (30 * 48, 30), (3 * 48 + 7, 4)],
)
def test_fetch_chunks_cover_the_range_in_day_sized_runs_oldest_first(
    half_hours: int, chunks: int
) -> None:
    start = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
    end = start + half_hours * timedelta(minutes=30)
    found = fetch_chunks(start, end)
    assert len(found) == chunks
    assert [a for a, _ in found[1:]] == [b for _, b in found[:-1]], "consecutive, no gap"
    if found:
        assert (found[0][0], found[-1][1]) == (start, end)
    assert all(b - a <= timedelta(hours=24) for a, b in found)
