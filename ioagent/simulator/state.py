"""The simulator's in-memory world: accounts, devices, dispatches, tokens, faults and call counts.

No I/O here: the GraphQL and control layers call these methods, and every method reads the time
from :meth:`SimulatorState.now` (the injected clock plus an adjustable offset). Failures the live
API reports as GraphQL errors are raised as :class:`KrakenError`; bad control input raises
``ValueError`` (HTTP 400) or ``LookupError`` (HTTP 404).
"""

from __future__ import annotations

import secrets
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any

import jwt

from ioagent.kraken.types import DEVICE_STATES
from ioagent.simulator import planner
from ioagent.simulator.planner import DAYS_OF_WEEK, PlanRequest
from ioagent.simulator.tariffs import SimProduct, SimTariffs
from ioagent.timeutil import Clock, iso_z

DEFAULT_ACCOUNT = "A-SIM00001"
DEFAULT_API_KEY = "sk_live_FAKEsimulatorKey000001"
DEFAULT_EV_ID = "00000000-5117-4e0a-9c1d-000000000001"
DEFAULT_DEVICE_ID = DEFAULT_EV_ID
SECOND_ACCOUNT = "A-SIM00002"
SECOND_API_KEY = "sk_live_FAKEsimulatorKey000002"
DEFAULT_CHARGER_ID = "00000000-5117-4e0a-9c1d-000000000002"
MIXED_ACCOUNT = "A-SIM00009"
"""An account as real accounts often are: one live EV among devices without smart charging."""
MIXED_API_KEY = "sk_live_FAKEsimulatorKey000009"
MIXED_LIVE_EV_ID = "00000000-5117-4e0a-9c1d-000000000031"
MIXED_RETIRED_EV_ID = "00000000-5117-4e0a-9c1d-000000000032"
MIXED_BATTERY_ID = "00000000-5117-4e0a-9c1d-000000000033"
MIXED_HEAT_PUMP_ID = "00000000-5117-4e0a-9c1d-000000000034"
DEFAULT_TARGET_PERCENT = 80.0
DEFAULT_READY_BY = time(7, 30)
DEFAULT_SOC_PERCENT = 30.0
DEFAULT_BATTERY_KWH = 60.0
DEFAULT_CHARGER_KW = 7.0

DISPATCH_TYPES = ("SMART", "BOOST", "TEST")
FAULT_KINDS = (
    "http_500",
    "http_502",
    "http_504",
    "timeout",
    "html_403",
    "rate_limit",
    "kt_4340",
    "partial",
    "schema_400",
    "auth_error",
    "disabled_field",
)
FIELD_FAULTS = ("kt_4340", "partial", "disabled_field")

DEFAULT_JWT_LIFETIME = timedelta(hours=1)
"""Kraken's JWTs live 60 minutes."""
SOURCE_SMART = "smart-charge"
SOURCE_BUMP = "bump-charge"
"""The source Octopus gives a boost in a planned dispatch's meta."""
RATE_LIMIT_FIELD = "flexPlannedDispatches"
RATE_LIMIT_MAX = 5
RATE_LIMIT_WINDOW = timedelta(seconds=60)
COMPLETED_HORIZON = timedelta(hours=12)
COMPLETED_KEPT = timedelta(days=40)
"""How long completed dispatches are kept. The settled billing is built from them, so they
must outlive the longest range a daemon asks for by default (a 30-day backfill, plus the
two-day lag): a charge forgotten sooner would be billed as if the car had drawn nothing, and
a re-fetch of that half-hour would look like a re-bill."""
CALL_LOG_LIMIT = 500
ISSUER = "https://api.octopus.energy/v1/graphql/"


class _SameAsMessage:
    """Marker: the error's ``errorDescription`` repeats its message."""


SAME_AS_MESSAGE = _SameAsMessage()


class KrakenError(Exception):
    """An error the live API returns inside the GraphQL ``errors`` array.

    Kraken's shape: ``message`` is often generic ("Invalid data.") and the readable text is in
    ``extensions.errorDescription``; a few errors carry no description at all (None here).
    """

    def __init__(
        self,
        code: str,
        message: str,
        error_type: str = "VALIDATION",
        *,
        description: str | _SameAsMessage | None = SAME_AS_MESSAGE,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.error_type = error_type
        self.description = message if isinstance(description, _SameAsMessage) else description
        self.extra = extra

    def extensions(self) -> dict[str, Any]:
        extensions: dict[str, Any] = {"errorType": self.error_type, "errorCode": self.code}
        if self.description is not None:
            extensions["errorDescription"] = self.description
        return {**extensions, **self.extra}


def authentication_failed() -> KrakenError:
    """KT-CT-1139 as the live API words it: a generic message, the reason in the description."""
    return KrakenError(
        "KT-CT-1139",
        "Invalid data.",
        description="Authentication failed.",
        validationErrors=[{"message": "Authentication failed.", "inputPath": ["input", "apiKey"]}],
    )


def unauthorized() -> KrakenError:
    return KrakenError("KT-CT-1111", "Unauthorized.", "AUTHORIZATION")


@dataclass
class SimSchedule:
    day_of_week: str
    time: time
    max: float
    min: float | None = None
    upper_limit: float = 100.0


@dataclass
class SimPreferences:
    schedules: list[SimSchedule]
    mode: str = "CHARGE"
    target_type: str = "RELATIVE_STATE_OF_CHARGE"
    unit: str = "PERCENTAGE"
    charging_duration_capped: str = "ENABLED"
    grid_export: str = "NOT_APPLICABLE"


@dataclass
class SimDispatch:
    start: datetime
    end: datetime
    type: str
    kwh: float | None
    draws: bool = True
    """False for Octopus's common "planned but never charged": the car draws nothing."""


@dataclass
class SimCompleted:
    account: str
    start: datetime
    end: datetime
    kwh: float
    source: str | None
    location: str | None
    billed_as: str | None = None
    """What the simulator knows the charge was (``SMART`` or ``BOOST``), which its settled
    billing prices by; by default from ``source``. Never served: Octopus sends completed
    records with ``source`` null."""

    def __post_init__(self) -> None:
        if self.billed_as is None:
            self.billed_as = "BOOST" if self.source == SOURCE_BUMP else "SMART"


@dataclass
class SimDevice:
    id: str
    account: str
    typename: str
    provider: str
    device_type: str
    make: str
    model: str
    preferences: SimPreferences
    status_current: str = "LIVE"
    current_state: str = "SMART_CONTROL_CAPABLE"
    is_suspended: bool = False
    plugged: bool = False
    soc_percent: float = DEFAULT_SOC_PERCENT
    battery_kwh: float = DEFAULT_BATTERY_KWH
    charger_kw: float = DEFAULT_CHARGER_KW
    planned: list[SimDispatch] = field(default_factory=list)


@dataclass
class SimAccount:
    number: str
    api_key: str = field(repr=False)
    shared_with: list[str] = field(default_factory=list, repr=False)
    """Other API keys that also see this account (a user with several accounts)."""


@dataclass
class TokenGrant:
    token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    refresh_expires_at: datetime
    payload: dict[str, Any]


@dataclass
class _IssuedJwt:
    accounts: tuple[str, ...]
    expires_at: datetime


@dataclass
class _RefreshGrant:
    accounts: tuple[str, ...]
    expires_at: datetime


@dataclass
class Fault:
    kind: str
    remaining: int
    include_auth: bool = False
    delay: float = 60.0
    field: str = RATE_LIMIT_FIELD


def default_schedules(
    target: float = DEFAULT_TARGET_PERCENT, ready_by: time = DEFAULT_READY_BY
) -> list[SimSchedule]:
    return [SimSchedule(day, ready_by, target) for day in DAYS_OF_WEEK]


def add_mixed_account(state: SimulatorState) -> None:
    """:data:`MIXED_ACCOUNT`: a live EV, the retired registration of an earlier EV, a home
    battery and a heat pump. Only the live EV can be smart-charged."""
    state.add_account(MIXED_ACCOUNT, MIXED_API_KEY)
    state.add_device(
        SimDevice(
            id=MIXED_LIVE_EV_ID,
            account=MIXED_ACCOUNT,
            typename="SmartFlexVehicle",
            provider="BMW",
            device_type="ELECTRIC_VEHICLES",
            make="BMW",
            model="i4",
            preferences=SimPreferences(default_schedules()),
        )
    )
    state.add_device(
        SimDevice(
            id=MIXED_RETIRED_EV_ID,
            account=MIXED_ACCOUNT,
            typename="SmartFlexVehicle",
            provider="TESLA",
            device_type="ELECTRIC_VEHICLES",
            make="Tesla",
            model="Model S",
            preferences=SimPreferences(default_schedules()),
            status_current="RETIRED",
            current_state="RETIRED",
        )
    )
    state.add_device(
        SimDevice(
            id=MIXED_BATTERY_ID,
            account=MIXED_ACCOUNT,
            typename="SmartFlexDevice",
            provider="GIVENERGY",
            device_type="BATTERIES",
            make="",
            model="",
            preferences=SimPreferences(
                default_schedules(), target_type="ABSOLUTE_STATE_OF_CHARGE", grid_export="ENABLED"
            ),
            current_state="SMART_CONTROL_CAPABLE",
        )
    )
    state.add_device(
        SimDevice(
            id=MIXED_HEAT_PUMP_ID,
            account=MIXED_ACCOUNT,
            typename="SmartFlexDevice",
            provider="DAIKIN",
            device_type="HEAT_PUMPS",
            make="",
            model="",
            preferences=SimPreferences(
                default_schedules(21.0),
                mode="HEAT",
                target_type="ABSOLUTE_TEMPERATURE",
                unit="CELSIUS",
                charging_duration_capped="NOT_APPLICABLE",
            ),
            current_state="SMART_CONTROL_CAPABLE",
        )
    )


def _parse_schedule_time(text: str) -> time:
    try:
        parsed = time.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"time {text!r} is not HH:MM") from exc
    return parsed.replace(microsecond=0, tzinfo=None)


def _round_kwh(value: float) -> float:
    return round(value, 2)


class SimulatorState:
    """Everything the simulated Kraken knows; see the module docstring."""

    def __init__(
        self,
        clock: Clock,
        *,
        jwt_lifetime: timedelta = DEFAULT_JWT_LIFETIME,
        refresh_lifetime: timedelta = timedelta(days=7),
        seed: int = 0,
    ) -> None:
        self.clock = clock
        self.jwt_lifetime = jwt_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.seed = seed
        self.time_offset = timedelta(0)
        self.accounts: dict[str, SimAccount] = {}
        self.devices: dict[str, SimDevice] = {}
        self.completed: list[SimCompleted] = []
        self.faults: list[Fault] = []
        self._jwt_secret = secrets.token_hex(32)
        self._jwts: dict[str, _IssuedJwt] = {}
        self._refresh: dict[str, _RefreshGrant] = {}
        self._jwts_issued = 0
        self._rate_window: dict[str, deque[datetime]] = {}
        self._calls_by_operation: Counter[str] = Counter()
        self._calls_by_account: Counter[str] = Counter()
        self._calls_total = 0
        self._call_log: deque[dict[str, Any]] = deque(maxlen=CALL_LOG_LIMIT)
        self.tariffs = SimTariffs()
        self.default_product: SimProduct = "legacy"

    def __repr__(self) -> str:
        return f"SimulatorState(accounts={sorted(self.accounts)}, devices={len(self.devices)})"

    @classmethod
    def with_default_account(
        cls,
        clock: Clock,
        jwt_lifetime: timedelta = DEFAULT_JWT_LIFETIME,
        refresh_lifetime: timedelta = timedelta(days=7),
        seed: int = 0,
        product: SimProduct = "legacy",
    ) -> SimulatorState:
        state = cls(clock, jwt_lifetime=jwt_lifetime, refresh_lifetime=refresh_lifetime, seed=seed)
        state.default_product = product
        state.add_account(DEFAULT_ACCOUNT, DEFAULT_API_KEY)
        state.add_account(SECOND_ACCOUNT, SECOND_API_KEY)
        state.add_device(
            SimDevice(
                id=DEFAULT_EV_ID,
                account=DEFAULT_ACCOUNT,
                typename="SmartFlexVehicle",
                provider="TESLA",
                device_type="ELECTRIC_VEHICLES",
                make="Tesla",
                model="Model 3",
                preferences=SimPreferences(default_schedules()),
            )
        )
        state.add_device(
            SimDevice(
                id=DEFAULT_CHARGER_ID,
                account=SECOND_ACCOUNT,
                typename="SmartFlexChargePoint",
                provider="OHME",
                # A charge point reports ELECTRIC_VEHICLES: Kraken has no CHARGE_POINTS type.
                device_type="ELECTRIC_VEHICLES",
                make="Ohme",
                model="Home Pro",
                preferences=SimPreferences(default_schedules(90.0, time(8, 0))),
            )
        )
        add_mixed_account(state)
        return state

    # --- clock -------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self.clock().astimezone(UTC) + self.time_offset

    def set_time_offset(self, seconds: float) -> datetime:
        self.time_offset = timedelta(seconds=seconds)
        self.advance()
        return self.now()

    # --- setup -------------------------------------------------------------------------------

    def add_account(
        self, number: str, api_key: str, product: SimProduct | None = None
    ) -> SimAccount:
        account = SimAccount(number, api_key)
        self.accounts[number] = account
        self.tariffs.open(number, product or self.default_product)
        return account

    def share_account(self, number: str, api_key: str) -> None:
        """Let ``api_key`` see account ``number`` as well as its own (from its next login)."""
        account = self.accounts.get(number)
        if account is None:
            raise LookupError(f"unknown account {number}")
        if account.api_key != api_key and api_key not in account.shared_with:
            account.shared_with.append(api_key)

    def accounts_for_key(self, api_key: str) -> list[str]:
        """The accounts an API key sees, in the order they were added."""
        return [
            account.number
            for account in self.accounts.values()
            if secrets.compare_digest(account.api_key, api_key)
            or any(secrets.compare_digest(key, api_key) for key in account.shared_with)
        ]

    def add_device(self, device: SimDevice) -> SimDevice:
        if device.account not in self.accounts:
            raise LookupError(f"unknown account {device.account}")
        self.devices[device.id] = device
        return device

    def new_device_id(self) -> str:
        return str(uuid.uuid4())

    # --- time passing --------------------------------------------------------------------------

    def advance(self) -> None:
        """Move every dispatch whose end has passed to the completed list."""
        now = self.now()
        for device in self.devices.values():
            finished = [item for item in device.planned if item.end <= now]
            if not finished:
                continue
            device.planned = [item for item in device.planned if item.end > now]
            for item in finished:
                self._complete(device, item)
            if device.current_state == "BOOSTING" and not any(
                item.type == "BOOST" for item in device.planned
            ):
                device.current_state = self._resting_state(device)
        for device in self.devices.values():
            self._follow_charging(device, now)
        horizon = now - COMPLETED_KEPT
        self.completed = [item for item in self.completed if item.end > horizon]

    def _follow_charging(self, device: SimDevice, now: datetime) -> None:
        """The car charges only while a smart slot runs, it draws and the battery is not full."""
        charging = (
            any(
                item.type == "SMART" and item.draws and item.start <= now < item.end
                for item in device.planned
            )
            and device.soc_percent < 100.0
        )
        if charging and device.current_state == "SMART_CONTROL_CAPABLE":
            device.current_state = "SMART_CONTROL_IN_PROGRESS"
        elif not charging and device.current_state == "SMART_CONTROL_IN_PROGRESS":
            device.current_state = self._resting_state(device)

    def set_draws(self, device: SimDevice, start: datetime, draws: bool) -> SimDispatch:
        """Make the planned slot starting at ``start`` one in which the car draws nothing."""
        item = self._find_planned(device, start)
        item.draws = draws
        self._follow_charging(device, self.now())
        return item

    def migrate(self, account: str, product: SimProduct, at: datetime | None = None) -> None:
        self.tariffs.migrate(account, product, at or self.now())

    def _complete(self, device: SimDevice, item: SimDispatch) -> None:
        if not item.draws:
            return  # planned, never charged: no completed record
        room = max(0.0, (100.0 - device.soc_percent) / 100 * device.battery_kwh)
        if device.battery_kwh > 0 and room <= 0:
            return  # full: the car drew nothing
        kwh = item.kwh
        if kwh is None:
            kwh = device.charger_kw * (item.end - item.start).total_seconds() / 3600
        if device.battery_kwh > 0:
            kwh = min(abs(kwh), room)
        # Kraken fills meta.source for planned dispatches only: completed records, boosts
        # included, come back with source null.
        self.completed.append(
            SimCompleted(
                device.account,
                item.start,
                item.end,
                abs(kwh),
                None,
                "AT_HOME",
                billed_as="BOOST" if item.type == "BOOST" else "SMART",
            )
        )
        if device.battery_kwh > 0:
            added = abs(kwh) / device.battery_kwh * 100
            device.soc_percent = min(100.0, device.soc_percent + added)

    @staticmethod
    def _resting_state(device: SimDevice) -> str:
        return "SMART_CONTROL_OFF" if device.is_suspended else "SMART_CONTROL_CAPABLE"

    # --- authentication ----------------------------------------------------------------------

    def _issue(self, accounts: tuple[str, ...], refresh_token: str | None) -> TokenGrant:
        now = self.now()
        expires_at = now + self.jwt_lifetime
        jti = str(uuid.uuid4())
        payload: dict[str, Any] = {
            "sub": f"kraken|account-user:{accounts[0]}",
            "gty": "EMAIL-AND-PASSWORD" if refresh_token is None else "REFRESH-TOKEN",
            "accounts": list(accounts),
            "jti": jti,
            "tokenUse": "access",
            "iss": ISSUER,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
            "origIat": int(now.timestamp()),
        }
        token = jwt.encode(payload, self._jwt_secret, algorithm="HS256")
        self._jwts[jti] = _IssuedJwt(accounts, datetime.fromtimestamp(payload["exp"], UTC))
        self._jwts_issued += 1
        if refresh_token is None:
            refresh_expires = now + self.refresh_lifetime
        else:
            # Refreshing never extends the refresh token's life.
            refresh_expires = self._refresh[refresh_token].expires_at
        new_refresh = secrets.token_hex(32)
        self._refresh[new_refresh] = _RefreshGrant(accounts, refresh_expires)
        return TokenGrant(token, new_refresh, refresh_expires, payload)

    def obtain_token_with_key(self, api_key: str) -> TokenGrant:
        # A token sees the accounts its key saw at login; refreshing it keeps that list.
        accounts = tuple(self.accounts_for_key(api_key))
        if not accounts:
            raise authentication_failed()
        return self._issue(accounts, None)

    def obtain_token_with_refresh(self, refresh_token: str) -> TokenGrant:
        grant = self._refresh.get(refresh_token)
        if grant is None:
            raise KrakenError(
                "KT-CT-1135",
                "Invalid data.",
                description="Please make sure the refresh token is correct.",
            )
        if grant.expires_at <= self.now():
            raise KrakenError(
                "KT-CT-1134", "Invalid data.", description="The refresh token has expired."
            )
        return self._issue(grant.accounts, refresh_token)

    def authenticate(self, header: str | None) -> str:
        """The first account a request's ``Authorization`` header sees, or a KrakenError."""
        return self.authenticate_all(header)[0]

    def authenticate_all(self, header: str | None) -> tuple[str, ...]:
        """Every account a request's ``Authorization`` header sees, or a KrakenError."""
        if not header:
            raise unauthorized()
        token = header.strip()
        if token[:4].upper() == "JWT ":
            token = token[4:].strip()
        try:
            claims = jwt.decode(
                token,
                self._jwt_secret,
                algorithms=["HS256"],
                # The simulator clock may be ahead of real time; its own expiry check follows.
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            raise KrakenError(
                "KT-CT-1143", "Authorization header is not a valid credential.", "AUTHORIZATION"
            ) from None
        issued = self._jwts.get(str(claims.get("jti")))
        if issued is None:
            raise KrakenError(
                "KT-CT-1143", "Authorization header is not a valid credential.", "AUTHORIZATION"
            )
        if issued.expires_at <= self.now():
            raise KrakenError("KT-CT-1124", "Signature of the JWT has expired.", "AUTHORIZATION")
        return issued.accounts

    def expire_tokens(self, refresh: bool = False) -> None:
        now = self.now()
        for issued in self._jwts.values():
            issued.expires_at = min(issued.expires_at, now)
        if refresh:
            for grant in self._refresh.values():
                grant.expires_at = min(grant.expires_at, now)

    # --- queries -----------------------------------------------------------------------------

    def devices_for(self, account: str, device_id: str | None = None) -> list[SimDevice]:
        if account not in self.accounts:
            raise unauthorized()
        found = [d for d in self.devices.values() if d.account == account]
        if device_id is not None:
            found = [d for d in found if d.id == device_id]
        return found

    def owned_device(self, accounts: tuple[str, ...], device_id: str) -> SimDevice:
        """A device of one of ``accounts`` (those the request's token sees)."""
        device = self.devices.get(device_id)
        if device is None or device.account not in accounts:
            raise KrakenError("KT-CT-4313", "Could not find a device with the given ID.")
        return device

    def device(self, device_id: str) -> SimDevice:
        device = self.devices.get(device_id)
        if device is None:
            raise LookupError(f"unknown device {device_id}")
        return device

    def check_rate_limit(self, account: str) -> None:
        """Count one flexPlannedDispatches call, refusing the 6th within a rolling minute."""
        now = self.now()
        window = self._rate_window.setdefault(account, deque())
        while window and window[0] <= now - RATE_LIMIT_WINDOW:
            window.popleft()
        if len(window) >= RATE_LIMIT_MAX:
            raise KrakenError("KT-CT-1199", "Too many requests.", "RATE_LIMIT")
        window.append(now)

    def planned_for(self, device: SimDevice) -> list[SimDispatch]:
        return sorted(device.planned, key=lambda item: item.start)

    def completed_for(self, account: str) -> list[SimCompleted]:
        """Roughly the last 12 hours, newest first, as the live API returns them."""
        if account not in self.accounts:
            raise unauthorized()
        since = self.now() - COMPLETED_HORIZON
        recent = [c for c in self.completed if c.account == account and c.end > since]
        return sorted(recent, key=lambda item: item.start, reverse=True)

    # --- mutations -----------------------------------------------------------------------------

    def set_preferences(self, device: SimDevice, schedules: list[dict[str, Any]]) -> None:
        problems: list[dict[str, Any]] = []
        parsed: dict[str, SimSchedule] = {}
        for index, item in enumerate(schedules):
            path = ["input", "schedules", index]
            day = str(item.get("dayOfWeek", "")).upper()
            if day not in DAYS_OF_WEEK:
                problems.append(
                    {"message": f"Unknown day {day!r}.", "inputPath": [*path, "dayOfWeek"]}
                )
                continue
            try:
                at = _parse_schedule_time(str(item.get("time", "")))
            except ValueError:
                problems.append({"message": "Invalid time.", "inputPath": [*path, "time"]})
                continue
            if not time(4, 0) <= at <= time(11, 0):
                problems.append(
                    {
                        "message": "Time must be between 04:00 and 11:00.",
                        "inputPath": [*path, "time"],
                    }
                )
            target = item.get("max")
            if target is None or not 10 <= float(target) <= 100:
                problems.append(
                    {"message": "Target must be between 10 and 100.", "inputPath": [*path, "max"]}
                )
                continue
            minimum = item.get("min")
            parsed[day] = SimSchedule(
                day, at, float(target), None if minimum is None else float(minimum)
            )
        missing = [day for day in DAYS_OF_WEEK if day not in parsed]
        if missing and not problems:
            problems.append(
                {
                    "message": f"Schedules must cover every day; missing {', '.join(missing)}.",
                    "inputPath": ["input", "schedules"],
                }
            )
        if problems:
            raise KrakenError(
                "KT-CT-4321", "Serializer validation error.", validationErrors=problems
            )
        device.preferences.schedules = [parsed[day] for day in DAYS_OF_WEEK]
        self.replan(device)

    def boost(self, device: SimDevice) -> None:
        reasons = []
        if device.status_current != "LIVE":
            reasons.append("BC_DEVICE_NOT_YET_LIVE")
        if device.is_suspended:
            reasons.append("BC_DEVICE_SUSPENDED")
        if not device.plugged:
            reasons.append("BC_DEVICE_DISCONNECTED")
        if any(item.type == "BOOST" for item in device.planned):
            reasons.append("BC_BOOST_CHARGE_IN_PROGRESS")
        now = self.now()
        target = self._current_target(device)
        needed = planner.energy_needed_kwh(device.soc_percent, target, device.battery_kwh)
        if not reasons and needed < 0.01:
            reasons.append("BC_DEVICE_FULLY_CHARGED")
        if reasons:
            raise KrakenError(
                "KT-CT-4357",
                "Unable to trigger boost charge.",
                boostChargeRefusalReasons=reasons,
            )
        self._drop_smart(device)
        needed = planner.energy_needed_kwh(device.soc_percent, target, device.battery_kwh)
        end = planner.ceil_minute(now + timedelta(hours=needed / device.charger_kw))
        end = max(end, planner.ceil_minute(now + timedelta(minutes=1)))
        device.planned.append(SimDispatch(now, end, "BOOST", _round_kwh(needed)))
        device.current_state = "BOOSTING"

    def cancel_boost(self, device: SimDevice) -> None:
        now = self.now()
        for item in [item for item in device.planned if item.type == "BOOST"]:
            device.planned.remove(item)
            if now - item.start >= timedelta(minutes=1):
                done = device.charger_kw * (now - item.start).total_seconds() / 3600
                self._complete(device, SimDispatch(item.start, now, "BOOST", _round_kwh(done)))
        device.current_state = self._resting_state(device)
        self.replan(device)

    def suspend(self, device: SimDevice) -> None:
        device.is_suspended = True
        device.current_state = "SMART_CONTROL_OFF"
        self._drop_smart(device)

    def unsuspend(self, device: SimDevice) -> None:
        device.is_suspended = False
        device.current_state = "SMART_CONTROL_CAPABLE"
        self.replan(device)

    # --- planning ------------------------------------------------------------------------------

    def _current_target(self, device: SimDevice) -> float:
        ready = self._ready_by(device)
        return DEFAULT_TARGET_PERCENT if ready is None else ready.target_percent

    def _ready_by(self, device: SimDevice) -> planner.ReadyBy | None:
        schedules = [(s.day_of_week, s.time, s.max) for s in device.preferences.schedules]
        # Plans start at the next whole minute; a ready-by before that cannot be charged for,
        # so the one after it is the deadline (else a plug-in at 07:29:30 planned nothing).
        return planner.next_ready_by(planner.ceil_minute(self.now()), schedules)

    def _drop_smart(self, device: SimDevice) -> None:
        """Withdraw every SMART slot; the part of a running one already charged is completed."""
        now = self.now()
        for item in [i for i in device.planned if i.type == "SMART"]:
            device.planned.remove(item)
            if item.start <= now - timedelta(minutes=1):
                done = device.charger_kw * (now - item.start).total_seconds() / 3600
                if item.kwh is not None:
                    done = min(done, abs(item.kwh))
                self._complete(device, SimDispatch(item.start, now, "SMART", _round_kwh(done)))

    def _plan(self, device: SimDevice) -> None:
        if (
            not device.plugged
            or device.is_suspended
            or device.status_current != "LIVE"
            or device.current_state == "BOOSTING"
        ):
            return
        ready = self._ready_by(device)
        if ready is None:
            return
        now = self.now()
        slots = planner.plan_smart_charge(
            PlanRequest(
                now=now,
                soc_percent=device.soc_percent,
                target_percent=ready.target_percent,
                battery_kwh=device.battery_kwh,
                charger_kw=device.charger_kw,
                ready_by=ready.at,
                seed=f"{self.seed}:{device.id}:{now.isoformat()}:{device.soc_percent:.3f}",
            )
        )
        device.planned += [
            SimDispatch(slot.start, slot.end, "SMART", _round_kwh(slot.kwh)) for slot in slots
        ]

    def replan(self, device: SimDevice) -> None:
        """Replace the device's SMART slots by a fresh plan from now (a running slot is cut)."""
        self._drop_smart(device)
        self._plan(device)

    # --- control API -------------------------------------------------------------------------

    def plug(self, device: SimDevice, plugged: bool) -> None:
        device.plugged = plugged
        self.replan(device)

    def set_soc(self, device: SimDevice, soc: float) -> None:
        if not 0 <= soc <= 100:
            raise ValueError("soc must be between 0 and 100")
        self._drop_smart(device)
        device.soc_percent = float(soc)
        self._plan(device)

    def set_device_state(self, device: SimDevice, state: str) -> None:
        if state not in DEVICE_STATES:
            raise ValueError(f"unknown state {state!r}; one of {', '.join(DEVICE_STATES)}")
        device.current_state = state

    def add_dispatch(
        self,
        device: SimDevice,
        start: datetime,
        end: datetime,
        type_: str,
        kwh: float | None,
    ) -> SimDispatch:
        if type_ not in DISPATCH_TYPES:
            raise ValueError(f"type must be one of {', '.join(DISPATCH_TYPES)}")
        if end <= start:
            raise ValueError("end must be after start")
        item = SimDispatch(start, end, type_, kwh)
        device.planned.append(item)
        return item

    def _find_planned(self, device: SimDevice, start: datetime) -> SimDispatch:
        for item in device.planned:
            if item.start == start:
                return item
        raise LookupError(f"no planned dispatch starting at {iso_z(start)}")

    def remove_dispatch(self, device: SimDevice, start: datetime) -> None:
        device.planned.remove(self._find_planned(device, start))

    def shift_dispatch(
        self, device: SimDevice, start: datetime, new_start: datetime, new_end: datetime
    ) -> SimDispatch:
        if new_end <= new_start:
            raise ValueError("new_end must be after new_start")
        item = self._find_planned(device, start)
        item.start, item.end = new_start, new_end
        return item

    def clear_dispatches(self, device: SimDevice) -> None:
        device.planned = []

    def add_completed(
        self,
        account: str,
        start: datetime,
        end: datetime,
        kwh: float,
        source: str | None,
        location: str | None,
    ) -> SimCompleted:
        if account not in self.accounts:
            raise LookupError(f"unknown account {account}")
        if end <= start:
            raise ValueError("end must be after start")
        item = SimCompleted(account, start, end, abs(kwh), source, location)
        self.completed.append(item)
        return item

    # --- faults ------------------------------------------------------------------------------

    def add_fault(
        self,
        kind: str,
        count: int = 1,
        include_auth: bool = False,
        delay: float = 60.0,
        field: str = RATE_LIMIT_FIELD,
    ) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if count < 1:
            raise ValueError("count must be at least 1")
        if delay < 0:
            raise ValueError("delay must not be negative")
        fault = Fault(kind, count, include_auth, delay, field)
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        self.faults = []

    def take_fault(self, fields: list[str]) -> Fault | None:
        """Consume one use of the first queued fault that applies to a request for ``fields``."""
        auth_only = bool(fields) and all(name == "obtainKrakenToken" for name in fields)
        for fault in self.faults:
            if auth_only and not fault.include_auth:
                continue
            if fault.kind in FIELD_FAULTS and fault.field not in fields:
                continue
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.faults.remove(fault)
            return Fault(fault.kind, 1, fault.include_auth, fault.delay, fault.field)
        return None

    # --- call accounting -----------------------------------------------------------------------

    def record_call(
        self, operations: list[str], account: str | None, status: int, *, at: datetime | None = None
    ) -> None:
        """Count one request; ``at`` is when it arrived (default: now)."""
        self._calls_total += 1
        self._calls_by_operation.update(operations)
        if account is not None:
            self._calls_by_account[account] += 1
        self._call_log.append(
            {
                "at": iso_z(at if at is not None else self.now()),
                "operations": operations,
                "account": account,
                "status": status,
            }
        )

    def calls(self) -> dict[str, Any]:
        return {
            "total": self._calls_total,
            "by_operation": dict(self._calls_by_operation),
            "by_account": dict(self._calls_by_account),
            "log": list(self._call_log),
        }

    def reset_calls(self) -> None:
        self._calls_total = 0
        self._calls_by_operation.clear()
        self._calls_by_account.clear()
        self._call_log.clear()

    # --- snapshot ------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole state as JSON-ready data, without API keys or tokens."""
        now = self.now()
        return {
            "now": iso_z(now),
            "time_offset_seconds": self.time_offset.total_seconds(),
            "accounts": [
                {
                    "number": number,
                    "devices": [d.id for d in self.devices.values() if d.account == number],
                }
                for number in self.accounts
            ],
            "devices": [_device_json(device) for device in self.devices.values()],
            "agreements": self.tariffs.snapshot(),
            "completed": [
                {
                    "account": item.account,
                    "start": iso_z(item.start),
                    "end": iso_z(item.end),
                    "kwh": item.kwh,
                    "source": item.source,
                    "location": item.location,
                }
                for item in sorted(self.completed, key=lambda c: c.start)
            ],
            "tokens": {
                "jwt_issued": self._jwts_issued,
                "jwt_active": sum(1 for t in self._jwts.values() if t.expires_at > now),
                "refresh_active": sum(1 for r in self._refresh.values() if r.expires_at > now),
            },
            "faults": [
                {
                    "kind": f.kind,
                    "remaining": f.remaining,
                    "include_auth": f.include_auth,
                    "delay": f.delay,
                    "field": f.field,
                }
                for f in self.faults
            ],
        }


def _device_json(device: SimDevice) -> dict[str, Any]:
    return {
        "id": device.id,
        "account": device.account,
        "typename": device.typename,
        "provider": device.provider,
        "device_type": device.device_type,
        "make": device.make,
        "model": device.model,
        "status": device.status_current,
        "current_state": device.current_state,
        "is_suspended": device.is_suspended,
        "plugged": device.plugged,
        "soc_percent": round(device.soc_percent, 2),
        "battery_kwh": device.battery_kwh,
        "charger_kw": device.charger_kw,
        "preferences": {
            "mode": device.preferences.mode,
            "target_type": device.preferences.target_type,
            "unit": device.preferences.unit,
            "is_charging_duration_capped": device.preferences.charging_duration_capped,
            "schedules": [
                {
                    "day_of_week": s.day_of_week,
                    "time": s.time.strftime("%H:%M:%S"),
                    "min": s.min,
                    "max": s.max,
                }
                for s in device.preferences.schedules
            ],
        },
        "planned": [
            {
                "start": iso_z(item.start),
                "end": iso_z(item.end),
                "type": item.type,
                "kwh": item.kwh,
                "draws": item.draws,
            }
            for item in sorted(device.planned, key=lambda i: i.start)
        ],
    }
