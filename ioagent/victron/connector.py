"""Victron GX connector: keeps the owned ESS scheduled-charge slots in step with the plan.

It has its own MQTT connection to the GX (a fresh aiomqtt client per attempt), keeps the GX's
N/ notifications flowing with ``R/<id>/keepalive``, reads the owned slots, writes only the
fields that differ (``W/`` is never retained: the GX would apply it again whenever a client
subscribes) and confirms each write by reading it back, because the GX refuses values silently.
A watchdog notices a GX that falls silent while its broker still answers (a stalled
dbus-flashmq, a restarted or replaced GX), says so in the status and brings the flow back.

Two GX MQTT services exist, and each connection finds out which one it talks to:

* **dbus-flashmq** (Venus OS 3.20 and later) answers reads without a keepalive and beats
  ``N/<id>/heartbeat`` every 3 s while kept alive. Every keepalive is suppress-republish: the
  connector reads what it needs instead of asking for a full republish.
* **dbus-mqtt** (older) sends no heartbeat, publishes retained, announces itself with a
  retained ``N/<id>/keepalive``, reads a keepalive payload as the list of topics to keep alive,
  and answers a subtree read with one JSON object. The keepalive names just ioagent's topics,
  and a read of the scheduled-charge status each round stands in for the heartbeat.

The decisions live in :mod:`ioagent.victron.slots`; this module is the I/O around them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from aiomqtt import Client, MqttError, TLSParameters

from ioagent.config import VictronSettings
from ioagent.logs import get_logger, redact, register_secret
from ioagent.mqtt.bridge import describe_connection_error
from ioagent.timeutil import Clock, iso_z, utc_now
from ioagent.victron.slots import (
    FIELDS,
    Interval,
    SlotPlan,
    SlotState,
    WindowLike,
    Write,
    as_interval,
    desired_slots,
    plan_writes,
)

log = get_logger(__name__)

SCHEDULE_PATH = "settings/0/Settings/CGwacs/BatteryLife/Schedule/Charge"
SCHEDULED_CHARGE_STATUS_PATH = "system/0/Control/ScheduledChargeStatus"
BATTERY_LIFE_STATE_PATH = "settings/0/Settings/CGwacs/BatteryLife/State"
HEARTBEAT_PATH = "heartbeat"
KEEPALIVE_PATH = "keepalive"
SERIAL_FILTER = "N/+/system/0/Serial"
SUPPRESS_REPUBLISH = json.dumps({"keepalive-options": ["suppress-republish"]})
FLASHMQ = "dbus-flashmq"
DBUS_MQTT = "dbus-mqtt"
KEEP_BATTERIES_CHARGED = 9
"""``/Settings/CGwacs/BatteryLife/State`` while the ESS mode is "Keep batteries charged"."""

SCHEDULED_CHARGE_WORDS = {
    0: "OK: scheduled charging can run",
    1: "ESS is not installed: scheduled charging cannot run",
    2: "The GX knows no battery state of charge: scheduled charging cannot run",
    3: "ESS mode is Keep batteries charged: scheduled charging cannot run",
    4: "Scheduled charging is blocked, for example by Dynamic ESS: turn Dynamic ESS off",
}

T = TypeVar("T")

StatusPublisher = Callable[[dict[str, Any]], Awaitable[None]]


class GxSilent(Exception):
    """The GX stayed silent through several fresh keepalives: start a new connection."""


def describe_scheduled_charge(code: int | None, battery_life_state: int | None) -> str:
    """Clear words for ``/Control/ScheduledChargeStatus`` (and the ESS mode when unknown)."""
    if code is None:
        if battery_life_state == KEEP_BATTERIES_CHARGED:
            return SCHEDULED_CHARGE_WORDS[3]
        return "unknown: the GX has not reported its scheduled-charge status"
    return SCHEDULED_CHARGE_WORDS.get(code, f"unknown scheduled-charge status {code}")


def _as_number_or_text(value: object) -> int | str | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return round(value)
    if isinstance(value, str):
        return value
    return None


def parse_fields(payload: bytes) -> dict[str, int | None] | None:
    """dbus-mqtt's answer to a subtree read: a JSON object of the leaves, or ``None``."""
    try:
        value = json.loads(payload)["value"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(value, dict):
        return None
    fields: dict[str, int | None] = {}
    for name, leaf in value.items():
        number = _as_number_or_text(leaf)
        fields[str(name).lstrip("/")] = number if isinstance(number, int) else None
    return fields


def dbus_mqtt_keepalive(owned: Iterable[int]) -> str:
    """The dbus-mqtt keepalive: the list of the topics ioagent needs, and nothing else.

    Each owned slot is named twice: its fields (``…/3/#``) and its own topic (``…/3``), where
    dbus-mqtt answers a subtree read, in case its ``#`` does not match the parent level."""
    wanted = [
        topic
        for slot in owned
        for topic in (f"{SCHEDULE_PATH}/{slot}", f"{SCHEDULE_PATH}/{slot}/#")
    ]
    return json.dumps([*wanted, SCHEDULED_CHARGE_STATUS_PATH, BATTERY_LIFE_STATE_PATH])


def parse_value(payload: bytes) -> int | str | None:
    """The ``value`` of an N/ payload as an int (or text); an empty payload means gone."""
    if not payload:
        return None
    try:
        value = json.loads(payload)["value"]
    except (ValueError, TypeError, KeyError):
        return None
    return _as_number_or_text(value)


def reconnect_delay(attempt: int, initial: float, maximum: float) -> float:
    """Capped exponential backoff with jitter, so many clients do not reconnect in step."""
    ceiling = min(maximum, initial * 2 ** min(attempt, 30))
    return random.uniform(ceiling / 2, ceiling)


def _hhmm(seconds: int) -> str:
    return f"{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}"


def _describe_error(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return redact(f"{type(exc).__name__}: {exc}")


async def _keeping_cancellation(call: Awaitable[T]) -> T:
    """Await an aiomqtt call, then re-raise a cancellation it may have swallowed.

    aiomqtt waits with ``asyncio.wait_for``, which on Python 3.11 can swallow a cancellation
    that races with completion; without this the connector could not always be stopped.
    """
    result = await call
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    return result


async def _publish(client: Client, topic: str, payload: str | bytes) -> None:
    """Publish to the GX; never retained: dbus-flashmq would apply a retained write again every
    time any client subscribes to ``W/#`` or ``#``, dbus-mqtt whenever it reconnects."""
    await _keeping_cancellation(client.publish(topic, payload, retain=False))


class VictronConnector:
    """Drives the owned scheduled-charge slots of one GX. Run :meth:`run` as a task for ever
    and call :meth:`update_windows` whenever the off-peak plan changes."""

    def __init__(
        self,
        settings: VictronSettings,
        *,
        publish_status: StatusPublisher,
        clock: Clock = utc_now,
        keepalive_interval: float = 30.0,
        silence_timeout: float | None = None,
        silent_rounds_before_reconnect: int = 3,
        reevaluate_interval: float = 60.0,
        read_timeout: float = 10.0,
        confirm_timeout: float = 5.0,
        write_attempts: int = 3,
        reconnect_initial: float = 1.0,
        reconnect_max: float = 60.0,
        detect_timeout: float = 10.0,
    ) -> None:
        self._settings = settings
        self._publish_status = publish_status
        self._clock = clock
        self._keepalive_interval = keepalive_interval
        # The GX sends a heartbeat every few seconds while kept alive, so two keepalive
        # intervals without a word means it is no longer listening to us.
        self._silence_timeout = (
            2 * keepalive_interval if silence_timeout is None else silence_timeout
        )
        self._silent_rounds_before_reconnect = silent_rounds_before_reconnect
        self._reevaluate_interval = reevaluate_interval
        self._read_timeout = read_timeout
        self._confirm_timeout = confirm_timeout
        self._write_attempts = write_attempts
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        # dbus-flashmq beats at once and then every 3 s after a keepalive: silence this long
        # (and no retained dbus-mqtt announcement either) means dbus-mqtt.
        self._detect_timeout = detect_timeout
        if settings.password is not None:
            register_secret(settings.password.get_secret_value())

        self._zone = ZoneInfo(settings.timezone)
        self._owned = list(settings.slots)
        self._windows: list[Interval] = []
        self._plan_now: datetime | None = None
        self._wake = asyncio.Event()
        self._values_changed = asyncio.Condition()
        self._portal_found = asyncio.Event()
        self._portal: str | None = settings.portal_id or None
        if self._portal:
            self._portal_found.set()
        self._heard = asyncio.Event()
        self._gx_silent = False
        self._broker: str | None = None if settings.broker == "auto" else settings.broker
        self._broker_found = asyncio.Event()
        self._answers: dict[tuple[int, str], int] = {}
        """How many live answers each owned (slot, field) got: tells a refused write (answered
        with the old value) from a hung settings service (no answer at all)."""

        self._connected = False
        self._values: dict[int, dict[str, int | None]] = {slot: {} for slot in self._owned}
        self._plans: dict[int, SlotPlan] = {}
        self._pending: list[Write] = []
        self._scheduled_charge_code: int | None = None
        self._battery_life_state: int | None = None
        self._last_confirmed_write: dict[str, Any] | None = None
        self._error: str | None = None
        self._last_status: dict[str, Any] | None = None
        self._logged_dry_run: list[Write] | None = None
        self.completed_syncs = 0
        """Sync rounds finished (plan compared with the GX); lets callers see progress."""

    # --- public interface -------------------------------------------------------------

    async def update_windows(
        self, windows: Iterable[WindowLike], now: datetime | None = None
    ) -> None:
        """Take a new off-peak plan (UTC windows) and sync it to the GX soon."""
        self._windows = [as_interval(window) for window in windows]
        self._plan_now = now
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """The status document the daemon publishes retained at ``{base}/{acct}/victron``."""
        slots: dict[str, dict[str, Any]] = {}
        for slot in self._owned:
            state = SlotState.from_fields(self._values.get(slot, {}))
            plan = self._plans.get(slot)
            holds_plan = (
                state is not None
                and plan is not None
                and not plan_writes({slot: state}, {slot: plan.state})
            )
            window = plan.window if plan is not None and holds_plan else None
            slots[str(slot)] = {
                "day": None if state is None else state.day,
                "start": None if state is None else _hhmm(state.start),
                "duration_min": None if state is None else state.duration // 60,
                "soc": None if state is None else state.soc,
                "enabled": state is not None and state.enabled,
                "window_start": None if window is None else iso_z(window.start),
                "window_end": None if window is None else iso_z(window.end),
            }
        return {
            "connected": self._connected,
            "gx_silent": self._gx_silent,
            "portal_id": self._portal,
            "broker": self._broker,
            "slots": slots,
            "pending_writes": [
                {"slot": w.slot, "field": w.field, "value": w.value} for w in self._pending
            ],
            "last_confirmed_write": self._last_confirmed_write,
            "scheduled_charge_status": describe_scheduled_charge(
                self._scheduled_charge_code, self._battery_life_state
            ),
            "dry_run": self._settings.dry_run,
            "error": self._silence_words() if self._gx_silent and self._connected else self._error,
        }

    async def run(self) -> None:
        """Connect, sync and reconnect for ever; only cancellation ends it."""
        attempt = 0
        while True:
            error: str | None = None
            try:
                await self._connect_and_serve()
            except Exception as exc:  # a broken GX link must never end the daemon
                error = self._describe_failure(exc)
            if self._connected:
                attempt = 0
            self._connected = False
            delay = reconnect_delay(attempt, self._reconnect_initial, self._reconnect_max)
            attempt += 1
            if error is not None:
                self._error = error
                log.warning(
                    "victron.disconnected",
                    host=self._settings.host,
                    error=error,
                    attempt=attempt,
                    retry_in=round(delay, 2),
                )
            await self._report()
            await asyncio.sleep(delay)

    # --- connection -----------------------------------------------------------------------

    def _describe_failure(self, exc: BaseException) -> str:
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        if isinstance(exc, GxSilent):
            return str(exc)
        if isinstance(exc, MqttError | OSError):
            # The bridge's words name the likely cause (a wrong password, TLS, an unreachable host).
            reason = describe_connection_error(exc, self._settings.host, self._settings.port)
            return redact(f"GX connection lost or refused: {reason}")
        return f"GX connection lost or refused: {_describe_error(exc)}"

    def _new_client(self) -> Client:
        settings = self._settings
        tls_params = None
        if settings.tls.enabled:
            tls = settings.tls
            tls_params = TLSParameters(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.certfile) if tls.certfile else None,
                keyfile=str(tls.keyfile) if tls.keyfile else None,
            )
        return Client(
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            identifier=f"ioagent-victron-{secrets.token_hex(4)}",
            keepalive=30,
            timeout=10,
            tls_params=tls_params,
            tls_insecure=settings.tls.insecure if settings.tls.enabled else None,
        )

    async def _connect_and_serve(self) -> None:
        async with self._new_client() as client:
            self._connected = True
            self._error = None
            # The GX may have changed while we were away: forget and re-read everything.
            self._values = {slot: {} for slot in self._owned}
            if not self._settings.portal_id:
                # A replaced GX has a new portal id: take whichever GX announces itself now.
                self._portal_found.clear()
            if self._settings.broker == "auto":
                # A GX may have been updated (or replaced) meanwhile: find out again.
                self._broker = None
                self._broker_found.clear()
            log.info("victron.connected", host=self._settings.host, port=self._settings.port)
            await self._report()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._read_messages(client))
                tasks.create_task(self._serve(client))
                tasks.create_task(self._watch_gx(client))

    async def _serve(self, client: Client) -> None:
        await _keeping_cancellation(client.subscribe(SERIAL_FILTER))
        await self._portal_found.wait()
        portal = self._portal
        assert portal is not None  # set before the event
        for slot in self._owned:
            # "/#" also matches the slot's own topic, where dbus-mqtt answers a subtree read.
            await _keeping_cancellation(client.subscribe(f"N/{portal}/{SCHEDULE_PATH}/{slot}/#"))
        for path in (
            SCHEDULED_CHARGE_STATUS_PATH,
            BATTERY_LIFE_STATE_PATH,
            HEARTBEAT_PATH,
            KEEPALIVE_PATH,
        ):
            await _keeping_cancellation(client.subscribe(f"N/{portal}/{path}"))
        if self._settings.broker == "auto":
            # The cheap keepalive first: on dbus-flashmq it is all that is needed (reads are
            # answered anyway, and the heartbeat it starts tells us the broker); on dbus-mqtt
            # it keeps nothing alive and costs nothing.
            await _publish(client, f"R/{portal}/{KEEPALIVE_PATH}", SUPPRESS_REPUBLISH)
            if await self._find_broker() == DBUS_MQTT:
                await self._keep_gx_alive(client, portal)
        else:
            await self._keep_gx_alive(client, portal)
        # Read only what ioagent needs; never ask for a full republish.
        await self._request_reads(client, portal, self._owned)
        for path in (SCHEDULED_CHARGE_STATUS_PATH, BATTERY_LIFE_STATE_PATH):
            await _publish(client, f"R/{portal}/{path}", b"")
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._keep_alive(client, portal))
            tasks.create_task(self._sync_loop(client, portal))

    async def _find_broker(self) -> str:
        """Wait for the heartbeat (dbus-flashmq) or dbus-mqtt's retained announcement."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._detect_timeout):
                await self._broker_found.wait()
        broker = self._broker
        if broker is None:
            broker = self._broker = DBUS_MQTT
            self._broker_found.set()
            log.info(
                "victron.broker_detected",
                broker=broker,
                reason=f"no heartbeat within {self._detect_timeout:g} s of a keepalive",
            )
        await self._report()
        return broker

    def _detected(self, broker: str, reason: str) -> None:
        if self._settings.broker != "auto" or self._broker == broker:
            return
        if self._broker is not None:
            log.warning("victron.broker_changed", old=self._broker, broker=broker, reason=reason)
        else:
            log.info("victron.broker_detected", broker=broker, reason=reason)
        self._broker = broker
        self._broker_found.set()

    async def _keep_gx_alive(self, client: Client, portal: str) -> None:
        """One keepalive in the broker's own terms; never a full republish."""
        if self._broker == DBUS_MQTT:
            await _publish(client, f"R/{portal}/{KEEPALIVE_PATH}", dbus_mqtt_keepalive(self._owned))
            # dbus-mqtt has no heartbeat: a cheap read it answers shows that it listens.
            await _publish(client, f"R/{portal}/{SCHEDULED_CHARGE_STATUS_PATH}", b"")
        else:
            await _publish(client, f"R/{portal}/{KEEPALIVE_PATH}", SUPPRESS_REPUBLISH)

    async def _keep_alive(self, client: Client, portal: str) -> None:
        while True:
            await asyncio.sleep(self._keepalive_interval)
            await self._keep_gx_alive(client, portal)

    def _alive_evidence(self) -> str:
        if self._broker == DBUS_MQTT:
            return "it answers other reads"
        return "its heartbeat goes on"

    def _silence_words(self) -> str:
        seconds = f"{self._silence_timeout:g} s"
        if not self._portal_found.is_set():
            return (
                f"connected to the GX broker, but no GX announced itself on {SERIAL_FILTER} "
                f"for {seconds}: is MQTT enabled on the GX? Otherwise set portal_id"
            )
        if self._broker == DBUS_MQTT:
            return (
                f"connected to the GX broker, but the GX (portal {self._portal}, dbus-mqtt) has "
                f"answered no read for {seconds}: asking it again"
            )
        return (
            f"connected to the GX broker, but the GX (portal {self._portal}) has sent nothing, "
            f"not even a heartbeat, for {seconds}: asking it again"
        )

    async def _watch_gx(self, client: Client) -> None:
        """Notice a GX that has stopped talking while its broker still answers, and revive it.

        The broker's own MQTT keepalive cannot see this: dbus-flashmq may stall or restart and
        forget our keepalive, and the broker would carry on answering pings.
        """
        unanswered = 0
        while True:
            self._heard.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._silence_timeout):
                    await self._heard.wait()
            if self._heard.is_set():
                unanswered = 0
                if self._gx_silent:
                    await self._gx_back(client)
                continue
            unanswered += 1
            if not self._gx_silent:
                self._gx_silent = True
                log.warning(
                    "victron.gx_silent", portal_id=self._portal, silent_s=self._silence_timeout
                )
                await self._report()
            if unanswered >= self._silent_rounds_before_reconnect:
                raise GxSilent(
                    f"the GX (portal {self._portal}) sent nothing for "
                    f"{unanswered * self._silence_timeout:g} s despite fresh keepalives: "
                    "reconnecting"
                )
            if self._portal_found.is_set() and self._portal is not None:
                # A fresh keepalive restarts a flow the GX has forgotten; the re-reads once it
                # answers bring back what ioagent needs, without a full republish.
                await self._keep_gx_alive(client, self._portal)

    async def _gx_back(self, client: Client) -> None:
        self._gx_silent = False
        log.info("victron.gx_back", portal_id=self._portal)
        if self._portal_found.is_set() and self._portal is not None:
            # The GX may have restarted or been edited meanwhile: re-read it, then re-sync.
            async with self._values_changed:
                self._values = {slot: {} for slot in self._owned}
                self._values_changed.notify_all()
            await self._request_reads(client, self._portal, self._owned)
            for path in (SCHEDULED_CHARGE_STATUS_PATH, BATTERY_LIFE_STATE_PATH):
                await _publish(client, f"R/{self._portal}/{path}", b"")
            self._wake.set()
        await self._report()

    async def _request_reads(self, client: Client, portal: str, slots: Iterable[int]) -> None:
        for slot in slots:
            await _publish(client, f"R/{portal}/{SCHEDULE_PATH}/{slot}", b"")

    # --- incoming notifications -------------------------------------------------------

    async def _read_messages(self, client: Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            await self._on_notification(message.topic.value, payload, retained=message.retain)

    async def _on_notification(self, topic: str, payload: bytes, *, retained: bool = False) -> None:
        parts = topic.split("/")
        if len(parts) < 3 or parts[0] != "N":
            return
        path = "/".join(parts[2:])
        if path == "system/0/Serial" and not self._portal_found.is_set():
            value = parse_value(payload)
            if value is not None:
                if self._portal is not None and str(value) != self._portal:
                    log.warning("victron.portal_changed", old=self._portal, portal_id=str(value))
                self._portal = str(value)
                log.info("victron.portal_found", portal_id=self._portal)
                self._portal_found.set()
            return
        if parts[1] != self._portal or not self._portal_found.is_set():
            return
        if path == HEARTBEAT_PATH and not retained:
            self._detected(FLASHMQ, "heartbeat")
        elif path == KEEPALIVE_PATH and retained and payload:
            self._detected(DBUS_MQTT, f"retained N/{self._portal}/keepalive")
        if retained:
            # The broker's memory, not a GX that is alive (dbus-mqtt retains everything it
            # publishes): values come from the GX's answers to our reads instead.
            return
        self._heard.set()
        value = parse_value(payload)
        number = value if isinstance(value, int) else None
        if path.startswith(SCHEDULE_PATH + "/"):
            slot_text, _, field = path[len(SCHEDULE_PATH) + 1 :].partition("/")
            if not slot_text.isdigit() or int(slot_text) not in self._values:
                return
            if field in FIELDS:
                fields: dict[str, int | None] = {field: number}
            else:
                subtree = parse_fields(payload) if not field else None
                if subtree is None:
                    return
                self._detected(DBUS_MQTT, "a subtree read answered as one JSON object")
                fields = {name: subtree[name] for name in FIELDS if name in subtree}
            slot = int(slot_text)
            async with self._values_changed:
                for name, known in fields.items():
                    self._values[slot][name] = known
                    if payload:  # an empty payload clears a topic; it answers nothing
                        self._answers[(slot, name)] = self._answers.get((slot, name), 0) + 1
                self._values_changed.notify_all()
        elif path == SCHEDULED_CHARGE_STATUS_PATH:
            self._scheduled_charge_code = number
        elif path == BATTERY_LIFE_STATE_PATH:
            self._battery_life_state = number
        else:
            return  # heartbeat: its arrival alone keeps the connection honest
        await self._report()

    async def _wait_for_values(self, predicate: Callable[[], bool], within: float) -> bool:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
        try:
            async with asyncio.timeout(within), self._values_changed:
                await self._values_changed.wait_for(predicate)
        except TimeoutError:
            return False
        return True

    def _all_slots_known(self) -> bool:
        return all(SlotState.from_fields(self._values[slot]) is not None for slot in self._owned)

    # --- syncing ----------------------------------------------------------------------

    async def _sync_loop(self, client: Client, portal: str) -> None:
        while True:
            self._wake.clear()
            # Writes to a silent GX could not be confirmed; the watchdog wakes us once it is back.
            if not self._gx_silent:
                await self._sync(client, portal)
                self.completed_syncs += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._reevaluate_interval):
                    await self._wake.wait()

    async def _sync(self, client: Client, portal: str) -> None:
        if not self._all_slots_known():
            missing = [s for s in self._owned if SlotState.from_fields(self._values[s]) is None]
            await self._request_reads(client, portal, missing)
            if not await self._wait_for_values(self._all_slots_known, self._read_timeout):
                if self._gx_silent or self._broker is None:
                    advice = "is it online with MQTT enabled?"
                else:
                    advice = (
                        f"the GX is alive ({self._alive_evidence()}), so its settings service "
                        "(localsettings) may be hung; restarting the GX clears that"
                    )
                self._error = f"the GX did not answer reads of slots {missing}: {advice}"
                log.warning("victron.read_unanswered", slots=missing)
                await self._report()
                return
        now = self._plan_now or self._clock()
        self._plan_now = None
        self._plans = desired_slots(
            self._windows,
            now=now,
            zone=self._zone,
            owned=self._owned,
            soc=self._settings.soc,
            allow_discharge=self._settings.allow_discharge,
            current=self._values,
        )
        writes = plan_writes(self._values, self._plans)
        self._pending = writes
        if self._settings.dry_run:
            if writes != self._logged_dry_run:
                for write in writes:
                    log.info(
                        "victron.dry_run_write",
                        topic=f"W/{portal}/{SCHEDULE_PATH}/{write.slot}/{write.field}",
                        value=write.value,
                    )
                self._logged_dry_run = writes
            self._error = None
            await self._report()
            return
        for write in writes:
            failure = await self._write_confirmed(client, portal, write)
            if failure is not None:
                self._error = (
                    f"the GX did not confirm Schedule/Charge/{write.slot}/{write.field} = "
                    f"{write.value} after {self._write_attempts} attempts: {failure}"
                )
                log.error(
                    "victron.write_failed", slot=write.slot, field=write.field, reason=failure
                )
                await self._report()
                return
            self._pending = self._pending[1:]
        self._error = None
        await self._report()

    async def _write_confirmed(self, client: Client, portal: str, write: Write) -> str | None:
        """Write and read back; ``None`` once confirmed, otherwise why not, in words."""
        path = f"{SCHEDULE_PATH}/{write.slot}/{write.field}"
        answers_before = self._answers.get((write.slot, write.field), 0)

        def confirmed() -> bool:
            return self._values[write.slot].get(write.field) == write.value

        for attempt in range(1, self._write_attempts + 1):
            await _publish(client, f"W/{portal}/{path}", json.dumps({"value": write.value}))
            await _publish(client, f"R/{portal}/{path}", b"")
            if await self._wait_for_values(confirmed, self._confirm_timeout):
                self._last_confirmed_write = {
                    "at": iso_z(self._clock()),
                    "slot": write.slot,
                    "field": write.field,
                    "value": write.value,
                }
                log.info(
                    "victron.write_confirmed", slot=write.slot, field=write.field, value=write.value
                )
                return None
            log.warning(
                "victron.write_unconfirmed", slot=write.slot, field=write.field, attempt=attempt
            )
        if self._gx_silent:
            return "the GX fell silent meanwhile"
        if self._answers.get((write.slot, write.field), 0) > answers_before:
            held = self._values[write.slot].get(write.field)
            return (
                f"it reads back {held}, so it refused the value (the GX refuses values it does "
                "not accept, such as out-of-range ones, without a word)"
            )
        return (
            f"it did not answer the read-back at all, although it is alive "
            f"({self._alive_evidence()}): its settings service (localsettings) may be hung; "
            "restarting the GX clears that"
        )

    async def _report(self) -> None:
        status = self.status()
        if status == self._last_status:
            return
        self._last_status = status
        try:
            await self._publish_status(status)
        except Exception as exc:  # the status is advisory; a failed publish must not stop syncing
            log.warning("victron.status_publish_failed", error=_describe_error(exc))
