"""``ioagent dispatches``: log in once and print the plan, device state and preferences.

Exit codes:

* 0 — printed (parts the API could not return are shown as errors in the output);
* 1 — the Kraken API failed: the API key was refused, the API is unreachable or timed out,
  rate limiting, or an API change; one line on stderr says which;
* 2 — the configuration is unusable (invalid file or settings, or the account cannot be
  chosen); the message names the setting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ioagent.config import ConfigError, Settings, ignored_environment, load_settings
from ioagent.kraken.client import KrakenClient, PollResult, planned_part
from ioagent.kraken.errors import (
    AccountError,
    ApiChanged,
    AuthFailed,
    KrakenError,
    RateLimited,
    TransientError,
)
from ioagent.kraken.rest import ProductsClient
from ioagent.kraken.types import (
    Agreement,
    CompletedDispatch,
    Device,
    Dispatch,
    Preferences,
    UnitRate,
)
from ioagent.logs import configure_logging, redact
from ioagent.timeutil import iso_z, utc_now

DAY = timedelta(days=1)
RATE_FEEDS = (
    "standard-unit-rates",
    "day-unit-rates",
    "night-unit-rates",
    "ev-device-peak-unit-rates",
    "ev-device-off-peak-unit-rates",
)
EXIT_OK = 0
EXIT_API = 1
EXIT_CONFIG = 2


@dataclass(frozen=True, slots=True)
class Report:
    account: str
    fetched_at: datetime
    devices: list[Device]
    result: PollResult
    agreements: list[Agreement] | None = None
    """The account's active agreements; None when they could not be read (see the error)."""
    agreements_error: str | None = None
    rate_feeds: dict[str, list[UnitRate]] = field(default_factory=dict)
    """Feed name (``day-unit-rates`` …) -> entries, for the tariff in force."""
    rates_error: str | None = None


async def fetch_report(settings: Settings) -> Report:
    octopus = settings.octopus
    async with KrakenClient(
        octopus.api_url,
        octopus.api_key,
        connect_timeout=octopus.connect_timeout,
        read_timeout=octopus.read_timeout,
    ) as client:
        account = await client.discover_account(octopus.account_number)
        devices = await client.devices(account)
        # Only smart-chargeable devices have plans; asking for the others' would only spend
        # the 5-a-minute planned-dispatch limit.
        smart = [device.id for device in devices if device.is_smart_chargeable]
        result = await client.poll(account, smart)
        agreements: list[Agreement] | None = None
        agreements_error = rates_error = None
        feeds: dict[str, list[UnitRate]] = {}
        try:
            agreements = await client.agreements(account)
        except KrakenError as exc:
            agreements_error = str(exc)
        now = utc_now()
        current = [a for a in agreements or [] if a.in_force(now)]
        if current and current[-1].product_code and current[-1].tariff_code:
            product, tariff = current[-1].product_code, current[-1].tariff_code
            async with ProductsClient(octopus.rest_url) as rest:
                try:
                    for feed in RATE_FEEDS:
                        feeds[feed] = await rest.unit_rates(
                            product, tariff, feed, period_from=now - DAY, period_to=now + DAY
                        )
                except KrakenError as exc:
                    rates_error = str(exc)
        return Report(
            account=account,
            fetched_at=now,
            devices=result.devices if result.devices is not None else devices,
            result=result,
            agreements=agreements,
            agreements_error=agreements_error,
            rate_feeds=feeds,
            rates_error=rates_error,
        )


# --- JSON ------------------------------------------------------------------------------------


def _preferences_json(preferences: Preferences | None) -> dict[str, Any] | None:
    if preferences is None:
        return None
    return {
        "mode": preferences.mode,
        "target_type": preferences.target_type,
        "unit": preferences.unit,
        "charging_duration_capped": preferences.charging_duration_capped,
        "schedules": [
            {
                "day_of_week": s.day_of_week,
                "time": s.time.strftime("%H:%M"),
                "min": s.min,
                "max": s.max,
                "upper_limit": s.upper_limit,
            }
            for s in preferences.schedules
        ],
    }


def _dispatch_json(dispatch: Dispatch) -> dict[str, Any]:
    return {
        "start": iso_z(dispatch.start),
        "end": iso_z(dispatch.end),
        "type": dispatch.type,
        "kwh": dispatch.kwh,
    }


def _completed_json(completed: CompletedDispatch) -> dict[str, Any]:
    return {
        "start": iso_z(completed.start),
        "end": iso_z(completed.end),
        "type": completed.type,
        "kwh": completed.kwh,
        "source": completed.source,
        "location": completed.location,
    }


def report_json(report: Report) -> dict[str, Any]:
    result = report.result
    devices = []
    for device in report.devices:
        plan = result.planned.get(device.id)
        devices.append(
            {
                "id": device.id,
                "provider": device.provider,
                "device_type": device.device_type,
                "typename": device.typename,
                "make": device.make,
                "model": device.model,
                "status": {
                    "current": device.status_current,
                    "current_state": device.current_state,
                    "is_suspended": device.is_suspended,
                },
                "preferences": _preferences_json(device.preferences),
                "smart_charged": device.is_smart_chargeable,
                "planned": None if plan is None else [_dispatch_json(d) for d in plan],
            }
        )
    return {
        "account": report.account,
        "fetched_at": iso_z(report.fetched_at),
        "devices": devices,
        "completed": None
        if result.completed is None
        else [_completed_json(c) for c in reversed(result.completed)],
        "errors": {part: str(error) for part, error in result.errors.items()},
    }


# --- table -----------------------------------------------------------------------------------


def _when(value: datetime, zone: ZoneInfo) -> str:
    local = value.astimezone(zone)
    seconds = ":%S" if local.second or local.microsecond else ""
    return local.strftime(f"%a %d %b %H:%M{seconds}")


def _kwh(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(rows: Sequence[Sequence[str]], indent: str = "    ") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        (indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]


def _target(preferences: Preferences, day: str) -> str:
    soc, ready_by = preferences.target_soc_for(day), preferences.ready_by_for(day)
    target = f"{soc:g}% " if soc is not None else ""
    return target + (f"by {ready_by:%H:%M}" if ready_by is not None else "no ready-by time")


def _describe_preferences(preferences: Preferences | None) -> str:
    if preferences is None or not preferences.schedules:
        return "none"
    cap = preferences.charging_duration_capped or "unknown"
    head = f"{preferences.mode or '?'}, 6-hour cap {cap}"
    days = [s.day_of_week for s in preferences.schedules]
    same = {(preferences.target_soc_for(day), preferences.ready_by_for(day)) for day in days}
    if len(days) == 7 and len(same) == 1:
        return f"target {_target(preferences, days[0])} every day ({head})"
    listed = ", ".join(f"{day[:3].title()} {_target(preferences, day)}" for day in days)
    return f"{listed} ({head})"


def report_table(report: Report, zone: ZoneInfo) -> str:
    result = report.result
    lines = [
        f"Account {report.account} at {_when(report.fetched_at, zone)} (times in {zone.key})",
    ]
    if result.devices is None:
        lines.append(f"  devices: could not be read ({result.errors.get('devices')})")
    for device in report.devices:
        name = " ".join(part for part in (device.make, device.model) if part) or "device"
        kind = ", ".join(part for part in (device.typename, device.device_type) if part)
        suspended = {True: "yes", False: "no", None: "unknown"}[device.is_suspended]
        lines += [
            "",
            f"{name} [{device.id}]" + (f" ({kind})" if kind else ""),
            f"  status:      {device.status_current or '?'}, {device.current_state or '?'}, "
            f"suspended: {suspended}",
            f"  preferences: {_describe_preferences(device.preferences)}",
        ]
        plan = result.planned.get(device.id)
        if device.id not in result.planned:
            lines.append("  planned dispatches: not asked (no smart charging for this device)")
        elif plan is None:
            error = result.errors.get(planned_part(device.id))
            lines.append(f"  planned dispatches: could not be read ({error})")
        elif not plan:
            lines.append("  planned dispatches: none")
        else:
            lines.append("  planned dispatches:")
            rows: list[tuple[str, ...]] = [("start", "end", "type", "kWh")]
            rows += [(_when(d.start, zone), _when(d.end, zone), d.type, _kwh(d.kwh)) for d in plan]
            lines += _table(rows)
    lines.append("")
    if result.completed is None:
        lines.append(f"Completed dispatches: could not be read ({result.errors.get('completed')})")
    elif not result.completed:
        lines.append("Completed dispatches (last ~12 h): none")
    else:
        lines.append("Completed dispatches (last ~12 h, newest first):")
        completed_rows: list[tuple[str, ...]] = [("start", "end", "type", "location", "kWh")]
        completed_rows += [
            (_when(c.start, zone), _when(c.end, zone), c.type, c.location or "-", _kwh(c.kwh))
            for c in reversed(result.completed)
        ]
        lines += _table(completed_rows)
    return "\n".join(lines)


# --- entry point -----------------------------------------------------------------------------


def failure_message(exc: KrakenError, api_url: str) -> tuple[int, str]:
    """The exit code and the one line to print for a failure."""
    code = f" [{exc.code}]" if exc.code is not None else ""
    # Kraken's own words (errorDescription), when it gave any.
    said = f": {exc.description}" if exc.description else ""
    if isinstance(exc, AccountError):
        return EXIT_CONFIG, f"{exc}"
    if isinstance(exc, AuthFailed):
        return EXIT_API, f"Octopus refused the API key; check octopus.api_key{code}{said}"
    if isinstance(exc, RateLimited):
        return (
            EXIT_API,
            f"Octopus is rate limiting this key; try again in a few minutes{code}{said}",
        )
    if isinstance(exc, TransientError):
        return EXIT_API, f"cannot get an answer from the Kraken API at {api_url}: {exc}"
    if isinstance(exc, ApiChanged):
        return EXIT_API, f"the Kraken API has changed; ioagent needs an update: {exc}"
    return EXIT_API, f"Kraken API error: {exc}"


def _one_line(text: str) -> str:
    return redact(" ".join(text.split()))


def cli_dispatches(
    args: argparse.Namespace,
    summary: Callable[[Report, Settings], tuple[list[str], dict[str, Any]]] | None = None,
) -> int:
    """Print the plan once; returns an exit code (see the module docstring).

    ``summary`` adds the tariff's lines (and JSON) computed from the report by the caller: the
    product, the car allowance and the rates (``ioagent.dispatches``)."""
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(redact(exc.report()), file=sys.stderr)
        return EXIT_CONFIG
    for warning in ignored_environment():
        print(f"ioagent dispatches: warning: {warning}", file=sys.stderr)
    level = "debug" if settings.logging.level == "debug" else "warning"
    configure_logging(level, "console", stream=sys.stderr)
    try:
        report = asyncio.run(fetch_report(settings))
    except KrakenError as exc:
        status, message = failure_message(exc, settings.octopus.api_url)
        print(f"ioagent dispatches: {_one_line(message)}", file=sys.stderr)
        return status
    lines, extra = summary(report, settings) if summary is not None else ([], {})
    if getattr(args, "json", False):
        print(json.dumps({**report_json(report), **extra}, indent=2))
    else:
        print("\n".join([report_table(report, settings.tariff.zone), *lines]))
    return EXIT_OK
