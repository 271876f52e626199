"""Simulated settled billing: ``account → properties → measurements`` built from the
simulator's own dispatch history and a household load profile.

Pricing (a deliberately simple model of the four-rate product, documented in
docs/simulator.md; the live rules are in octopus-tariffs-2026.md):

* the home is low 23:30–05:30 Europe/London, every night;
* the car has 12 half-hours of allowance per period from local noon to noon: the half-hours
  touched by completed smart dispatches use it in time order (Predbat's way of counting);
* a half-hour touched by a smart dispatch within the allowance is low for the car, and — if
  the car drew energy in it and ``home_bonus`` is on — for the home too (R3, R6); beyond the
  allowance the car pays standard and the home keeps only the night window (R4);
* a boost (``bump-charge``) is standard for the car at any time (R5);
* car kWh are the dispatches' kWh spread over the half-hours they overlap; home kWh follow
  :func:`household_kwh`.

Quirks reproduced: settlement lags two days; amounts and unit prices are in pence although
``costCurrency`` says GBP; all four buckets come every half-hour, zero where unused; windows
longer than 12 half-hours come back without ``statistics``. Control calls (see
``ledger_control``) choose the vocabulary, switch the home bonus off (a simulated Octopus
rule change), re-bill a half-hour and make a half-hour carry a label nobody knows.
"""

from __future__ import annotations

import base64
import hashlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from graphql import GraphQLError, GraphQLObjectType, GraphQLResolveInfo, GraphQLSchema

from ioagent.simulator.planner import LONDON
from ioagent.simulator.state import KrakenError, SimCompleted, SimulatorState
from ioagent.timeutil import parse_iso

HALF_HOUR: Final = timedelta(minutes=30)
SETTLEMENT_LAG: Final = timedelta(days=2)
MAX_WINDOW: Final = 12 * HALF_HOUR
ALLOWANCE_HALF_HOURS: Final = 12
VOCABULARIES: Final = ("v1", "v2", "legacy")
WINDOW: Final = (time(23, 30), time(5, 30))

PRICES_PENCE: Final = {
    "home low": 7.0,
    "home standard": 28.0,
    "car low": 7.0,
    "car standard": 28.0,
}
"""Pence per kWh including VAT."""
STANDING_PENCE_PER_DAY: Final = 50.0
VAT_FACTOR: Final = 1.05

_V1_LABELS: Final = {
    "home standard": "CONSUMPTION_CHARGE_ECO7_DAY_{r}",
    "home low": "CONSUMPTION_CHARGE_ECO7_NIGHT_{r}",
    "car low": "CONSUMPTION_CHARGE_EV_DEVICE_OFF_PEAK_{r}",
    "car standard": "CONSUMPTION_CHARGE_EV_DEVICE_PEAK_{r}",
}
_V2_LABELS: Final = {
    "home low": "HOME LOW RATE",
    "home standard": "HOME STANDARD RATE",
    "car low": "EV LOW RATE",
    "car standard": "EV STANDARD RATE",
}
_BUCKET_ORDER: Final = ("home standard", "home low", "car low", "car standard")


@dataclass
class LedgerSettings:
    """What the control calls change."""

    vocabulary: str = "v2"
    region: str = "H"
    home_bonus: bool = True
    rebills: dict[tuple[str, datetime], dict[str, str]] = field(default_factory=dict)
    """(account, start) → {"home": band, "car": band}: billed differently from the rules."""
    unknown_labels: dict[tuple[str, datetime], str] = field(default_factory=dict)
    mpans: dict[str, str] = field(default_factory=dict)


_SETTINGS: weakref.WeakKeyDictionary[SimulatorState, LedgerSettings] = weakref.WeakKeyDictionary()


def ledger_settings(state: SimulatorState) -> LedgerSettings:
    """The ledger's settings for ``state`` (kept beside it, so state.py needs no change)."""
    found = _SETTINGS.get(state)
    if found is None:
        found = _SETTINGS[state] = LedgerSettings()
    return found


def mpan_for(state: SimulatorState, account: str) -> str:
    """The account's import MPAN: the agreements' one if the simulator has them, else a
    stable made-up 13-digit number."""
    tariffs = getattr(state, "tariffs", None)
    known = getattr(tariffs, "mpans", {}) if tariffs is not None else {}
    if account in known:
        return str(known[account])
    settings = ledger_settings(state)
    if account not in settings.mpans:
        digest = int(hashlib.sha256(account.encode()).hexdigest(), 16)
        settings.mpans[account] = "19" + str(digest % 10**11).zfill(11)
    return settings.mpans[account]


# --- the billing model (pure functions of the history) -----------------------------------------


def household_kwh(start: datetime) -> float:
    """A household load profile: 0.15 kWh a half-hour, more at breakfast and in the evening."""
    clock = start.astimezone(LONDON).time()
    if time(17, 0) <= clock < time(21, 0):
        return 0.45
    if time(7, 0) <= clock < time(9, 0):
        return 0.3
    return 0.15


def in_window(start: datetime) -> bool:
    clock = start.astimezone(LONDON).time()
    return clock >= WINDOW[0] or clock < WINDOW[1]


def allowance_period(start: datetime) -> date:
    """The local noon-to-noon period a half-hour belongs to, named by the date it starts."""
    local = start.astimezone(LONDON)
    return local.date() if local.time() >= time(12, 0) else local.date() - timedelta(days=1)


def _floor(instant: datetime) -> datetime:
    utc = instant.astimezone(UTC)
    return utc.replace(minute=utc.minute - utc.minute % 30, second=0, microsecond=0)


def _touched(item: SimCompleted) -> list[datetime]:
    cursor, found = _floor(item.start), []
    while cursor < item.end:
        found.append(cursor)
        cursor += HALF_HOUR
    return found


@dataclass(frozen=True)
class BilledHalfHour:
    start: datetime
    home_band: str
    car_band: str
    home_kwh: float
    car_kwh: float


def bill(
    history: Sequence[SimCompleted], start: datetime, end: datetime, *, home_bonus: bool = True
) -> list[BilledHalfHour]:
    """Every half-hour of ``[start, end)`` billed by the rules in the module docstring."""
    car_kwh: dict[datetime, float] = {}
    smart: set[datetime] = set()
    boost: set[datetime] = set()
    for item in sorted(history, key=lambda c: c.start):
        duration = (item.end - item.start).total_seconds()
        for slot in _touched(item):
            overlap = (min(item.end, slot + HALF_HOUR) - max(item.start, slot)).total_seconds()
            if duration > 0 and item.kwh:
                car_kwh[slot] = car_kwh.get(slot, 0.0) + abs(item.kwh) * overlap / duration
            (boost if item.billed_as == "BOOST" else smart).add(slot)
    within: set[datetime] = set()
    used: dict[date, int] = {}
    for slot in sorted(smart):
        period = allowance_period(slot)
        if used.get(period, 0) < ALLOWANCE_HALF_HOURS:
            used[period] = used.get(period, 0) + 1
            within.add(slot)
    billed = []
    cursor = _floor(start)
    while cursor < end:
        charged = car_kwh.get(cursor, 0.0) > 0
        car_low = cursor in within and cursor not in boost
        home_low = in_window(cursor) or (home_bonus and car_low and charged)
        billed.append(
            BilledHalfHour(
                cursor,
                "low" if home_low else "standard",
                "low" if car_low else "standard",
                household_kwh(cursor),
                round(car_kwh.get(cursor, 0.0), 3),
            )
        )
        cursor += HALF_HOUR
    return billed


# --- the wire format -------------------------------------------------------------------------


def _decimal(value: float, places: int) -> str:
    return f"{round(value, places):.{places}f}"


def _money(pence: float, price: float) -> dict[str, Any]:
    return {
        "costCurrency": "GBP",
        "estimatedAmount": _decimal(pence, 4),
        "pricePerUnit": {"amount": _decimal(price, 5), "unit": "KILOWATT_HOURS"},
    }


def _statistic(label: str, kwh: float, name: str | None, pence_per_kwh: float) -> dict[str, Any]:
    inc = kwh * pence_per_kwh
    return {
        "type": "TOU_BUCKET_COST",
        "label": label,
        "description": name,
        "value": _decimal(kwh, 4),
        "costInclTax": _money(inc, pence_per_kwh),
        "costExclTax": _money(inc / VAT_FACTOR, pence_per_kwh / VAT_FACTOR),
    }


def _standing(start: datetime, label: str) -> dict[str, Any]:
    day = start.astimezone(LONDON).date()
    day_start = datetime.combine(day, time(0), tzinfo=LONDON)
    day_end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=LONDON)
    per = STANDING_PENCE_PER_DAY / ((day_end - day_start) / HALF_HOUR)
    money = {"costCurrency": "GBP", "estimatedAmount": _decimal(per, 4), "pricePerUnit": None}
    excl = dict(money, estimatedAmount=_decimal(per / VAT_FACTOR, 4))
    return {
        "type": "STANDING_CHARGE_COST",
        "label": label,
        "description": None,
        "value": "0.0000",
        "costInclTax": money,
        "costExclTax": excl,
    }


def statistics_for(
    item: BilledHalfHour, settings: LedgerSettings, unknown_label: str | None = None
) -> list[dict[str, Any]]:
    if settings.vocabulary == "legacy":
        band = item.home_band
        label = unknown_label or ("OFF_PEAK" if band == "low" else "STANDARD_RATE")
        kwh = item.home_kwh + item.car_kwh
        rows = [_statistic(label, kwh, None, PRICES_PENCE[f"home {band}"])]
        return [*rows, _standing(item.start, "STANDING_CHARGE")]
    labels = _V2_LABELS if settings.vocabulary == "v2" else _V1_LABELS
    energy = {name: 0.0 for name in _BUCKET_ORDER}
    energy[f"home {item.home_band}"] += item.home_kwh
    energy[f"car {item.car_band}"] += item.car_kwh
    rows = []
    for name in _BUCKET_ORDER:
        label = labels[name].format(r=settings.region)
        if unknown_label and name == f"home {item.home_band}":
            label = unknown_label
        rows.append(_statistic(label, energy[name], None, PRICES_PENCE[name]))
    standing_label = "STANDING CHARGE" if settings.vocabulary == "v2" else "STANDING_CHARGE"
    return [*rows, _standing(item.start, standing_label)]


def _cursor(index: int) -> str:
    return base64.b64encode(f"arrayconnection:{index}".encode()).decode()


def _index(cursor: str) -> int:
    try:
        text = base64.b64decode(cursor.encode(), validate=True).decode()
        prefix, _, number = text.partition(":")
        if prefix != "arrayconnection":
            raise ValueError(cursor)
        return int(number)
    except ValueError:
        # The live error for a bad cursor is not known; a validation error is the closest.
        raise KrakenError("KT-CT-1137", f"Invalid cursor {cursor!r}.", "VALIDATION") from None


def _stamp(instant: datetime, timezone: str | None) -> str:
    zone = LONDON if timezone == "Europe/London" else UTC
    return instant.astimezone(zone).isoformat()


def measurements(
    state: SimulatorState,
    account: str,
    *,
    first: int | None,
    after: str | None,
    start_at: datetime,
    end_at: datetime,
    timezone: str | None,
    mpan: str | None,
    frequency: str,
) -> dict[str, Any]:
    """The ``measurements`` connection for one account, as the live API shapes it."""
    if frequency not in ("THIRTY_MIN_INTERVAL", "RAW_INTERVAL"):
        raise KrakenError("KT-CT-7899", f"{frequency} readings are not simulated.", "INTERNAL")
    if first is None or first < 1:
        raise KrakenError("KT-CT-1137", "Please provide 'first' (1 or more).", "VALIDATION")
    settings = ledger_settings(state)
    settled_until = _floor(state.now() - SETTLEMENT_LAG)
    billed = []
    if mpan in (None, mpan_for(state, account)):
        completed = [c for c in state.completed if c.account == account]
        upper = min(end_at, settled_until)
        billed = bill(completed, start_at, upper, home_bonus=settings.home_bonus)
    strip = end_at - start_at > MAX_WINDOW
    offset = 0 if after is None else _index(after) + 1
    page = billed[offset : offset + first]
    edges = []
    for position, item in enumerate(page, start=offset):
        override = settings.rebills.get((account, item.start))
        if override:
            item = BilledHalfHour(
                item.start,
                override.get("home", item.home_band),
                override.get("car", item.car_band),
                item.home_kwh,
                item.car_kwh,
            )
        unknown = settings.unknown_labels.get((account, item.start))
        stats = [] if strip else statistics_for(item, settings, unknown)
        node = {
            "__typename": "IntervalMeasurementType",
            "value": _decimal(item.home_kwh + item.car_kwh, 4),
            "unit": "kWh",
            "readAt": _stamp(item.start, timezone),
            "source": "SMART_METER",
            "startAt": _stamp(item.start, timezone),
            "endAt": _stamp(item.start + HALF_HOUR, timezone),
            "durationInSeconds": 1800,
            "metaData": {"statistics": stats},
        }
        edges.append({"node": node, "cursor": _cursor(position)})
    return {
        "edges": edges,
        "pageInfo": {
            "hasNextPage": offset + first < len(billed),
            "hasPreviousPage": offset > 0,
            "startCursor": edges[0]["cursor"] if edges else None,
            "endCursor": edges[-1]["cursor"] if edges else None,
        },
    }


# --- resolvers -------------------------------------------------------------------------------


def _graphql_errors(error: KrakenError) -> GraphQLError:
    return GraphQLError(error.message, extensions=error.extensions())


def _account(context: Any, accountNumber: str) -> dict[str, Any]:
    context.require_access(accountNumber)
    return {"number": accountNumber}


def _properties(root: dict[str, Any], info: GraphQLResolveInfo[Any]) -> list[dict[str, Any]]:
    return [{"id": "sim-property-1", "address": "1 Simulated Street", "account": root["number"]}]


def _measurements(
    root: dict[str, Any], info: GraphQLResolveInfo[Any], **args: Any
) -> dict[str, Any]:
    state: SimulatorState = info.context.state
    try:
        if args.get("startAt") is None or args.get("endAt") is None:
            raise KrakenError(
                "KT-CT-1137", "Please provide the right combination of input fields.", "VALIDATION"
            )
        mpan, frequency = None, "RAW_INTERVAL"
        for item in args.get("utilityFilters") or []:
            electricity = (item or {}).get("electricityFilters") or {}
            mpan = electricity.get("marketSupplyPointId", mpan)
            frequency = electricity.get("readingFrequencyType", frequency)
        return measurements(
            state,
            str(root["account"]),
            first=args.get("first"),
            after=args.get("after"),
            start_at=parse_iso(str(args["startAt"])),
            end_at=parse_iso(str(args["endAt"])),
            timezone=args.get("timezone"),
            mpan=mpan,
            frequency=str(frequency),
        )
    except KrakenError as exc:
        raise _graphql_errors(exc) from None


def attach_ledger(schema: GraphQLSchema) -> None:
    """Resolvers for the ledger block of schema.graphql. ``Query.account`` is shared with the
    agreements block: its resolver is set only if none is."""
    query = schema.type_map["Query"]
    account_type = schema.type_map["AccountType"]
    property_type = schema.type_map["PropertyType"]
    assert isinstance(query, GraphQLObjectType)
    assert isinstance(account_type, GraphQLObjectType)
    assert isinstance(property_type, GraphQLObjectType)
    # Imported here: graphql_api imports this module to call attach_ledger.
    from ioagent.simulator.graphql_api import _kraken_field

    if query.fields["account"].resolve is None:
        query.fields["account"].resolve = _kraken_field(_account)
    account_type.fields["properties"].resolve = _properties
    property_type.fields["measurements"].resolve = _measurements
