"""When the ledger fetches and which half-hours it asks for (pure; every function takes now).

Settlement lags about two days, so a couple of fetches a day are enough. Each fetch asks for
everything after the newest stored half-hour, plus ``refetch_days`` before it to catch
re-bills; the first one backfills ``backfill_days``. Fetch times sit at a stable minute of the
account (like the polls' offset), and no request starts in the quiet seconds of :00/:30.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from ioagent.budget import CallBudget, avoid_boundary
from ioagent.ledger.windows import floor_half_hour
from ioagent.timeutil import to_utc

LEDGER_PER_MINUTE = 2
"""The ledger never sends more than this a minute, whatever its hourly budget."""


def fetch_range(
    now: datetime, latest: datetime | None, *, backfill_days: int, refetch_days: int
) -> tuple[datetime, datetime]:
    """``[start, end)`` to ask for now; ``end`` is the current half-hour's start."""
    end = floor_half_hour(now)
    oldest = floor_half_hour(now - timedelta(days=backfill_days))
    if latest is None:
        return oldest, end
    return max(oldest, floor_half_hour(latest - timedelta(days=refetch_days))), end


def fetch_minute(account: str) -> int:
    """A stable minute past the hour (7..52) for this account's fetches."""
    digest = hashlib.sha256(f"ledger:{account}".encode()).digest()
    return 7 + int.from_bytes(digest[:4], "big") % 46


def next_fetch(now: datetime, account: str, fetches_per_day: int) -> datetime:
    """The next fetch strictly after ``now``: ``fetches_per_day`` evenly spaced times a UTC
    day, at the account's minute, out of the quiet seconds."""
    utc = to_utc(now)
    spacing = timedelta(hours=24 / fetches_per_day)
    day = utc.replace(hour=0, minute=0, second=0, microsecond=0)
    base = day + timedelta(minutes=fetch_minute(account))
    candidate = base
    while candidate <= utc:
        candidate += spacing
    return avoid_boundary(candidate)


def ledger_budget(calls_per_hour: int) -> CallBudget:
    """The ledger's own rolling budget; the dispatch polls' budget is never touched."""
    return CallBudget(per_hour=calls_per_hour, per_minute=LEDGER_PER_MINUTE)


def next_request_at(now: datetime, budget: CallBudget) -> datetime:
    """When the next ledger request may start: inside the budget and out of quiet seconds."""
    at = max(to_utc(now), budget.next_allowed(to_utc(now)).astimezone(UTC))
    moved = avoid_boundary(at)
    while moved != at:  # moving out of a quiet second can only go later; settle once more
        at = max(moved, budget.next_allowed(moved))
        moved = avoid_boundary(at)
    return at
