"""``ioagent ledger``: the settled half-hours in the store, per day or one day in detail.

Reads the database read-only, as ``ioagent history`` does; renders with the pure functions
of ``ioagent.ledger.render``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from datetime import date, time, timedelta
from zoneinfo import ZoneInfo

from ioagent.config import ConfigError, load_settings
from ioagent.ledger.reconcile import FIXED_WINDOW
from ioagent.ledger.render import (
    AccountLedger,
    day_json,
    days_json,
    latest_days,
    ledger_days,
    render_day,
    render_days,
)
from ioagent.ledger.windows import LONDON, local_day_bounds
from ioagent.store.database import Store, StoreError
from ioagent.store.ledger import (
    CAR_SIGNAL,
    HOME_SIGNAL,
    latest_settled,
    ledger_accounts,
    settled_between,
    transitions_between,
)


def account_ledger(
    store: Store,
    account: str,
    days: list[date],
    *,
    zone: ZoneInfo = LONDON,
    window: tuple[time, time] = FIXED_WINDOW,
) -> AccountLedger:
    """``days`` (consecutive, oldest first) of ``account`` from the store, each reconciled
    against the signal ioagent recorded. Also what ``ioagent demo`` prints."""
    if not days:
        return AccountLedger(account, [])
    start = local_day_bounds(days[0], zone)[0]
    end = local_day_bounds(days[-1], zone)[1]
    rows = settled_between(store, account, start, end)
    # The signal then: transitions from a day before (the value held at the start).
    since = start - timedelta(days=1)
    home = transitions_between(store, account, HOME_SIGNAL, since, end)
    car = transitions_between(store, account, CAR_SIGNAL, since, end)
    return AccountLedger(account, ledger_days(rows, days, home, car, window=window, zone=zone))


def cli_ledger(args: argparse.Namespace) -> int:
    if args.day is None and args.days < 1:
        print("ioagent ledger: --days must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    zone = settings.tariff.zone
    window = (settings.tariff.start_time, settings.tariff.end_time)
    path = settings.storage.path
    try:
        store = Store.open(path, read_only=True)
    except StoreError as exc:
        print(f"ioagent ledger: {exc}", file=sys.stderr)
        return 1
    except (sqlite3.Error, OSError) as exc:
        print(f"ioagent ledger: cannot read database {path}: {exc}", file=sys.stderr)
        return 1
    ledgers: list[AccountLedger] = []
    try:
        configured = settings.octopus.account_number
        accounts = [configured] if configured else ledger_accounts(store)
        for account in accounts:
            if args.day is not None:
                days = [args.day]
            else:
                days = latest_days(latest_settled(store, account), args.days, zone)
            ledgers.append(account_ledger(store, account, days, zone=zone, window=window))
    except sqlite3.Error as exc:
        print(f"ioagent ledger: cannot read database {path}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.day is not None:
        found = [ledger for ledger in ledgers if ledger.days and ledger.days[0].totals.half_hours]
        if not found:
            print(f"Nothing settled for {args.day.isoformat()} in {path}.")
            return 0
        for ledger in found:
            item = ledger.days[0]
            print(
                day_json(ledger.account, item)
                if args.json
                else render_day(ledger.account, item, zone)
            )
        return 0
    if args.json:
        print(days_json(ledgers))
    elif not any(ledger.days for ledger in ledgers):
        print(f"No settled billing recorded yet in {path}.")
    else:
        print(render_days(ledgers, zone))
    return 0
