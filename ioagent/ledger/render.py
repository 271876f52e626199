"""``ioagent ledger`` output, as pure functions of stored rows and signals (80 columns).

Two views: a table of days (kWh and £ per bucket, standing charge, total, agreement), and
one day's half-hours, each with the signal against the bill and every disagreement's reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, Final
from zoneinfo import ZoneInfo

from ioagent.ledger.parse import BUCKET_NAMES, SettledHalfHour
from ioagent.ledger.reconcile import (
    FIXED_WINDOW,
    Comparison,
    Reconciliation,
    Transitions,
    reconcile,
)
from ioagent.ledger.summary import PeriodTotals, day_totals
from ioagent.ledger.windows import LONDON, local_day
from ioagent.timeutil import iso_z

WIDTH: Final = 80
SHORT: Final = {"home low": "home low", "home standard": "home std", "car low": "car low",
                "car standard": "car std"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class LedgerDay:
    day: date
    totals: PeriodTotals
    agreement: Reconciliation


@dataclass(frozen=True, slots=True)
class AccountLedger:
    account: str
    days: list[LedgerDay]


def ledger_days(
    rows: Sequence[SettledHalfHour],
    days: Sequence[date],
    home: Transitions,
    car: Transitions,
    *,
    window: tuple[time, time] = FIXED_WINDOW,
    zone: ZoneInfo = LONDON,
) -> list[LedgerDay]:
    result = []
    for day in days:
        totals = day_totals(rows, day, zone)
        inside = [r for r in rows if local_day(r.start, zone) == day]
        result.append(
            LedgerDay(day, totals, reconcile(inside, home, car, window=window, zone=zone))
        )
    return result


def _agreement_cell(agreement: Reconciliation) -> str:
    ratio = agreement.ratio
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


def _bucket_cell(totals: PeriodTotals, name: str) -> str:
    bucket = totals.buckets[name]
    return f"{bucket.kwh:5.1f} {bucket.pence / 100:5.2f}"


def render_days(ledgers: Sequence[AccountLedger], zone: ZoneInfo = LONDON) -> str:
    # Aligned with the data rows below: day and mark (11), four 11-wide cells, then
    # standing (8), total (7) and agreement (7): 80 columns. The bucket names are centred
    # over their kWh and £: right-aligned, the last one ran into "standing".
    head1 = (
        f"{'':11}"
        + " ".join(f"{SHORT[n]:^11}" for n in BUCKET_NAMES)
        + f"{'standing':>8}{'total':>7}{'agree':>7}"
    )
    head2 = (
        f"{'day':11}" + " ".join(f"{'kWh':>5} {'£':>5}" for _ in BUCKET_NAMES) + f"{'£':>8}{'£':>7}"
    )
    lines = [f"Settled billing per {zone.key} day; £ incl. VAT. * = not fully settled."]
    for ledger in ledgers:
        lines += ["", f"Account {ledger.account}", head1.rstrip(), head2.rstrip()]
        notes: list[str] = []
        for item in ledger.days:
            totals = item.totals
            mark = " " if totals.complete else "*"
            cells = " ".join(_bucket_cell(totals, n) for n in BUCKET_NAMES)
            lines.append(
                f"{item.day.isoformat()}{mark}{cells} {totals.standing_pence / 100:7.2f}"
                f" {totals.total_pence / 100:6.2f} {_agreement_cell(item.agreement):>6}"
            )
            for name, bucket in totals.buckets.items():
                if name not in BUCKET_NAMES and (bucket.kwh or bucket.pence):
                    notes.append(
                        f"  {item.day.isoformat()}: {bucket.kwh:.2f} kWh £{bucket.pence / 100:.2f}"
                        f" in {name} buckets (in the total)"
                    )
            if totals.unknown_half_hours:
                notes.append(
                    f"  {item.day.isoformat()}: {totals.unknown_half_hours} half-hour(s) with a "
                    "label ioagent does not know (never counted as peak or off-peak)"
                )
        if not ledger.days:
            lines.append("  nothing settled yet")
        lines += notes
    lines.append("")
    lines.append("agree = share of settled half-hours where the published signal matched the")
    lines.append("bill (see docs/ledger.md); - = no signal recorded for those half-hours.")
    return "\n".join(lines)


def _signal(comparison: Comparison) -> str:
    if comparison.signal is None:
        return "-"
    return "offpeak" if comparison.signal else "peak"


def _band(band: str) -> str:
    return {"standard": "std", "none": "-"}.get(band, band)


def render_day(account: str, item: LedgerDay, zone: ZoneInfo = LONDON) -> str:
    lines = [
        f"Account {account}, {item.day.isoformat()} ({zone.key}); "
        f"{item.totals.half_hours} of {item.totals.expected_half_hours} half-hours settled.",
        "",
        f"{'time':<10}{'home kWh':>8} {'band':<8}{'car kWh':>8} {'band':<8}"
        f"{'offpeak':<9}{'ev/offpeak':<11}{'pence':>7}",
    ]
    for check in item.agreement.checks:
        row = check.row
        local = row.start.astimezone(zone)
        mark = "" if not check.compared else ("  ok" if check.agreed else "  !!")
        lines.append(
            f"{local.strftime('%H:%M %Z'):<10}{row.home_kwh:8.2f} {_band(row.home_band):<8}"
            f"{row.car_kwh:8.2f} {_band(row.car_band):<8}{_signal(check.home):<9}"
            f"{_signal(check.car):<11}{row.cost_pence:7.2f}{mark}"
        )
        for disagreement in check.disagreements:
            lines.append(f"{'':10}!! {disagreement.reason}"[:WIDTH])
        if row.unknown_labels:
            lines.append(f"{'':10}?? unknown label: {', '.join(row.unknown_labels)}"[:WIDTH])
    agreement = item.agreement
    lines += [
        "",
        f"Agreement: {agreement.agreed} of {agreement.compared} compared half-hours "
        f"({_agreement_cell(agreement)}).",
        f"Total £{item.totals.total_pence / 100:.2f} "
        f"incl. £{item.totals.standing_pence / 100:.2f} standing charge.",
    ]
    return "\n".join(lines)


def days_json(ledgers: Sequence[AccountLedger]) -> str:
    payload: dict[str, Any] = {
        "accounts": [
            {
                "account": ledger.account,
                "days": [
                    {
                        "day": item.day.isoformat(),
                        **item.totals.as_json(),
                        "agreement": {
                            "half_hours": item.agreement.compared,
                            "agreed": item.agreement.agreed,
                            "ratio": item.agreement.ratio,
                            "disagreements": [d.as_json() for d in item.agreement.disagreements()],
                        },
                    }
                    for item in ledger.days
                ],
            }
            for ledger in ledgers
        ]
    }
    return json.dumps(payload, indent=2)


def day_json(account: str, item: LedgerDay) -> str:
    half_hours = []
    for check in item.agreement.checks:
        row = check.row
        half_hours.append(
            {
                "start": iso_z(row.start),
                "home_kwh": round(row.home_kwh, 3),
                "home_band": row.home_band,
                "car_kwh": round(row.car_kwh, 3),
                "car_band": row.car_band,
                "cost_pence": round(row.cost_pence, 3),
                "standing_pence": round(row.standing_pence, 4),
                "offpeak": _signal(check.home),
                "ev_offpeak": _signal(check.car),
                "agreed": check.agreed if check.compared else None,
                "reasons": [d.reason for d in check.disagreements],
                "unknown_labels": list(row.unknown_labels),
            }
        )
    return json.dumps(
        {
            "account": account,
            "day": item.day.isoformat(),
            **item.totals.as_json(),
            "half_hour_rows": half_hours,
        },
        indent=2,
    )


def latest_days(latest: datetime | None, count: int, zone: ZoneInfo = LONDON) -> list[date]:
    """The ``count`` local days ending with the one of the newest settled half-hour."""
    if latest is None:
        return []
    last = local_day(latest, zone)
    return [date.fromordinal(last.toordinal() - i) for i in range(count - 1, -1, -1)]
