"""The simulator's products: each account's electricity agreements, the agreements query and
the public products REST endpoints, with the live shapes (docs/tariff.md, docs/simulator.md).

An account starts on the legacy product unless told otherwise; ``migrate`` moves it to another
product at an instant, the way Octopus migrates accounts itself: the agreement in force ends
and a new one starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import web

from ioagent.timeutil import iso_z, parse_iso

SimProduct = Literal["legacy", "four_rate"]
PRODUCT_CODES: dict[SimProduct, str] = {
    "legacy": "INTELLI-VAR-24-10-29",
    "four_rate": "IOG-SMB-VAR-24-10-29",
}
REGION = "H"
FIRST_VALID_FROM = datetime(2024, 10, 29, tzinfo=UTC)
LONDON = ZoneInfo("Europe/London")

LEGACY_NIGHT_RATE = 7.0
LEGACY_DAY_RATE = 27.5
FOUR_RATE_VALUES: dict[str, float] = {
    "day-unit-rates": 30.371355,
    "night-unit-rates": 6.89997,
    "ev-device-peak-unit-rates": 27.4785,
    "ev-device-off-peak-unit-rates": 6.89997,
}
FOUR_RATE_FEEDS = tuple(FOUR_RATE_VALUES)
LEGACY_FEED = "standard-unit-rates"
PAGE_SIZE = 100


def tariff_code(product_code: str) -> str:
    return f"E-1R-{product_code}-{REGION}"


def family_of(product_code: str) -> SimProduct | None:
    for family, code in PRODUCT_CODES.items():
        if code == product_code:
            return family
    return None


@dataclass
class SimAgreement:
    product_code: str
    valid_from: datetime
    valid_to: datetime | None = None

    @property
    def tariff_code(self) -> str:
        return tariff_code(self.product_code)

    def active(self, now: datetime) -> bool:
        return self.valid_to is None or self.valid_to > now


@dataclass
class SimTariffs:
    """Agreements per account, and the rate values the REST endpoints serve."""

    agreements: dict[str, list[SimAgreement]] = field(default_factory=dict)
    mpans: dict[str, str] = field(default_factory=dict)
    rate_overrides: dict[str, float] = field(default_factory=dict)
    """Feed name -> value, to change what a four-rate feed serves (control API)."""
    failing_feeds: set[str] = field(default_factory=set)
    """Feed names that answer HTTP 502 (a fault for the rates refresh)."""

    def open(self, account: str, product: SimProduct, at: datetime = FIRST_VALID_FROM) -> None:
        self.agreements.setdefault(account, []).append(SimAgreement(PRODUCT_CODES[product], at))
        self.mpans.setdefault(account, f"19000000{len(self.mpans) + 1:05d}")

    def migrate(self, account: str, product: SimProduct, at: datetime) -> SimAgreement:
        """End the agreement in force at ``at`` and start one on ``product``."""
        if account not in self.agreements:
            raise LookupError(f"unknown account {account}")
        if product not in PRODUCT_CODES:
            raise ValueError(f"product must be one of {', '.join(PRODUCT_CODES)}")
        for agreement in self.agreements[account]:
            if agreement.valid_to is None or agreement.valid_to > at:
                agreement.valid_to = at
        new = SimAgreement(PRODUCT_CODES[product], at)
        self.agreements[account].append(new)
        return new

    def active_for(self, account: str, now: datetime) -> list[SimAgreement]:
        return [a for a in self.agreements.get(account, []) if a.active(now)]

    def product_at(self, account: str, now: datetime) -> str | None:
        current = [
            a
            for a in self.agreements.get(account, [])
            if a.valid_from <= now and (a.valid_to is None or now < a.valid_to)
        ]
        return current[-1].product_code if current else None

    def snapshot(self) -> dict[str, Any]:
        return {
            account: [
                {
                    "product_code": a.product_code,
                    "tariff_code": a.tariff_code,
                    "valid_from": iso_z(a.valid_from),
                    "valid_to": None if a.valid_to is None else iso_z(a.valid_to),
                }
                for a in items
            ]
            for account, items in self.agreements.items()
        }


# --- GraphQL -------------------------------------------------------------------------------------


def agreement_data(agreement: SimAgreement, mpan: str) -> dict[str, Any]:
    # Agreements come back with local (Europe/London) offsets, like other Kraken date-times.
    return {
        "id": abs(hash((agreement.product_code, agreement.valid_from))) % 10_000_000,
        "validFrom": agreement.valid_from.astimezone(LONDON).isoformat(),
        "validTo": None
        if agreement.valid_to is None
        else agreement.valid_to.astimezone(LONDON).isoformat(),
        "meterPoint": {"id": mpan, "mpan": mpan},
        "tariff": {
            "__typename": "HalfHourlyTariff",
            "id": agreement.tariff_code,
            "displayName": "Intelligent Octopus Go",
            "fullName": "Intelligent Octopus Go",
            "productCode": agreement.product_code,
            "tariffCode": agreement.tariff_code,
        },
    }


# --- REST ------------------------------------------------------------------------------------------


def _page(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"count": len(results), "next": None, "previous": None, "results": results}


def _flat(value: float) -> dict[str, Any]:
    return {
        "value_exc_vat": round(value / 1.05, 6),
        "value_inc_vat": value,
        "valid_from": iso_z(FIRST_VALID_FROM),
        "valid_to": None,
        "payment_method": None,
    }


def legacy_windows(period_from: datetime, period_to: datetime) -> list[dict[str, Any]]:
    """Legacy ``standard-unit-rates``: night 23:30-05:30 London and day entries, newest first."""
    entries = []
    day = period_from.astimezone(LONDON).date() - timedelta(days=1)
    last = period_to.astimezone(LONDON).date() + timedelta(days=1)
    while day <= last:
        night_start = datetime.combine(day, time(23, 30), tzinfo=LONDON).astimezone(UTC)
        night_end = datetime.combine(day + timedelta(days=1), time(5, 30), tzinfo=LONDON)
        day_end = datetime.combine(day + timedelta(days=1), time(23, 30), tzinfo=LONDON)
        for start, end, value in (
            (night_start, night_end.astimezone(UTC), LEGACY_NIGHT_RATE),
            (night_end.astimezone(UTC), day_end.astimezone(UTC), LEGACY_DAY_RATE),
        ):
            if start < period_to and end > period_from:
                entries.append(
                    {
                        "value_exc_vat": round(value / 1.05, 6),
                        "value_inc_vat": value,
                        "valid_from": iso_z(start),
                        "valid_to": iso_z(end),
                        "payment_method": None,
                    }
                )
        day += timedelta(days=1)
    return sorted(entries, key=lambda e: str(e["valid_from"]), reverse=True)


def _not_found() -> web.Response:
    return web.json_response({"detail": "Not found."}, status=404)


def _time_param(request: web.Request, name: str, default: datetime) -> datetime:
    text = request.query.get(name)
    if not text:
        return default
    try:
        return parse_iso(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: not an ISO-8601 date-time") from None


def product_json(product_code: str) -> dict[str, Any] | None:
    family = family_of(product_code)
    if family is None:
        return None
    code = tariff_code(product_code)
    base = f"/v1/products/{product_code}/electricity-tariffs/{code}/"
    feeds = FOUR_RATE_FEEDS if family == "four_rate" else (LEGACY_FEED,)
    tariff = {
        "code": code,
        "links": [
            {"href": base + f"{feed}/", "method": "GET", "rel": feed.replace("-", "_")}
            for feed in (*feeds, "standing-charges")
        ],
    }
    group = (
        "four_rate_ev_electricity_tariffs"
        if family == "four_rate"
        else "single_register_electricity_tariffs"
    )
    return {
        "code": product_code,
        "display_name": "Intelligent Octopus Go",
        "full_name": "Intelligent Octopus Go",
        "is_variable": True,
        group: {f"_{REGION}": {"direct_debit_monthly": tariff}},
    }


def rest_handlers(tariffs: SimTariffs, now: Any) -> list[web.RouteDef]:
    """The products routes; ``now`` is the simulator's clock (a callable)."""

    async def product(request: web.Request) -> web.StreamResponse:
        body = product_json(request.match_info["product"])
        return _not_found() if body is None else web.json_response(body)

    async def rates(request: web.Request) -> web.StreamResponse:
        product_code = request.match_info["product"]
        family = family_of(product_code)
        if family is None or request.match_info["tariff"] != tariff_code(product_code):
            return _not_found()
        feed = request.match_info["feed"]
        if feed in tariffs.failing_feeds:
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>")
        if family == "four_rate":
            if feed == LEGACY_FEED:
                return web.json_response(_page([]))  # count 0 on a four-rate tariff
            if feed not in FOUR_RATE_VALUES:
                return _not_found()
            value = tariffs.rate_overrides.get(feed, FOUR_RATE_VALUES[feed])
            return web.json_response(_page([_flat(value)]))
        if feed != LEGACY_FEED:
            return _not_found()
        current = now()
        start = _time_param(request, "period_from", current - timedelta(days=1))
        end = _time_param(request, "period_to", current + timedelta(days=1))
        return web.json_response(_page(legacy_windows(start, end)[:PAGE_SIZE]))

    return [
        web.get("/v1/products/{product}/", product),
        web.get("/v1/products/{product}/electricity-tariffs/{tariff}/{feed}/", rates),
    ]


__all__ = [
    "PRODUCT_CODES",
    "SimAgreement",
    "SimProduct",
    "SimTariffs",
    "agreement_data",
    "legacy_windows",
    "product_json",
    "rest_handlers",
    "tariff_code",
]
