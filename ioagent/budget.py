"""Per-account API call budget and poll timing rules. Pure: every function takes ``now``.

Octopus documents 5 ``flexPlannedDispatches`` a minute per user and asked integrations to poll
no more than every few minutes, never exactly on the hour or half-hour, and to back off on
errors. ioagent keeps one call in hand (4 a minute) and defaults to the 20 an hour that the most
used Home Assistant integration has run with for years.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
HALF_HOUR_SECONDS = 1800

BOUNDARY_QUIET_BEFORE = 5
"""Seconds before :00/:30 in which no call is started."""
BOUNDARY_QUIET_AFTER = 20
"""Seconds after :00/:30 in which no call is started (the whole country polls then)."""

REGULAR_RESERVE = 2
"""Calls per rolling hour kept back from extra polls so the two regular polls always run."""


@dataclass
class CallBudget:
    """Rolling-window limits on planned-dispatch queries for one account."""

    per_hour: int
    per_minute: int
    _calls: deque[datetime] = field(default_factory=deque)

    def _forget_before(self, now: datetime) -> None:
        while self._calls and self._calls[0] <= now - HOUR:
            self._calls.popleft()

    def used_last_hour(self, now: datetime) -> int:
        self._forget_before(now)
        return len(self._calls)

    def used_last_minute(self, now: datetime) -> int:
        self._forget_before(now)
        return sum(1 for at in self._calls if at > now - MINUTE)

    def allows(self, now: datetime, cost: int = 1, *, reserve: int = 0) -> bool:
        """Whether ``cost`` calls may start now, leaving ``reserve`` of the hourly budget."""
        return (
            self.used_last_hour(now) + cost + reserve <= self.per_hour
            and self.used_last_minute(now) + cost <= self.per_minute
        )

    def spend(self, now: datetime, cost: int = 1) -> None:
        self._calls.extend([now] * cost)

    def recent(self, now: datetime) -> list[datetime]:
        """The calls still inside the hourly window: what a restart must not forget."""
        self._forget_before(now)
        return list(self._calls)

    def restore(self, calls: Iterable[datetime], now: datetime) -> None:
        """Take back the calls an earlier process made, so a restart cannot reset the limits."""
        known = sorted([*self._calls, *(c for c in calls if now - HOUR < c <= now)])
        self._calls = deque(known)

    def next_allowed(self, now: datetime, cost: int = 1, *, reserve: int = 0) -> datetime:
        """The earliest instant at or after ``now`` when :meth:`allows` becomes true."""
        candidate = now
        calls = list(self._calls)
        hour_excess = len([c for c in calls if c > now - HOUR]) + cost + reserve - self.per_hour
        if hour_excess > 0:
            window = [c for c in calls if c > now - HOUR]
            candidate = max(candidate, window[min(hour_excess, len(window)) - 1] + HOUR)
        minute_window = [c for c in calls if c > candidate - MINUTE]
        minute_excess = len(minute_window) + cost - self.per_minute
        if minute_excess > 0:
            candidate = max(candidate, minute_window[minute_excess - 1] + MINUTE)
        return candidate


def poll_offset_seconds(account: str, low: int = 30, high: int = 150) -> int:
    """A stable offset after :00/:30 for this account, so installs spread their polls."""
    digest = hashlib.sha256(account.encode("utf-8")).digest()
    return low + int.from_bytes(digest[:4], "big") % (high - low + 1)


def next_regular_poll(now: datetime, offset_seconds: int) -> datetime:
    """The next half-hour boundary plus ``offset_seconds``, strictly after ``now``."""
    now = now.astimezone(UTC)
    base = now.replace(minute=(now.minute // 30) * 30, second=0, microsecond=0)
    candidate = base + timedelta(seconds=offset_seconds)
    while candidate <= now:
        candidate += timedelta(seconds=HALF_HOUR_SECONDS)
    return candidate


def avoid_boundary(at: datetime) -> datetime:
    """Move ``at`` out of the quiet seconds around :00 and :30."""
    utc = at.astimezone(UTC)
    into_half_hour = (utc.minute % 30) * 60 + utc.second + utc.microsecond / 1e6
    if into_half_hour < BOUNDARY_QUIET_AFTER:
        return utc + timedelta(seconds=BOUNDARY_QUIET_AFTER - into_half_hour)
    if into_half_hour > HALF_HOUR_SECONDS - BOUNDARY_QUIET_BEFORE:
        return utc + timedelta(seconds=HALF_HOUR_SECONDS - into_half_hour + BOUNDARY_QUIET_AFTER)
    return utc


BACKOFF_JITTER = 0.25
"""Each backoff delay is shortened by up to this fraction, at random, so clients spread out."""


def backoff_delay(failures: int, *, jitter: float, initial: float, maximum: float) -> float:
    """Seconds to wait after ``failures`` consecutive failures (1 = the first).

    Doubles from ``initial`` up to ``maximum``; ``jitter`` in [0, 1) (a random draw) shortens
    it by up to :data:`BACKOFF_JITTER` of itself. Shared by the API poller and the MQTT bridge.
    """
    exponent = min(max(failures, 1) - 1, 32)
    base = min(maximum, initial * 2.0**exponent)
    return base * (1.0 - BACKOFF_JITTER * min(max(jitter, 0.0), 1.0))


def is_quiet_second(at: datetime) -> bool:
    """True inside the quiet seconds around :00 and :30 where no call may start."""
    return avoid_boundary(at) != at.astimezone(UTC)


__all__ = [
    "BACKOFF_JITTER",
    "HOUR",
    "MINUTE",
    "REGULAR_RESERVE",
    "CallBudget",
    "avoid_boundary",
    "backoff_delay",
    "is_quiet_second",
    "next_regular_poll",
    "poll_offset_seconds",
]
