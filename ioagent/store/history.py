"""``ioagent history``: per-night off-peak time and energy from the store.

A *night* is one tariff day (see ``ioagent.tariff.rules``): from the end of one fixed off-peak window
to the end of the next, in the tariff's zone, named by the local date on which it starts. With
the default 23:30–05:30 window the night of 7 February runs from 05:30 on the 7th to 05:30 on
the 8th, so it holds that day's daytime and evening smart slots, the fixed window and nothing
of the next morning after 05:30. This is the period the legacy smart-charge cap is counted
over, so a capped night never shows more than the cap. The four-rate allowance runs from noon
to noon instead, so a night's morning (05:30-12:00) spends what the previous night left and
its afternoon and evening a new allowance. DST makes a night 23 or 25 hours long.

What counts (docs/history.md has a worked example):

* fixed hours: the fixed window inside the night (5, 6 or 7 h with the default window).
* extra hours: the home's off-peak time outside the fixed window made by smart charging, by
  the rules of the account's product (``ioagent.tariff.signals.timeline``, the daemon's own
  engine), with the completed dispatches as the plan and as the evidence that the car charged.
  Legacy: every half-hour a completed smart dispatch touches (any location, R7), after the
  cap. Four-rate: only those half-hours within the car's noon-to-noon allowance, so a 10 h
  daytime charge counts 6 h. A product not yet known gets the cautious four-rate rules, as in
  the daemon.
* smart / away / boost / other kWh: completed dispatches by kind and location, each counted
  whole in the night in which it starts. Octopus leaves ``meta.source`` null on completed
  records (boosts too), so a record's kind is that of the slot ioagent saw planned for its time
  (``classify_completed``); *other* holds test charges and records ioagent saw no plan for
  (it was not running then, say). Those make no extra off-peak hours (nothing shows the car
  charged on a smart slot), but they use the four-rate allowance (and the legacy cap), as in
  the daemon: the figures can then only come out low, never high.
* slots withdrawn: planned slots meant to start in the night that Octopus took back before they
  started (a slot moved or resized is *replaced*, not withdrawn).

The night that contains ``now`` is reported up to ``now`` and marked incomplete.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ioagent.config import ConfigError, TariffSettings, ignored_environment, load_settings
from ioagent.kraken.types import AWAY, BOOST, SMART, UNKNOWN, CompletedDispatch, Dispatch
from ioagent.store.database import SlotRecord, Store, StoreError
from ioagent.tariff.evidence import evidence_from
from ioagent.tariff.plan import classify_completed
from ioagent.tariff.product import Product, resolve
from ioagent.tariff.rules import TariffRules, Window, fixed_windows
from ioagent.tariff.signals import ProductRules, home_windows, timeline
from ioagent.timeutil import iso_z, to_utc, utc_now

CLASSIFY_LOOKBACK = timedelta(hours=24)
ALLOWANCE_LOOKBACK = timedelta(hours=26)
"""How far before a night its figures can reach: the four-rate allowance period holding the
night's start began at the local noon before (17.5 h earlier, 18.5 h on a DST day), and a
dispatch running into that period may have started before it."""
CAP_FLAG_META = "charging_duration_capped:{account}"
"""Meta key holding the device's ``isChargingDurationCapped`` flag, for ``smart_cap = auto``."""
PRODUCT_META = "product:{account}"
"""Meta key of the product the daemon last read from the account (``Product.stored_json``;
``ioagent.runtime.agent`` writes it under the same name)."""


@dataclass(frozen=True, slots=True)
class NightSummary:
    night: date
    start: datetime
    end: datetime
    complete: bool
    fixed_offpeak_hours: float
    extra_offpeak_hours: float
    smart_kwh: float
    away_kwh: float
    boost_kwh: float
    other_kwh: float
    slots_withdrawn: int

    def as_json(self) -> dict[str, Any]:
        return {
            "night": self.night.isoformat(),
            "start": iso_z(self.start),
            "end": iso_z(self.end),
            "complete": self.complete,
            "fixed_offpeak_hours": round(self.fixed_offpeak_hours, 3),
            "extra_offpeak_hours": round(self.extra_offpeak_hours, 3),
            "smart_kwh": round(self.smart_kwh, 3),
            "away_kwh": round(self.away_kwh, 3),
            "boost_kwh": round(self.boost_kwh, 3),
            "other_kwh": round(self.other_kwh, 3),
            "slots_withdrawn": self.slots_withdrawn,
        }


def _wall(day: date, clock: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, clock, tzinfo=zone).astimezone(UTC)


def night_bounds(night: date, rules: TariffRules) -> tuple[datetime, datetime]:
    """UTC ``[start, end)`` of the night named ``night``."""
    return (
        _wall(night, rules.offpeak_end, rules.zone),
        _wall(night + timedelta(days=1), rules.offpeak_end, rules.zone),
    )


def night_of(instant: datetime, rules: TariffRules) -> date:
    """The night that contains ``instant``."""
    local_day = to_utc(instant).astimezone(rules.zone).date()
    if to_utc(instant) >= night_bounds(local_day, rules)[0]:
        return local_day
    return local_day - timedelta(days=1)


def _hours_inside(windows: Sequence[Window], start: datetime, end: datetime) -> float:
    seconds = sum(
        max(0.0, (min(w.end, end) - max(w.start, start)).total_seconds()) for w in windows
    )
    return seconds / 3600


def _kwh(dispatch: CompletedDispatch) -> float:
    # Octopus reports imports as negative deltas; energy is reported positive.
    return abs(dispatch.kwh) if dispatch.kwh is not None else 0.0


def history_plan(completed: Iterable[CompletedDispatch]) -> list[Dispatch]:
    """The completed dispatches as the plan the tariff engine reads a past night from.

    A record of no known kind (``UNKNOWN``: ioagent saw nothing planned for it) is read as
    smart, as the daemon reads it: on four-rate it uses allowance, so the allowance can only
    run out sooner, never later. It is no evidence that the car charged on a smart slot
    (``evidence_from`` takes smart records only), so it makes no extra hours itself.
    """
    plan = []
    for record in completed:
        slot = record.as_dispatch()
        plan.append(replace(slot, type=SMART) if slot.type == UNKNOWN else slot)
    return plan


def extra_offpeak_hours(
    rules: ProductRules,
    completed: Sequence[CompletedDispatch],
    start: datetime,
    end: datetime,
    now: datetime,
) -> float:
    """Hours in ``[start, end)`` in which the home was off-peak outside the fixed window
    because the car charged on a smart slot, by the rules of ``rules.family``.

    The completed records are the plan and the charging evidence, so a half-hour counts only
    where the engine says ``charging``: a smart half-hour the car is known to have charged in,
    within the cap (legacy) or the allowance (four-rate). ``completed`` must reach back to
    :data:`ALLOWANCE_LOOKBACK` before ``start``.
    """
    if end <= start:
        return 0.0
    segments = timeline(
        rules, history_plan(completed), evidence_from(completed, ()), now, start, end
    )
    return _hours_inside(home_windows(segments, ("charging",)), start, end)


def summarise_night(
    night: date,
    rules: ProductRules,
    completed: Sequence[CompletedDispatch],
    withdrawn: Sequence[SlotRecord],
    now: datetime,
) -> NightSummary:
    """One night's figures. ``completed`` may hold dispatches of other nights: they are used
    for the cap, the allowance and the half-hours they spill into this night, but their kWh
    is not counted."""
    start, end = night_bounds(night, rules.legacy)
    until = min(end, to_utc(now))
    fixed = _hours_inside(fixed_windows(rules.legacy, start, end), start, until)
    # Only what can reach this night: a dispatch ending before the allowance period (or the
    # cap's tariff day) began, or starting after ``until``, changes nothing in it.
    nearby = [
        c
        for c in completed
        if to_utc(c.end) > start - ALLOWANCE_LOOKBACK and to_utc(c.start) < until
    ]
    extra = extra_offpeak_hours(rules, nearby, start, until, now)
    own = [c for c in completed if start <= to_utc(c.start) < end]
    return NightSummary(
        night=night,
        start=start,
        end=end,
        complete=to_utc(now) >= end,
        fixed_offpeak_hours=fixed,
        extra_offpeak_hours=extra,
        smart_kwh=sum(_kwh(c) for c in own if c.type == SMART and c.location != AWAY),
        away_kwh=sum(_kwh(c) for c in own if c.type == SMART and c.location == AWAY),
        boost_kwh=sum(_kwh(c) for c in own if c.type == BOOST),
        other_kwh=sum(_kwh(c) for c in own if c.type not in (SMART, BOOST)),
        slots_withdrawn=sum(
            1 for s in withdrawn if s.withdrawn_at is not None and start <= to_utc(s.start) < end
        ),
    )


def nights_to_show(now: datetime, rules: TariffRules, count: int) -> list[date]:
    """The ``count`` most recent nights, oldest first, ending with the one containing ``now``."""
    latest = night_of(now, rules)
    return [latest - timedelta(days=n) for n in range(count - 1, -1, -1)]


def nightly_history(
    completed: Sequence[CompletedDispatch],
    withdrawn: Sequence[SlotRecord],
    rules: ProductRules,
    now: datetime,
    nights: int,
    since: datetime | None = None,
) -> list[NightSummary]:
    """The last ``nights`` nights (oldest first, the current one last).

    ``since``: when the store's record begins. Nights that ended before it are left out: the
    store never saw them, so it cannot say what they held.
    """
    return [
        summarise_night(night, rules, completed, withdrawn, now)
        for night in nights_to_show(now, rules.legacy, nights)
        if since is None or night_bounds(night, rules.legacy)[1] > to_utc(since)
    ]


def totals(summaries: Sequence[NightSummary]) -> dict[str, float | int]:
    return {
        "fixed_offpeak_hours": round(sum(s.fixed_offpeak_hours for s in summaries), 3),
        "extra_offpeak_hours": round(sum(s.extra_offpeak_hours for s in summaries), 3),
        "smart_kwh": round(sum(s.smart_kwh for s in summaries), 3),
        "away_kwh": round(sum(s.away_kwh for s in summaries), 3),
        "boost_kwh": round(sum(s.boost_kwh for s in summaries), 3),
        "other_kwh": round(sum(s.other_kwh for s in summaries), 3),
        "slots_withdrawn": sum(s.slots_withdrawn for s in summaries),
    }


# --- command line --------------------------------------------------------------------------

WIDTH = 80
"""The table, and every line around it, fits a terminal of this many columns."""


@dataclass(frozen=True, slots=True)
class AccountHistory:
    account: str
    product: Product
    """The product whose rules the figures use (``resolve``: the config, the store or the
    cautious default)."""
    rules: ProductRules
    nights: list[NightSummary]

    @property
    def smart_cap(self) -> bool:
        """The legacy smart-charge cap limited the figures (four-rate has the allowance)."""
        return self.rules.family == "legacy" and self.rules.legacy.smart_cap

    @property
    def allowance_hours(self) -> float | None:
        return self.rules.four_rate.allowance_hours if self.rules.family == "four_rate" else None


def stored_product(store: Store, account: str) -> Product | None:
    """The product the daemon last read from the account, or None (never read, unreadable)."""
    text = store.get_meta(PRODUCT_META.format(account=account))
    return Product.from_json(text) if text else None


def read_history(
    store: Store, account: str, tariff: TariffSettings, now: datetime, days: int
) -> AccountHistory:
    """One account's last ``days`` nights from ``store``, by its product's rules."""
    # `[tariff] product` overrides the stored product; with neither, the cautious four-rate
    # rules apply, as in the daemon (source "default").
    product = resolve(tariff.product, stored_product(store, account))
    # smart_cap = "auto" follows the device flag the daemon recorded, if it did.
    capped_flag = store.get_meta(CAP_FLAG_META.format(account=account))
    rules = ProductRules.from_settings(tariff, product.family, capped_flag)
    first = nights_to_show(now, rules.legacy, days)[0]
    start = night_bounds(first, rules.legacy)[0]
    end = night_bounds(night_of(now, rules.legacy), rules.legacy)[1]
    # The first night's allowance period began before it; a slot that ran may have started up
    # to a day before the first record it made.
    reach = start - ALLOWANCE_LOOKBACK
    planned = store.ran_between(account, reach - CLASSIFY_LOOKBACK, end)
    completed = classify_completed(store.completed_between(account, reach, end), planned)
    withdrawn = store.withdrawn_between(account, start, end)
    since = store.first_seen(account)
    if since is None:  # the store knows nothing of this account yet
        return AccountHistory(account, product, rules, [])
    return AccountHistory(
        account, product, rules, nightly_history(completed, withdrawn, rules, now, days, since)
    )


def _night_definition(rules: TariffRules) -> str:
    end = rules.offpeak_end.strftime("%H:%M")
    return (
        f"{end} to {end} the next day, {rules.zone.key} time, named by the date on which it starts"
    )


def _origin(product: Product) -> str:
    where = "set by [tariff] product" if product.source == "config" else "from the account"
    return f" ({product.product}, {where})" if product.product else f" ({where})"


def rules_line(history: AccountHistory) -> str:
    """What the account's figures were computed by, in words (the table's heading)."""
    product, rules = history.product, history.rules
    if product.source == "default":
        # As in the daemon: until the product is known, the rules that never over-claim.
        family = (
            "four-rate, the cautious default: the daemon has not read the account's product yet"
        )
    else:
        family = {"four_rate": "four-rate", "legacy": "legacy"}.get(
            rules.family, "not an Intelligent Octopus Go product"
        ) + _origin(product)
    if rules.family == "four_rate":
        allowance = rules.four_rate.allowance_hours
        counted = f"smart half-hours the car charged in, within its {allowance:g} h noon-to-noon allowance"
    elif rules.family == "legacy":
        cap = rules.legacy.smart_cap_hours
        counted = "every smart half-hour the car charged in" + (
            f", up to {cap:g} h a night (the smart-charge cap)" if history.smart_cap else ""
        )
    else:
        counted = "none, only the fixed window is off-peak"
    return f"Rules: {family}. Extra h: {counted}."


def render_json(histories: Sequence[AccountHistory], rules: TariffRules) -> str:
    return json.dumps(
        {
            "timezone": rules.zone.key,
            "night": _night_definition(rules),
            "accounts": [
                {
                    "account": h.account,
                    "family": h.rules.family,
                    "product": h.product.product,
                    "product_source": h.product.source,
                    "smart_cap": h.smart_cap,
                    "allowance_hours": h.allowance_hours,
                    "nights": [n.as_json() for n in h.nights],
                    "totals": totals(h.nights),
                }
                for h in histories
            ],
        },
        indent=2,
    )


_COLUMNS = (
    ("Night", 11),
    ("Fixed h", 9),
    ("Extra h", 9),
    ("Smart kWh", 10),
    ("Away kWh", 10),
    ("Boost kWh", 10),
    ("Other kWh", 10),
    ("Withdrawn", 10),
)


def _row(cells: Sequence[str]) -> str:
    (_, first), *rest = _COLUMNS
    return f"{cells[0]:<{first}}" + "".join(
        f"{cell:>{width}}" for cell, (_, width) in zip(cells[1:], rest, strict=True)
    )


def _wrapped(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, subsequent_indent="  ", break_on_hyphens=False)


def render_table(histories: Sequence[AccountHistory], rules: TariffRules) -> str:
    lines = _wrapped(f"Nights run {_night_definition(rules)}.")
    for history in histories:
        lines += ["", f"Account {history.account}", *_wrapped(rules_line(history))]
        lines.append(_row([name for name, _ in _COLUMNS]))
        for n in history.nights:
            lines.append(
                _row(
                    (
                        n.night.isoformat() + ("" if n.complete else "*"),
                        f"{n.fixed_offpeak_hours:.1f}",
                        f"{n.extra_offpeak_hours:.1f}",
                        f"{n.smart_kwh:.2f}",
                        f"{n.away_kwh:.2f}",
                        f"{n.boost_kwh:.2f}",
                        f"{n.other_kwh:.2f}",
                        str(n.slots_withdrawn),
                    )
                )
            )
        total = totals(history.nights)
        lines.append(
            _row(
                (
                    "Total",
                    f"{total['fixed_offpeak_hours']:.1f}",
                    f"{total['extra_offpeak_hours']:.1f}",
                    f"{total['smart_kwh']:.2f}",
                    f"{total['away_kwh']:.2f}",
                    f"{total['boost_kwh']:.2f}",
                    f"{total['other_kwh']:.2f}",
                    str(total["slots_withdrawn"]),
                )
            )
        )
        if any(not n.complete for n in history.nights):
            lines.append("* night still in progress: figures so far")
    return "\n".join(lines)


def cli_history(args: argparse.Namespace) -> int:
    if args.days < 1:
        print("ioagent history: --days must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    for warning in ignored_environment():
        print(f"ioagent history: warning: {warning}", file=sys.stderr)
    rules = TariffRules.from_settings(settings.tariff, device_capped=None)
    path = settings.storage.path
    try:
        store = Store.open(path, read_only=True)
    except StoreError as exc:
        print(f"ioagent history: {exc}", file=sys.stderr)
        return 1
    except (sqlite3.Error, OSError) as exc:
        print(f"ioagent history: cannot read database {path}: {exc}", file=sys.stderr)
        return 1
    now = utc_now()
    try:
        account = settings.octopus.account_number
        accounts = [account] if account else store.accounts()
        histories = [read_history(store, a, settings.tariff, now, args.days) for a in accounts]
    except sqlite3.Error as exc:
        print(f"ioagent history: cannot read database {path}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.json:
        print(render_json(histories, rules))
    elif not any(h.nights for h in histories):
        print(f"No history recorded yet in {path}: the daemon has not polled Octopus with it.")
    else:
        print(render_table(histories, rules))
    return 0
