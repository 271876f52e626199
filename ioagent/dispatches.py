"""``ioagent dispatches`` with the tariff: the product, the car allowance and the rates.

The Kraken side (``ioagent.kraken.cli``) reads and prints the plan; this adds what the
account's product makes of it, with the same pure rules the daemon uses.
"""

from __future__ import annotations

import argparse
from typing import Any

from ioagent.config import Settings
from ioagent.kraken.cli import Report
from ioagent.kraken.cli import cli_dispatches as kraken_dispatches
from ioagent.tariff.evidence import evidence_from
from ioagent.tariff.product import from_agreement, in_force, resolve
from ioagent.tariff.rates import FEED_PATHS, RateFeeds, rate_at
from ioagent.tariff.signals import ProductRules, evaluate
from ioagent.timeutil import iso_z


def tariff_summary(report: Report, settings: Settings) -> tuple[list[str], dict[str, Any]]:
    """Lines for the table and a ``tariff`` key for the JSON."""
    now = report.fetched_at
    agreement = in_force(report.agreements or [], now)
    known = from_agreement(agreement) if agreement is not None else None
    product = resolve(settings.tariff.product, known)
    plan = [slot for plan in report.result.planned.values() if plan for slot in plan]
    completed = report.result.completed or []
    device = next((d for d in report.devices if d.preferences is not None), None)
    capped = device.preferences.charging_duration_capped if device and device.preferences else None
    rules = ProductRules.from_settings(settings.tariff, product.family, capped)
    charging = (
        [now] if any(d.current_state == "SMART_CONTROL_IN_PROGRESS" for d in report.devices) else []
    )
    state = evaluate(
        rules,
        [*plan, *(c.as_dispatch() for c in completed)],
        evidence_from(completed, charging),
        now,
    )
    bands = {band: report.rate_feeds.get(path, []) for band, path in FEED_PATHS.items()}
    feeds = RateFeeds(product.family, product.tariff, bands) if report.rate_feeds else None
    home, ev = rate_at(feeds, now, state.offpeak, state.ev_offpeak)

    if report.agreements is None:
        source = f"agreements could not be read ({report.agreements_error})"
    else:
        source = product.source
    lines = [
        "",
        f"Tariff: {product.product or '?'} ({product.tariff or '?'}), rules: {product.family}, "
        f"from: {source}",
        f"  now:       home {'off-peak' if state.offpeak else 'peak'} ({state.confidence}), "
        f"car {'off-peak' if state.ev_offpeak else 'standard'}",
    ]
    allowance = state.allowance
    if allowance is not None:
        exhausted = iso_z(allowance.exhausted_at) if allowance.exhausted_at else "not by this plan"
        lines.append(
            f"  allowance: {allowance.remaining:.2f} h left of {allowance.hours:g} h "
            f"(used {allowance.used:.2f} h), resets {iso_z(allowance.resets_at)}, "
            f"used up {exhausted}"
        )
    if report.rates_error:
        lines.append(f"  rates:     could not be read ({report.rates_error})")
    else:
        lines.append(f"  rates:     home {_pence(home)}, car {_pence(ev)} (p/kWh incl. VAT)")
    extra = {
        "tariff": {
            "product": product.product,
            "tariff": product.tariff,
            "family": product.family,
            "source": product.source,
            "offpeak": state.offpeak,
            "ev_offpeak": state.ev_offpeak,
            "confidence": state.confidence,
            "allowance": None
            if allowance is None
            else {
                "remaining": round(allowance.remaining, 2),
                "used": round(allowance.used, 2),
                "resets_at": iso_z(allowance.resets_at),
                "exhausted_at": iso_z(allowance.exhausted_at) if allowance.exhausted_at else None,
            },
            "rate_home": home,
            "rate_ev": ev,
            "errors": {
                key: value
                for key, value in (
                    ("agreements", report.agreements_error),
                    ("rates", report.rates_error),
                )
                if value
            },
        }
    }
    return lines, extra


def _pence(value: float | None) -> str:
    return "unknown" if value is None else f"{value:g}p"


def cli_dispatches(args: argparse.Namespace) -> int:
    return kraken_dispatches(args, summary=tariff_summary)


__all__ = ["cli_dispatches", "tariff_summary"]
