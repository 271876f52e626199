"""Parse Octopus's measurements pages into one :class:`SettledHalfHour` per half-hour.

The response (``account → properties → measurements``) holds interval nodes, each with a
``metaData.statistics`` list. Consumption money arrives as ``TOU_BUCKET_COST`` rows (one per
bucket; on four-rate accounts all four come every half-hour, zero where unused), or on some
accounts as ``CONSUMPTION_COST`` rows; ``STANDING_CHARGE_COST`` rows carry the standing charge.
``value`` is kWh; ``estimatedAmount`` and ``pricePerUnit.amount`` are **pence**, whatever
``costCurrency`` says.

The band of a side (home, car) in a half-hour:

* a label ioagent does not know anywhere in the half-hour makes both bands ``unknown``: the
  half-hour is kept, never counted as peak or off-peak, and the label is reported;
* the bucket that carries energy gives the band; both carrying energy is ``split`` (a
  half-hour billed partly low, partly standard, as when the car's allowance runs out in it);
* with no energy on that side, a single stated bucket still gives the band (legacy accounts
  state one label per half-hour, zero kWh or not); two zero buckets state none: ``none``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

from ioagent.ledger.labels import CAR, FLAT, HOME, LOW, STANDARD, BucketKind, classify_label
from ioagent.timeutil import parse_iso

HALF_HOUR: Final = timedelta(minutes=30)
BUCKET_STATISTIC: Final = "TOU_BUCKET_COST"
CONSUMPTION_STATISTIC: Final = "CONSUMPTION_COST"
STANDING_STATISTIC: Final = "STANDING_CHARGE_COST"
COST_STATISTICS: Final = (BUCKET_STATISTIC, CONSUMPTION_STATISTIC)

Band = Literal["low", "standard", "split", "none", "unknown"]
UNKNOWN: Final = "unknown"
SPLIT: Final = "split"
NONE: Final = "none"
COMPARABLE_BANDS: Final = (LOW, STANDARD)
BUCKET_NAMES: Final = ("home low", "home standard", "car low", "car standard")
"""The four-rate buckets, in display order; legacy labels map onto the two home ones."""


class MeasurementShapeError(ValueError):
    """A node does not have the shape the measurements API documents (missing startAt...)."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One consumption-cost statistic of a half-hour."""

    label: str
    name: str
    """``home low`` … ``car standard``, ``home flat``; ``unknown`` for an unknown label."""
    kwh: float
    pence: float
    """Cost including tax, in pence."""
    price_pence: float | None
    """Price per kWh including tax, in pence, when stated."""

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            "kwh": self.kwh,
            "pence": self.pence,
            "price_pence": self.price_pence,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Bucket:
        price = data.get("price_pence")
        return cls(
            label=str(data["label"]),
            name=str(data["name"]),
            kwh=float(data["kwh"]),
            pence=float(data["pence"]),
            price_pence=None if price is None else float(price),
        )


@dataclass(frozen=True, slots=True)
class SettledHalfHour:
    """What Octopus billed for one half-hour of the import meter."""

    start: datetime
    end: datetime
    home_band: Band
    car_band: Band
    buckets: tuple[Bucket, ...]
    standing_pence: float
    unknown_labels: tuple[str, ...] = ()

    @property
    def home_kwh(self) -> float:
        return sum(b.kwh for b in self.buckets if b.name.startswith(HOME))

    @property
    def car_kwh(self) -> float:
        return sum(b.kwh for b in self.buckets if b.name.startswith(CAR))

    @property
    def cost_pence(self) -> float:
        """Consumption cost, every bucket (unknown ones included: they were billed)."""
        return sum(b.pence for b in self.buckets)

    @property
    def unknown(self) -> bool:
        return bool(self.unknown_labels)

    def same_settlement(self, other: SettledHalfHour) -> bool:
        """Equal billing (a re-fetch that changed nothing is not a re-bill)."""
        return (
            self.home_band == other.home_band
            and self.car_band == other.car_band
            and self.buckets == other.buckets
            and round(self.standing_pence, 6) == round(other.standing_pence, 6)
        )


@dataclass(frozen=True, slots=True)
class ParsedPage:
    half_hours: list[SettledHalfHour]
    unknown_labels: list[str] = field(default_factory=list)
    """Each unknown label once, in order of first appearance."""
    without_statistics: list[datetime] = field(default_factory=list)
    """Starts of nodes that came without cost statistics (the API strips them from long
    windows): not settlements; fetch them again in a smaller window."""
    has_next_page: bool = False
    end_cursor: str | None = None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or value is None:
        raise MeasurementShapeError(f"{what} is not a number: {value!r}")
    try:
        return float(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        raise MeasurementShapeError(f"{what} is not a number: {value!r}") from None


def _amounts(statistic: Mapping[str, Any]) -> tuple[float, float | None]:
    money = statistic.get("costInclTax")
    if not isinstance(money, Mapping):
        money = statistic.get("costExclTax")
    if not isinstance(money, Mapping):
        return 0.0, None
    amount = money.get("estimatedAmount")
    pence = 0.0 if amount is None else _number(amount, "estimatedAmount")
    per_unit = money.get("pricePerUnit")
    price = None
    if isinstance(per_unit, Mapping) and per_unit.get("amount") is not None:
        price = _number(per_unit["amount"], "pricePerUnit.amount")
    return pence, price


def _side_band(buckets: Sequence[tuple[BucketKind, Bucket]], side: str) -> Band:
    stated = [(kind, bucket) for kind, bucket in buckets if kind.side == side]
    bands = {kind.band for kind, _ in stated if kind.band != FLAT}
    if not bands:
        return NONE
    carrying = {kind.band for kind, bucket in stated if kind.band != FLAT and bucket.kwh > 0}
    if len(carrying) == 2:
        return SPLIT
    if len(carrying) == 1:
        return LOW if LOW in carrying else STANDARD
    if len(bands) == 1:
        return LOW if LOW in bands else STANDARD
    return NONE


def parse_node(node: Mapping[str, Any]) -> SettledHalfHour | None:
    """One interval node → its half-hour, or None if it carries no cost statistics."""
    start_text, end_text = node.get("startAt"), node.get("endAt")
    if not isinstance(start_text, str):
        raise MeasurementShapeError(f"measurement node without startAt: {dict(node)!r}")
    start = parse_iso(start_text)
    end = parse_iso(end_text) if isinstance(end_text, str) else start + HALF_HOUR
    if end - start != HALF_HOUR:
        raise MeasurementShapeError(
            f"measurement {start_text} is not a half-hour (ends {end_text}); "
            "ask for THIRTY_MIN_INTERVAL readings"
        )
    meta = node.get("metaData")
    statistics = meta.get("statistics") if isinstance(meta, Mapping) else None
    if not isinstance(statistics, list) or not statistics:
        return None
    rows = [s for s in statistics if isinstance(s, Mapping)]
    types = {s.get("type") for s in rows}
    # TOU buckets are the apportioned consumption cost; a CONSUMPTION_COST row beside them
    # would count the same money twice, so it is used only on accounts that send no buckets.
    cost_type = BUCKET_STATISTIC if BUCKET_STATISTIC in types else CONSUMPTION_STATISTIC
    known: list[tuple[BucketKind, Bucket]] = []
    unknown: list[Bucket] = []
    standing = 0.0
    for statistic in rows:
        kind_of_row = statistic.get("type")
        if kind_of_row == STANDING_STATISTIC:
            standing += _amounts(statistic)[0]
            continue
        if kind_of_row != cost_type:
            continue  # carbon, breakdowns...: not money ioagent bills
        label = str(statistic.get("label") or "")
        value = statistic.get("value")
        kwh = 0.0 if value is None else _number(value, f"value of {label!r}")
        pence, price = _amounts(statistic)
        kind = classify_label(label)
        if kind is None:
            unknown.append(Bucket(label, UNKNOWN, kwh, pence, price))
        else:
            known.append((kind, Bucket(label, kind.name, kwh, pence, price)))
    buckets = tuple([bucket for _, bucket in known] + unknown)
    if not buckets and standing == 0.0 and STANDING_STATISTIC not in types:
        return None
    if unknown:
        labels = tuple(dict.fromkeys(b.label for b in unknown))
        return SettledHalfHour(start, end, UNKNOWN, UNKNOWN, buckets, standing, labels)
    return SettledHalfHour(
        start, end, _side_band(known, HOME), _side_band(known, CAR), buckets, standing
    )


def _nodes(data: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]], bool, str | None]:
    account = data.get("account")
    if not isinstance(account, Mapping):
        raise MeasurementShapeError("response has no account")
    properties = account.get("properties")
    if not isinstance(properties, list):
        raise MeasurementShapeError("account has no properties list")
    nodes: list[Mapping[str, Any]] = []
    has_next, cursor = False, None
    for prop in properties:
        measurements = prop.get("measurements") if isinstance(prop, Mapping) else None
        if not isinstance(measurements, Mapping):
            continue
        for edge in measurements.get("edges") or []:
            node = edge.get("node") if isinstance(edge, Mapping) else None
            if isinstance(node, Mapping):
                nodes.append(node)
        info = measurements.get("pageInfo")
        if isinstance(info, Mapping) and info.get("hasNextPage"):
            has_next = True
            end_cursor = info.get("endCursor")
            cursor = end_cursor if isinstance(end_cursor, str) else None
    return nodes, has_next, cursor


def parse_nodes(nodes: Iterable[Mapping[str, Any]]) -> ParsedPage:
    half_hours: dict[datetime, SettledHalfHour] = {}
    unknown: dict[str, None] = {}
    stripped: list[datetime] = []
    for node in nodes:
        parsed = parse_node(node)
        if parsed is None:
            start = node.get("startAt")
            if isinstance(start, str):
                stripped.append(parse_iso(start))
            continue
        half_hours[parsed.start] = parsed
        unknown.update(dict.fromkeys(parsed.unknown_labels))
    return ParsedPage(
        sorted(half_hours.values(), key=lambda h: h.start), list(unknown), sorted(stripped)
    )


def parse_measurements(data: Mapping[str, Any]) -> ParsedPage:
    """A whole response's ``data`` (``{"account": {"properties": [...]}}``) → one page."""
    nodes, has_next, cursor = _nodes(data)
    page = parse_nodes(nodes)
    return ParsedPage(
        page.half_hours, page.unknown_labels, page.without_statistics, has_next, cursor
    )


def merge_pages(pages: Iterable[ParsedPage]) -> ParsedPage:
    """Several pages (cursor pages, windows) → one, later pages winning for a half-hour."""
    half_hours: dict[datetime, SettledHalfHour] = {}
    unknown: dict[str, None] = {}
    stripped: set[datetime] = set()
    for page in pages:
        for item in page.half_hours:
            half_hours[item.start] = item
        unknown.update(dict.fromkeys(page.unknown_labels))
        stripped.update(page.without_statistics)
    stripped.difference_update(half_hours)
    return ParsedPage(
        sorted(half_hours.values(), key=lambda h: h.start), list(unknown), sorted(stripped)
    )
