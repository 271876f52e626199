"""The Kraken client: typed reads, one-request polls and the charging commands.

Usage::

    async with KrakenClient(url, api_key) as client:
        account = await client.discover_account(settings.octopus.account_number)
        result = await client.poll(account, [device.id for device in await client.devices(account)])
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from pydantic import SecretStr

from ioagent.kraken import queries
from ioagent.kraken.errors import (
    AccountError,
    ApiChanged,
    AuthFailed,
    CommandRefused,
    KrakenError,
    RateLimited,
    TransientError,
)
from ioagent.kraken.tokens import TokenSource
from ioagent.kraken.transport import GraphQLResult, Transport
from ioagent.kraken.types import (
    DAYS_OF_WEEK,
    Agreement,
    CompletedDispatch,
    Device,
    Dispatch,
    Preferences,
    parse_agreements,
    parse_completed_list,
    parse_devices,
    parse_dispatches,
)
from ioagent.ledger.parse import (
    MeasurementShapeError,
    ParsedPage,
    merge_pages,
    parse_measurements,
)
from ioagent.ledger.windows import fetch_windows
from ioagent.logs import get_logger
from ioagent.timeutil import Clock, iso_z, utc_now

_log = get_logger(__name__)
_T = TypeVar("_T")

DEVICES_PART = "devices"
COMPLETED_PART = "completed"


def planned_part(device_id: str) -> str:
    """Key of a device's planned-dispatch error in :attr:`PollResult.errors`."""
    return f"planned:{device_id}"


@dataclass(frozen=True, slots=True)
class PollResult:
    """Whatever one poll request returned. A part is None when it failed; see ``errors``.

    ``errors`` is keyed by :data:`DEVICES_PART`, :data:`COMPLETED_PART` and
    :func:`planned_part` of a device id.
    """

    devices: list[Device] | None
    planned: dict[str, list[Dispatch] | None]
    completed: list[CompletedDispatch] | None
    errors: dict[str, KrakenError] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.errors


def _part(
    result: GraphQLResult, key: str, field_name: str, parse: Callable[[Any], _T]
) -> tuple[_T | None, KrakenError | None]:
    """Parse one top-level part of a response, or say why it is missing."""
    value = result.data.get(key)
    if value is not None:
        return parse(value), None
    error = result.error_for(key, field_name)
    if error is not None:
        return None, error
    if key not in result.data:
        return None, TransientError(f"Kraken API left {key} out of its answer")
    # An explicit null without an error: the API has nothing to report.
    return parse([]), None


class KrakenClient:
    """Async client for the Kraken GraphQL API. Use as ``async with``; no secret in its repr."""

    def __init__(
        self,
        api_url: str,
        api_key: SecretStr,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 30.0,
        clock: Clock = utc_now,
    ) -> None:
        self.api_url = api_url
        self._clock = clock
        self.transport = Transport(
            api_url, connect_timeout=connect_timeout, read_timeout=read_timeout
        )
        self.tokens = TokenSource(self._obtain_token, api_key, clock=clock)
        self.transport.tokens = self.tokens

    def __repr__(self) -> str:
        return f"KrakenClient({self.api_url!r})"

    async def __aenter__(self) -> KrakenClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self.tokens.close()
        await self.transport.close()

    async def _obtain_token(self, token_input: dict[str, str]) -> Mapping[str, Any]:
        result = await self.transport.execute(
            queries.OBTAIN_TOKEN, {"input": token_input}, authenticated=False
        )
        payload = result.require("obtainKrakenToken")
        if not isinstance(payload, Mapping):
            raise TransientError("obtainKrakenToken returned no token")
        return payload

    async def login(self) -> None:
        """Make sure a valid token is held (logs in if needed); raises AuthFailed on a bad key."""
        await self.tokens.token()

    def token_refresh_due_at(self) -> datetime | None:
        """When the background refresh should run (None before the first login)."""
        return self.tokens.refresh_due_at

    async def refresh_token_if_due(self) -> bool:
        return await self.tokens.refresh_if_due()

    # --- reads ------------------------------------------------------------------------------

    async def accounts(self) -> list[str]:
        result = await self.transport.execute(queries.ACCOUNTS)
        viewer = result.require("viewer")
        raw = viewer.get("accounts") if isinstance(viewer, Mapping) else None
        if not isinstance(raw, list):
            return []
        numbers = [item.get("number") for item in raw if isinstance(item, Mapping)]
        return [number for number in numbers if isinstance(number, str) and number]

    async def discover_account(self, configured: str | None) -> str:
        """The configured account if the key can see it, else the only account it sees."""
        visible = await self.accounts()
        listed = ", ".join(visible) or "none"
        if configured:
            if configured in visible:
                return configured
            raise AccountError(
                f"account {configured} is not visible with this API key (it sees: {listed})"
            )
        if len(visible) == 1:
            return visible[0]
        if not visible:
            raise AccountError("this API key sees no Octopus account")
        raise AccountError(
            f"this API key sees several accounts ({listed}); set octopus.account_number"
        )

    async def devices(self, account: str) -> list[Device]:
        result = await self.transport.execute(queries.DEVICES, {"account": account})
        return parse_devices(result.require("devices"))

    async def device(self, account: str, device_id: str) -> Device:
        result = await self.transport.execute(
            queries.DEVICES, {"account": account, "deviceId": device_id}
        )
        for device in parse_devices(result.require("devices")):
            if device.id == device_id:
                return device
        raise KrakenError(f"device {device_id} not found on account {account}")

    async def preferences(self, account: str, device_id: str) -> Preferences:
        device = await self.device(account, device_id)
        if device.preferences is None:
            raise KrakenError(f"device {device_id} has no charging preferences")
        return device.preferences

    async def planned_dispatches(self, device_id: str) -> list[Dispatch]:
        result = await self.transport.execute(queries.PLANNED_DISPATCHES, {"deviceId": device_id})
        return parse_dispatches(result.require("flexPlannedDispatches"), device_id)

    async def completed_dispatches(self, account: str) -> list[CompletedDispatch]:
        result = await self.transport.execute(queries.COMPLETED_DISPATCHES, {"account": account})
        return parse_completed_list(result.require("completedDispatches"))

    async def poll(
        self,
        account: str,
        device_ids: Sequence[str],
        *,
        may_retry: Callable[[], bool] | None = None,
    ) -> PollResult:
        """Devices, each device's plan and the completed dispatches in ONE request.

        Parts that failed are None with their error in ``errors``; raises only when the request
        as a whole failed or no part came back. ``may_retry`` gates the retry after a refused
        token (see :meth:`Transport.execute`).
        """
        ids = list(dict.fromkeys(device_ids))
        result = await self.transport.execute(
            queries.poll_query(len(ids)), queries.poll_variables(account, ids), may_retry=may_retry
        )
        errors: dict[str, KrakenError] = {}
        devices, error = _part(result, queries.POLL_DEVICES_KEY, "devices", parse_devices)
        if error is not None:
            errors[DEVICES_PART] = error
        planned: dict[str, list[Dispatch] | None] = {}
        for index, device_id in enumerate(ids):
            plan, error = _part(
                result,
                queries.planned_key(index),
                "flexPlannedDispatches",
                partial(parse_dispatches, device_id=device_id),
            )
            planned[device_id] = plan
            if error is not None:
                errors[planned_part(device_id)] = error
        completed, error = _part(
            result, queries.POLL_COMPLETED_KEY, "completedDispatches", parse_completed_list
        )
        if error is not None:
            errors[COMPLETED_PART] = error
        if devices is None and completed is None and all(p is None for p in planned.values()):
            raise next(iter(errors.values()), TransientError("Kraken API returned nothing"))
        if errors:
            _log.info(
                "kraken_poll_partial",
                account=account,
                failed={part: f"{type(exc).__name__}: {exc}" for part, exc in errors.items()},
            )
        return PollResult(devices=devices, planned=planned, completed=completed, errors=errors)

    async def agreements(self, account: str) -> list[Agreement]:
        """The account's active electricity agreements (product and tariff codes, MPAN)."""
        result = await self.transport.execute(queries.AGREEMENTS, {"account": account})
        payload = result.require("account")
        raw = payload.get("electricityAgreements") if isinstance(payload, Mapping) else None
        return parse_agreements(raw)

    # --- commands ---------------------------------------------------------------------------

    async def set_target_soc(self, account: str, device_id: str, soc: int) -> None:
        """Change the target state of charge on every day, keeping each day's ready-by time."""
        await self._command(self._set_schedules(account, device_id, soc=soc))

    async def set_ready_by(self, account: str, device_id: str, ready_by: time) -> None:
        """Change the ready-by time on every day, keeping each day's target."""
        await self._command(self._set_schedules(account, device_id, ready_by=ready_by))

    async def boost(self, device_id: str) -> None:
        await self._mutate(queries.UPDATE_BOOST, "updateBoostCharge", device_id, "BOOST")

    async def cancel_boost(self, device_id: str) -> None:
        await self._mutate(queries.UPDATE_BOOST, "updateBoostCharge", device_id, "CANCEL")

    async def suspend(self, device_id: str) -> None:
        await self._mutate(
            queries.UPDATE_SMART_CONTROL, "updateDeviceSmartControl", device_id, "SUSPEND"
        )

    async def unsuspend(self, device_id: str) -> None:
        await self._mutate(
            queries.UPDATE_SMART_CONTROL, "updateDeviceSmartControl", device_id, "UNSUSPEND"
        )

    async def _mutate(self, query: str, key: str, device_id: str, action: str) -> None:
        async def run() -> None:
            result = await self.transport.execute(
                query, {"input": {"deviceId": device_id, "action": action}}
            )
            result.require(key)

        await self._command(run())

    async def _set_schedules(
        self, account: str, device_id: str, *, soc: int | None = None, ready_by: time | None = None
    ) -> None:
        preferences = await self.preferences(account, device_id)
        schedules = [
            {"dayOfWeek": day, **_schedule_values(preferences, day, soc=soc, ready_by=ready_by)}
            for day in DAYS_OF_WEEK
        ]
        result = await self.transport.execute(
            queries.SET_PREFERENCES,
            {
                "input": {
                    "deviceId": device_id,
                    "mode": "CHARGE",
                    "unit": "PERCENTAGE",
                    "schedules": schedules,
                }
            },
        )
        result.require("setDevicePreferences")

    async def _command(self, action: Coroutine[Any, Any, None]) -> None:
        """Run a command; an error that is not transient, auth or schema is a refusal."""
        try:
            await action
        except (AuthFailed, RateLimited, TransientError, ApiChanged, CommandRefused):
            raise
        except KrakenError as exc:
            raise CommandRefused(exc.message, code=exc.code, description=exc.description) from None


def _schedule_values(
    preferences: Preferences, day: str, *, soc: int | None, ready_by: time | None
) -> dict[str, Any]:
    """One day's ``time`` (HH:MM) and ``max`` after applying the change."""
    current_time = preferences.ready_by_for(day)
    if current_time is None:
        raise CommandRefused("the device has no charging schedule to change")
    target = soc if soc is not None else preferences.target_soc_for(day)
    if target is None:
        raise CommandRefused(f"the {day.lower()} schedule has no target to keep")
    when = ready_by if ready_by is not None else current_time
    return {"time": when.strftime("%H:%M"), "max": target}


# --- the settlement ledger (issue 16): kept in its own block ----------------------------------
# Module-level functions rather than methods so that this block merges without touching the
# class body that other work changes.

BeforeRequest = Callable[[], Coroutine[Any, Any, None]]
"""Awaited before every measurements request: the ledger's own budget gate waits there."""
MAX_MEASUREMENT_PAGES = 20
"""Cursor pages followed per window before giving up (a cursor that never ends is a bug)."""


async def measurements_page(
    client: KrakenClient,
    account: str,
    mpan: str,
    start: datetime,
    end: datetime,
    *,
    after: str | None = None,
    first: int = queries.MEASUREMENTS_PAGE_SIZE,
) -> ParsedPage:
    """One request: the half-hours of ``[start, end)`` on the import MPAN, parsed."""
    result = await client.transport.execute(
        queries.MEASUREMENTS,
        queries.measurements_variables(account, mpan, iso_z(start), iso_z(end), after, first),
    )
    try:
        return parse_measurements({"account": result.require("account")})
    except MeasurementShapeError as exc:
        raise ApiChanged(f"measurements response changed shape: {exc}") from None


async def settled_half_hours(
    client: KrakenClient,
    account: str,
    mpan: str,
    start: datetime,
    end: datetime,
    *,
    before_request: BeforeRequest | None = None,
) -> ParsedPage:
    """``[start, end)`` in windows of at most 12 half-hours (longer ones lose their
    statistics), every cursor page followed; ``before_request`` gates each request."""
    pages: list[ParsedPage] = []
    for window_start, window_end in fetch_windows(start, end):
        after: str | None = None
        for _ in range(MAX_MEASUREMENT_PAGES):
            if before_request is not None:
                await before_request()
            page = await measurements_page(
                client, account, mpan, window_start, window_end, after=after
            )
            pages.append(page)
            if not page.has_next_page or not page.end_cursor or page.end_cursor == after:
                break
            after = page.end_cursor
        else:
            _log.warning(
                "measurements cursor did not end",
                window_start=window_start.isoformat(),
                pages=MAX_MEASUREMENT_PAGES,
            )
    return merge_pages(pages)
