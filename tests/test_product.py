"""The account's product: classification, the agreement in force, overrides (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ioagent.kraken.types import Agreement, parse_agreements
from ioagent.tariff.product import Product, classify, from_agreement, in_force, resolve


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("product", "tariff", "family"),
    [
        ("IOG-SMB-TOU-25-12-12", None, "four_rate"),
        ("IOG-SMB-VAR-24-10-29", "E-1R-IOG-SMB-VAR-24-10-29-H", "four_rate"),
        ("IOG-SMB-FIX-12M-26-03-17", None, "four_rate"),
        ("INTELLI-VAR-24-10-29", "E-1R-INTELLI-VAR-24-10-29-A", "legacy"),
        ("INTELLI-BB-VAR-23-03-01", None, "legacy"),
        ("INTELLI-FIX-12M-24-01-01", None, "legacy"),
        ("AGILE-24-10-01", "E-1R-AGILE-24-10-01-H", "other"),
        ("VAR-22-11-01", None, "other"),
        (None, "E-1R-IOG-SMB-VAR-24-10-29-H", "four_rate"),
        (None, "E-1R-INTELLI-VAR-24-10-29-A", "legacy"),
        (None, None, "other"),
        ("iog-smb-var-24-10-29", None, "four_rate"),
    ],
)
def test_classify(product: str | None, tariff: str | None, family: str) -> None:
    assert classify(product, tariff) == family


OLD = Agreement(
    "INTELLI-VAR-24-10-29",
    "E-1R-INTELLI-VAR-24-10-29-H",
    utc("2024-10-29 00:00"),
    utc("2026-07-05 23:00"),
    "1900000000001",
)
NEW = Agreement(
    "IOG-SMB-VAR-24-10-29",
    "E-1R-IOG-SMB-VAR-24-10-29-H",
    utc("2026-07-05 23:00"),
    None,
    "1900000000001",
)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2026-07-05 22:59:59", OLD),
        ("2026-07-05 23:00", NEW),
        ("2027-01-01 00:00", NEW),
        ("2024-10-28 00:00", None),
    ],
)
def test_agreement_in_force(now: str, expected: Agreement | None) -> None:
    assert in_force([NEW, OLD], utc(now)) == expected


def test_resolve_auto_uses_the_account_then_the_default() -> None:
    known = from_agreement(NEW)
    assert resolve("auto", known) == known
    assert known.source == "account" and known.family == "four_rate"
    default = resolve("auto", None)
    assert (default.family, default.source, default.product) == ("four_rate", "default", None)


def test_resolve_override_keeps_matching_codes_only() -> None:
    known = from_agreement(NEW)
    same = resolve("four_rate", known)
    assert (same.family, same.source, same.tariff) == ("four_rate", "config", known.tariff)
    other = resolve("legacy", known)
    assert (other.family, other.source, other.tariff) == ("legacy", "config", None)


def test_product_json_round_trip_keeps_the_mpan_out_of_the_topic() -> None:
    product = from_agreement(NEW)
    assert "1900000000001" not in product.as_json()
    assert Product.from_json(product.stored_json()) == product
    assert Product.from_json("not json") is None
    assert Product.from_json('{"family": "weird", "source": "account"}') is None


def test_parse_agreements_live_shape() -> None:
    raw = [
        {
            "validFrom": "2026-07-06T00:00:00+01:00",
            "validTo": None,
            "meterPoint": {"mpan": "1900000000001"},
            "tariff": {
                "productCode": "IOG-SMB-VAR-24-10-29",
                "tariffCode": "E-1R-IOG-SMB-VAR-24-10-29-H",
            },
        },
        {"validFrom": "not a date"},
        {"validFrom": None, "tariff": {}},
    ]
    parsed = parse_agreements(raw)
    assert len(parsed) == 2, "the malformed one is skipped"
    assert parsed[-1] == NEW
    assert parsed[0].product_code is None and classify(parsed[0].product_code) == "other"
