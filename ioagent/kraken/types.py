"""Typed values returned by the Kraken API, and the tolerant parsers that build them.

Every datetime is aware UTC. Enum-like fields are kept as the raw string so that a value
Octopus adds tomorrow does not crash parsing; known values are listed as constants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time

# Dispatch types (flexPlannedDispatches.type)
SMART = "SMART"
BOOST = "BOOST"
TEST = "TEST"

# Locations (completedDispatches.meta.location); None means unknown and counts as home.
AT_HOME = "AT_HOME"
AWAY = "AWAY"

# Sources (completedDispatches.meta.source); None counts as smart.
SOURCE_SMART = "smart-charge"
SOURCE_BUMP = "bump-charge"

DAYS_OF_WEEK = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One planned (or, with ``source`` set, completed) charging slot."""

    start: datetime
    end: datetime
    type: str
    kwh: float | None
    location: str | None = None
    source: str | None = None
    device_id: str | None = None


@dataclass(frozen=True, slots=True)
class CompletedDispatch:
    """A dispatch that has happened, from ``completedDispatches`` (per account)."""

    start: datetime
    end: datetime
    kwh: float | None
    source: str | None
    location: str | None

    @property
    def type(self) -> str:
        return BOOST if self.source == SOURCE_BUMP else SMART

    def as_dispatch(self) -> Dispatch:
        return Dispatch(
            start=self.start,
            end=self.end,
            type=self.type,
            kwh=self.kwh,
            location=self.location,
            source=self.source,
        )


@dataclass(frozen=True, slots=True)
class Schedule:
    """One day's charging preference: ready by ``time`` with ``max`` percent."""

    day_of_week: str
    time: time
    min: float | None
    max: float | None
    upper_limit: float | None = None


@dataclass(frozen=True, slots=True)
class Preferences:
    mode: str | None
    target_type: str | None
    unit: str | None
    charging_duration_capped: str | None
    schedules: tuple[Schedule, ...] = ()

    def schedule_for(self, day_of_week: str) -> Schedule | None:
        for schedule in self.schedules:
            if schedule.day_of_week == day_of_week:
                return schedule
        return self.schedules[0] if self.schedules else None


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    provider: str | None
    device_type: str | None
    typename: str | None
    make: str | None
    model: str | None
    status_current: str | None
    current_state: str | None
    is_suspended: bool | None
    preferences: Preferences | None = None

    @property
    def is_live(self) -> bool:
        return self.status_current == "LIVE"


@dataclass(frozen=True, slots=True)
class Token:
    """A Kraken JWT with its expiry and the refresh token that came with it."""

    jwt: str = field(repr=False)
    expires_at: datetime
    refresh_token: str | None = field(repr=False, default=None)
    refresh_expires_at: datetime | None = None
