"""Typed values returned by the Kraken API, and the tolerant parsers that build them.

Every datetime is aware UTC. Enum-like fields are kept as the raw string so that a value
Octopus adds tomorrow does not crash parsing; known values are listed as constants.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from ioagent.logs import get_logger
from ioagent.timeutil import parse_iso

_T = TypeVar("_T")

# Dispatch types (flexPlannedDispatches.type)
SMART = "SMART"
BOOST = "BOOST"
TEST = "TEST"
UNKNOWN = "UNKNOWN"
"""The type of a completed dispatch that says nothing (source null) and that ioagent saw no
planned slot for: not counted as smart, boost or test."""

# Locations (completedDispatches.meta.location); None means unknown and counts as home.
AT_HOME = "AT_HOME"
AWAY = "AWAY"
UNABLE_TO_IDENTIFY = "UNABLE_TO_IDENTIFY"
"""Octopus could not tell where the car was; kept as sent (its billing belongs to the tariff)."""

# Sources (completedDispatches.meta.source). Kraken fills it for planned dispatches only, so on
# completed records it is almost always null, boosts included: see classify_completed.
SOURCE_SMART = "smart-charge"
SOURCE_BUMP = "bump-charge"
SOURCE_TEST = "test-charge"
SOURCE_TYPES = {SOURCE_SMART: SMART, SOURCE_BUMP: BOOST, SOURCE_TEST: TEST}

# Devices (devices.deviceType, devices.status.current)
ELECTRIC_VEHICLES = "ELECTRIC_VEHICLES"
"""Cars and charge points alike: Kraken has no CHARGE_POINTS device type."""
LIVE = "LIVE"

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
    """A dispatch that has happened, from ``completedDispatches`` (per account).

    ``kind`` is what ioagent classified it as from the slots it saw planned for that time
    (``ioagent.tariff.plan.classify_completed``); None until classified.
    """

    start: datetime
    end: datetime
    kwh: float | None
    source: str | None
    location: str | None
    kind: str | None = None

    @property
    def type(self) -> str:
        """SMART, BOOST or TEST from the source Octopus sent, else from the classification;
        UNKNOWN when neither says."""
        from_source = SOURCE_TYPES.get(self.source or "")
        if from_source is not None:
            return from_source
        return self.kind or UNKNOWN

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

    def schedule_for(self, day: str | date) -> Schedule | None:
        """The schedule for ``day``: a :data:`DAYS_OF_WEEK` name, or a local date's weekday.

        A day the API left out (or sent malformed) falls back to the first schedule there is,
        the same one a read-modify-write would write back for it; None without any schedule.
        """
        name = DAYS_OF_WEEK[day.weekday()] if isinstance(day, date) else day.upper()
        for schedule in self.schedules:
            if schedule.day_of_week == name:
                return schedule
        return self.schedules[0] if self.schedules else None

    def target_soc_for(self, day: str | date) -> float | None:
        """The target state of charge (percent) for ``day`` (see :meth:`schedule_for`)."""
        schedule = self.schedule_for(day)
        return None if schedule is None else schedule.max

    def ready_by_for(self, day: str | date) -> time | None:
        """The ready-by time of day for ``day`` (see :meth:`schedule_for`)."""
        schedule = self.schedule_for(day)
        return None if schedule is None else schedule.time


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
        return self.status_current == LIVE

    @property
    def is_smart_chargeable(self) -> bool:
        """An EV or charge point that is live: the only devices with planned dispatches.

        Retired registrations, batteries, heat pumps and storage heaters are listed too, but
        polling their plans would only spend the 5-a-minute planned-dispatch budget.
        """
        return self.device_type == ELECTRIC_VEHICLES and self.is_live


@dataclass(frozen=True, slots=True)
class Token:
    """A Kraken JWT with its expiry and the refresh token that came with it."""

    jwt: str = field(repr=False)
    expires_at: datetime
    refresh_token: str | None = field(repr=False, default=None)
    refresh_expires_at: datetime | None = None


# --- Tolerant parsers -----------------------------------------------------------------------
# The API is volatile: odd offsets, microseconds, decimal strings, nulls and new enum values all
# occur. Single-item parsers raise ValueError for an item that cannot be used; the list parsers
# skip such items with a warning, so one bad slot never hides the rest of the plan.

DISPATCH_TYPES = frozenset({SMART, BOOST, TEST})
LOCATIONS = frozenset({AT_HOME, AWAY, UNABLE_TO_IDENTIFY})
SOURCES = frozenset(SOURCE_TYPES)
DEVICE_STATES = (
    "AUTHENTICATION_PENDING",
    "AUTHENTICATION_FAILED",
    "AUTHENTICATION_COMPLETE",
    "TEST_CHARGE_IN_PROGRESS",
    "TEST_CHARGE_FAILED",
    "TEST_CHARGE_NOT_AVAILABLE",
    "SETUP_COMPLETE",
    "SMART_CONTROL_CAPABLE",
    "SMART_CONTROL_IN_PROGRESS",
    "BOOSTING",
    "SMART_CONTROL_OFF",
    "SMART_CONTROL_NOT_AVAILABLE",
    "LOST_CONNECTION",
    "RETIRED",
)
"""``status.currentState`` values the API documents, in its order."""
CURRENT_STATES = frozenset(DEVICE_STATES)
CHARGING_CAP_VALUES = frozenset({"ENABLED", "DISABLED", "NOT_APPLICABLE"})

_log = get_logger(__name__)
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()
_MAX_WARNED = 1000
_HH_MM = re.compile(r"\s*(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?\s*")


def _warn_once(kind: str, value: str, **context: Any) -> None:
    """Log a warning the first time a value is seen, so a new enum does not flood the log."""
    key = (kind, value[:100])
    with _warned_lock:
        if key in _warned or len(_warned) >= _MAX_WARNED:
            return
        _warned.add(key)
    _log.warning("kraken_unexpected_value", kind=kind, value=value[:100], **context)


def _enum(value: Any, known: frozenset[str], kind: str) -> str | None:
    """Keep an enum-like value as its raw string; warn once about values we do not know."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    if text not in known:
        _warn_once(kind, text)
    return text


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def parse_datetime(value: Any) -> datetime:
    """An ISO-8601 string with any offset (or ``Z``) as aware UTC; ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO-8601 string, got {type(value).__name__}")
    try:
        return parse_iso(value)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not an ISO-8601 date-time with an offset: {value[:60]!r}") from exc


def parse_number(value: Any) -> float | None:
    """A float from a JSON number or decimal string; None for null, junk, NaN or infinity."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(Decimal(value.strip()))
        except (InvalidOperation, ValueError, OverflowError):
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def parse_kwh(value: Any) -> float | None:
    """Energy as a positive kWh figure: the API reports import as negative decimal strings."""
    number = parse_number(value)
    if number is None:
        if value is not None:
            _warn_once("kwh", str(value)[:60])
        return None
    return abs(number)


def parse_time_of_day(value: Any) -> time:
    """``HH:MM`` or ``HH:MM:SS`` (seconds dropped); ValueError otherwise."""
    if isinstance(value, str):
        match = _HH_MM.fullmatch(value)
        if match:
            hour, minute = int(match.group(1)), int(match.group(2))
            if hour < 24 and minute < 60:
                return time(hour, minute)
    raise ValueError(f"not a time of day: {str(value)[:40]!r}")


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} is not an object")
    return value


def _interval(raw: Mapping[str, Any]) -> tuple[datetime, datetime]:
    start = parse_datetime(raw.get("start"))
    end = parse_datetime(raw.get("end"))
    if end < start:
        raise ValueError("dispatch ends before it starts")
    return start, end


def parse_dispatch(raw: Any, device_id: str | None = None) -> Dispatch:
    """One ``flexPlannedDispatches`` item."""
    item = _mapping(raw, "dispatch")
    start, end = _interval(item)
    kind = _enum(item.get("type"), DISPATCH_TYPES, "dispatch_type")
    if kind is None:
        # A planned slot without a type is most likely an ordinary smart slot.
        _warn_once("dispatch_type", "null")
        kind = SMART
    return Dispatch(
        start=start,
        end=end,
        type=kind,
        kwh=parse_kwh(item.get("energyAddedKwh")),
        device_id=device_id,
    )


def parse_completed(raw: Any) -> CompletedDispatch:
    """One ``completedDispatches`` item."""
    item = _mapping(raw, "completed dispatch")
    start, end = _interval(item)
    meta = item.get("meta")
    meta = meta if isinstance(meta, Mapping) else {}
    return CompletedDispatch(
        start=start,
        end=end,
        kwh=parse_kwh(item.get("delta")),
        source=_enum(meta.get("source"), SOURCES, "dispatch_source"),
        location=_enum(meta.get("location"), LOCATIONS, "dispatch_location"),
    )


def parse_schedule(raw: Any) -> Schedule:
    item = _mapping(raw, "schedule")
    day = item.get("dayOfWeek")
    if not isinstance(day, str) or not day:
        raise ValueError("schedule has no dayOfWeek")
    day = day.upper()
    if day not in DAYS_OF_WEEK:
        raise ValueError(f"unknown dayOfWeek {day[:20]!r}")
    return Schedule(
        day_of_week=day,
        time=parse_time_of_day(item.get("time")),
        min=parse_number(item.get("min")),
        max=parse_number(item.get("max")),
        upper_limit=parse_number(item.get("upperLimit")),
    )


def parse_preferences(raw: Any) -> Preferences:
    item = _mapping(raw, "preferences")
    schedules = _parse_items(item.get("schedules"), parse_schedule, "schedule")
    order = {day: index for index, day in enumerate(DAYS_OF_WEEK)}
    return Preferences(
        mode=_text(item.get("mode")),
        target_type=_text(item.get("targetType")),
        unit=_text(item.get("unit")),
        charging_duration_capped=_enum(
            item.get("isChargingDurationCapped"), CHARGING_CAP_VALUES, "charging_duration_capped"
        ),
        schedules=tuple(sorted(schedules, key=lambda s: order[s.day_of_week])),
    )


def parse_device(raw: Any) -> Device:
    item = _mapping(raw, "device")
    device_id = item.get("id")
    if not isinstance(device_id, str) or not device_id.strip():
        raise ValueError("device has no id")
    status = item.get("status")
    status = status if isinstance(status, Mapping) else {}
    suspended = status.get("isSuspended")
    preferences: Preferences | None = None
    if item.get("preferences") is not None:
        try:
            preferences = parse_preferences(item.get("preferences"))
        except ValueError as exc:
            _log.warning("kraken_preferences_skipped", device_id=device_id, reason=str(exc))
    return Device(
        id=device_id,
        provider=_text(item.get("provider")),
        device_type=_text(item.get("deviceType")),
        typename=_text(item.get("__typename")),
        make=_text(item.get("make")),
        model=_text(item.get("model")),
        status_current=_text(status.get("current")),
        current_state=_enum(status.get("currentState"), CURRENT_STATES, "device_state"),
        is_suspended=suspended if isinstance(suspended, bool) else None,
        preferences=preferences,
    )


def _parse_items(raw: Any, parse: Callable[[Any], _T], what: str) -> list[_T]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        _log.warning("kraken_list_expected", what=what, got=type(raw).__name__)
        return []
    parsed: list[_T] = []
    for index, item in enumerate(raw):
        try:
            parsed.append(parse(item))
        except (ValueError, TypeError, OverflowError) as exc:
            _log.warning("kraken_item_skipped", what=what, index=index, reason=str(exc)[:200])
    return parsed


def parse_dispatches(raw: Any, device_id: str | None = None) -> list[Dispatch]:
    """A ``flexPlannedDispatches`` list, malformed items skipped, in start order."""
    items = _parse_items(raw, lambda item: parse_dispatch(item, device_id), "planned dispatch")
    return sorted(items, key=lambda d: (d.start, d.end))


def parse_completed_list(raw: Any) -> list[CompletedDispatch]:
    """A ``completedDispatches`` list (the API sends newest first), returned in start order."""
    items = _parse_items(raw, parse_completed, "completed dispatch")
    return sorted(items, key=lambda d: (d.start, d.end))


def parse_devices(raw: Any) -> list[Device]:
    return _parse_items(raw, parse_device, "device")


# --- agreements and unit rates (the account's product; see docs/tariff.md) -------------------


@dataclass(frozen=True, slots=True)
class Agreement:
    """One electricity agreement of the account: which product and tariff, from when to when.

    ``product_code``/``tariff_code`` are kept exactly as Octopus sent them (None when the
    tariff is of a type that has no codes); ``valid_to`` None means open-ended.
    """

    product_code: str | None
    tariff_code: str | None
    valid_from: datetime | None
    valid_to: datetime | None
    mpan: str | None

    def in_force(self, now: datetime) -> bool:
        started = self.valid_from is None or self.valid_from <= now
        return started and (self.valid_to is None or now < self.valid_to)


def parse_agreement(raw: Any) -> Agreement:
    item = _mapping(raw, "agreement")
    tariff = item.get("tariff")
    tariff = tariff if isinstance(tariff, Mapping) else {}
    meter_point = item.get("meterPoint")
    meter_point = meter_point if isinstance(meter_point, Mapping) else {}
    valid_from, valid_to = item.get("validFrom"), item.get("validTo")
    return Agreement(
        product_code=_text(tariff.get("productCode")),
        tariff_code=_text(tariff.get("tariffCode")),
        valid_from=None if valid_from is None else parse_datetime(valid_from),
        valid_to=None if valid_to is None else parse_datetime(valid_to),
        mpan=_text(meter_point.get("mpan")),
    )


def parse_agreements(raw: Any) -> list[Agreement]:
    """``account.electricityAgreements``, malformed items skipped, in ``validFrom`` order."""
    items = _parse_items(raw, parse_agreement, "agreement")
    return sorted(items, key=lambda a: (a.valid_from is not None, a.valid_from or datetime.min))


@dataclass(frozen=True, slots=True)
class UnitRate:
    """One entry of a products REST rate feed: pence per kWh including VAT."""

    value_inc_vat: float
    valid_from: datetime | None
    valid_to: datetime | None


def parse_unit_rate(raw: Any) -> UnitRate:
    item = _mapping(raw, "unit rate")
    value = parse_number(item.get("value_inc_vat"))
    if value is None:
        raise ValueError("unit rate without value_inc_vat")
    valid_from, valid_to = item.get("valid_from"), item.get("valid_to")
    return UnitRate(
        value_inc_vat=value,
        valid_from=None if valid_from is None else parse_datetime(valid_from),
        valid_to=None if valid_to is None else parse_datetime(valid_to),
    )


def parse_unit_rates(raw: Any) -> list[UnitRate]:
    """The ``results`` of a rate feed, in ``valid_from`` order."""
    items = _parse_items(raw, parse_unit_rate, "unit rate")
    return sorted(items, key=lambda r: (r.valid_from is not None, r.valid_from or datetime.min))
