"""``ioagent history``: per-night off-peak time and energy from the store.

A *night* is one tariff day (see ``ioagent.tariff.rules``): from the end of one fixed off-peak window
to the end of the next, in the tariff's zone, named by the local date on which it starts. With
the default 23:30–05:30 window the night of 7 February runs from 05:30 on the 7th to 05:30 on
the 8th, so it holds that day's daytime and evening smart slots, the fixed window and nothing
of the next morning after 05:30. This is the period the smart-charge cap is counted over, so
a capped night never shows more than the cap. DST makes a night 23 or 25 hours long.

What counts (docs/history.md has a worked example):

* fixed hours: the fixed window inside the night (5, 6 or 7 h with the default window).
* extra hours: off-peak time made by completed SMART dispatches at home (location AT_HOME or
  unknown), widened to the half-hours they touch when the tariff rounds, after the cap, and
  outside the fixed window: ``|fixed ∪ smart| - |fixed|`` inside the night.
* smart / away / boost / other kWh: completed dispatches by kind and location, each counted
  whole in the night in which it starts. Octopus leaves ``meta.source`` null on completed
  records (boosts too), so a record's kind is that of the slot ioagent saw planned for its time
  (``classify_completed``); *other* holds test charges and records ioagent saw no plan for
  (it was not running then, say), which also make no extra off-peak hours.
* slots withdrawn: planned slots meant to start in the night that Octopus took back before they
  started (a slot moved or resized is *replaced*, not withdrawn).

The night that contains ``now`` is reported up to ``now`` and marked incomplete.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ioagent.config import ConfigError, TariffSettings, ignored_environment, load_settings
from ioagent.kraken.types import AWAY, BOOST, SMART, CompletedDispatch
from ioagent.store.database import SlotRecord, Store, StoreError
from ioagent.tariff.plan import classify_completed
from ioagent.tariff.rules import TariffRules, Window, fixed_windows, offpeak_windows
from ioagent.timeutil import iso_z, to_utc, utc_now

CLASSIFY_LOOKBACK = timedelta(hours=24)
CAP_FLAG_META = "charging_duration_capped:{account}"
"""Meta key holding the device's ``isChargingDurationCapped`` flag, for ``smart_cap = auto``."""


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


def summarise_night(
    night: date,
    rules: TariffRules,
    completed: Sequence[CompletedDispatch],
    withdrawn: Sequence[SlotRecord],
    now: datetime,
) -> NightSummary:
    """One night's figures. ``completed`` may hold dispatches of other nights: they are used
    for the cap and the half-hours they spill into this night, but their kWh is not counted."""
    start, end = night_bounds(night, rules)
    until = min(end, to_utc(now))
    fixed = _hours_inside(fixed_windows(rules, start, end), start, until)
    offpeak = offpeak_windows([c.as_dispatch() for c in completed], rules, start, end)
    extra = _hours_inside(offpeak, start, until) - fixed
    own = [c for c in completed if start <= to_utc(c.start) < end]
    return NightSummary(
        night=night,
        start=start,
        end=end,
        complete=to_utc(now) >= end,
        fixed_offpeak_hours=fixed,
        extra_offpeak_hours=max(0.0, extra),
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
    rules: TariffRules,
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
        for night in nights_to_show(now, rules, nights)
        if since is None or night_bounds(night, rules)[1] > to_utc(since)
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


@dataclass(frozen=True, slots=True)
class AccountHistory:
    account: str
    smart_cap: bool
    nights: list[NightSummary]


def _read_history(
    store: Store, account: str, tariff: TariffSettings, now: datetime, days: int
) -> AccountHistory:
    # smart_cap = "auto" follows the device flag the daemon recorded, if it did.
    capped_flag = store.get_meta(CAP_FLAG_META.format(account=account))
    rules = TariffRules.from_settings(tariff, device_capped=capped_flag)
    first = nights_to_show(now, rules, days)[0]
    start = night_bounds(first, rules)[0]
    end = night_bounds(night_of(now, rules), rules)[1]
    # A slot that ran may have started up to a day before the first record it made.
    planned = store.ran_between(account, start - CLASSIFY_LOOKBACK, end)
    completed = classify_completed(store.completed_between(account, start, end), planned)
    withdrawn = store.withdrawn_between(account, start, end)
    since = store.first_seen(account)
    if since is None:  # the store knows nothing of this account yet
        return AccountHistory(account, rules.smart_cap, [])
    return AccountHistory(
        account, rules.smart_cap, nightly_history(completed, withdrawn, rules, now, days, since)
    )


def _night_definition(rules: TariffRules) -> str:
    end = rules.offpeak_end.strftime("%H:%M")
    return (
        f"{end} to {end} the next day, {rules.zone.key} time, named by the date on which it starts"
    )


def render_json(histories: Sequence[AccountHistory], rules: TariffRules) -> str:
    return json.dumps(
        {
            "timezone": rules.zone.key,
            "night": _night_definition(rules),
            "accounts": [
                {
                    "account": h.account,
                    "smart_cap": h.smart_cap,
                    "nights": [n.as_json() for n in h.nights],
                    "totals": totals(h.nights),
                }
                for h in histories
            ],
        },
        indent=2,
    )


_COLUMNS = (
    "Night",
    "Fixed h",
    "Extra h",
    "Smart kWh",
    "Away kWh",
    "Boost kWh",
    "Other kWh",
    "Withdrawn",
)


def _row(cells: Sequence[str]) -> str:
    return f"{cells[0]:<12}" + "".join(f"{cell:>11}" for cell in cells[1:])


def render_table(histories: Sequence[AccountHistory], rules: TariffRules) -> str:
    lines = [f"Nights run {_night_definition(rules)}."]
    for history in histories:
        cap = ", smart-charge cap applied" if history.smart_cap else ""
        lines += ["", f"Account {history.account}{cap}", _row(_COLUMNS)]
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
        histories = [_read_history(store, a, settings.tariff, now, args.days) for a in accounts]
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
