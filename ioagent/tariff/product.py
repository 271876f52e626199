"""Which Intelligent Octopus Go product the account is on, as pure functions.

Octopus moved Intelligent Octopus Go to four-rate products (``IOG-SMB-…``) in 2026 and
migrates accounts itself; legacy products are ``INTELLI-…``. The product decides the rules
(``ioagent.tariff.signals``). Everything here takes ``now``; the agreements are read by the
runtime.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from ioagent.kraken.types import Agreement
from ioagent.timeutil import iso_z, parse_iso, to_utc

Family = Literal["legacy", "four_rate", "other"]
ProductSetting = Literal["auto", "legacy", "four_rate"]
Source = Literal["account", "config", "default"]

FOUR_RATE_PREFIX = "IOG-SMB-"
LEGACY_PREFIX = "INTELLI-"

DEFAULT_FAMILY: Family = "four_rate"
"""The rules used while no product is known (no agreement read yet, none stored): the
four-rate rules never call a half-hour cheap that the legacy rules would not, so a battery that
trusts them can lose a bonus but never pays the standard rate by mistake."""


def classify(product_code: str | None, tariff_code: str | None = None) -> Family:
    """``four_rate`` (``IOG-SMB-…``), ``legacy`` (``INTELLI-…``) or ``other``.

    The product code decides; a tariff code (``E-1R-IOG-SMB-VAR-24-10-29-H``) is used only
    when the product code is missing.
    """
    if product_code:
        code = product_code.upper()
        if code.startswith(FOUR_RATE_PREFIX):
            return "four_rate"
        if code.startswith(LEGACY_PREFIX):
            return "legacy"
        return "other"
    if tariff_code:
        code = tariff_code.upper()
        if f"-{FOUR_RATE_PREFIX}" in code:
            return "four_rate"
        if f"-{LEGACY_PREFIX}" in code:
            return "legacy"
    return "other"


def in_force(agreements: Iterable[Agreement], now: datetime) -> Agreement | None:
    """The agreement in force at ``now``: the latest-starting one whose validity holds it."""
    now = to_utc(now)
    current = [a for a in agreements if a.in_force(now)]
    if not current:
        return None
    return max(current, key=lambda a: a.valid_from or datetime.min.replace(tzinfo=now.tzinfo))


@dataclass(frozen=True)
class Product:
    """The account's product as ioagent uses it (published on ``{base}/{acct}/tariff``)."""

    family: Family
    product: str | None
    tariff: str | None
    source: Source
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    mpan: str | None = None

    def as_json(self) -> str:
        """The retained ``tariff`` topic (the MPAN is kept in the store, not published)."""
        return json.dumps(
            {
                "product": self.product,
                "tariff": self.tariff,
                "family": self.family,
                "source": self.source,
                "valid_from": None if self.valid_from is None else iso_z(self.valid_from),
                "valid_to": None if self.valid_to is None else iso_z(self.valid_to),
            },
            sort_keys=True,
        )

    def stored_json(self) -> str:
        data: dict[str, Any] = json.loads(self.as_json())
        data["mpan"] = self.mpan
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Product | None:
        """A product stored by :meth:`stored_json`; None when unreadable."""
        try:
            data = json.loads(text)
            family = data["family"]
            source = data["source"]
            if family not in ("legacy", "four_rate", "other") or source not in (
                "account",
                "config",
                "default",
            ):
                return None
            return cls(
                family=family,
                product=data.get("product"),
                tariff=data.get("tariff"),
                source=source,
                valid_from=parse_iso(data["valid_from"]) if data.get("valid_from") else None,
                valid_to=parse_iso(data["valid_to"]) if data.get("valid_to") else None,
                mpan=data.get("mpan"),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def from_agreement(agreement: Agreement) -> Product:
    return Product(
        family=classify(agreement.product_code, agreement.tariff_code),
        product=agreement.product_code,
        tariff=agreement.tariff_code,
        source="account",
        valid_from=agreement.valid_from,
        valid_to=agreement.valid_to,
        mpan=agreement.mpan,
    )


def resolve(setting: ProductSetting, known: Product | None) -> Product:
    """The product to apply: ``[tariff] product`` overrides what the account says.

    ``known`` is the product last read from the account (this run or a stored one). An
    override keeps the codes read from the account, so the rates can still be looked up.
    """
    if setting != "auto":
        if known is not None and known.family == setting:
            return Product(
                setting,
                known.product,
                known.tariff,
                "config",
                known.valid_from,
                known.valid_to,
                known.mpan,
            )
        return Product(setting, None, None, "config")
    if known is not None:
        return known
    return Product(DEFAULT_FAMILY, None, None, "default")


__all__ = [
    "DEFAULT_FAMILY",
    "Family",
    "Product",
    "ProductSetting",
    "Source",
    "classify",
    "from_agreement",
    "in_force",
    "resolve",
]
