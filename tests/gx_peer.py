"""A fake Victron GX on the test broker, as strict as the real Venus OS MQTT stack.

It follows the facts in docs/victron.md and the shared GX reference (what the real FlashMQ +
dbus-flashmq + localsettings, and the older dbus-mqtt, were seen to do). Two modes:

``dbus-flashmq`` (Venus OS 3.20 and later):
  * ``N/<portal>/system/0/Serial`` is the only retained ``N/`` topic; every other ``N/`` is live.
  * ``R/`` reads are always answered, kept alive or not; a subtree read answers every leaf.
  * Other ``N/`` notifications (write echoes) flow only while a keepalive is active (60 s).
  * A keepalive without ``suppress-republish`` republishes every topic (a bare GX has about
    700) and ends with ``N/<portal>/full_publish_completed``.
  * While kept alive, ``N/<portal>/heartbeat`` comes from the plugin's own timer (every 3 s by
    default): it keeps beating while the settings service hangs.
  * Settings with limits carry ``min``/``max`` beside ``value``.
  * A retained ``W/`` is applied at once and again every time any client subscribes to a
    matching filter (simulated by re-subscribing every ``retained_replay_interval``).

``dbus-mqtt`` (Venus OS before 3.20):
  * Every ``N/`` is published retained, and ``N/<portal>/keepalive`` is announced (retained).
  * No heartbeat, no ``full_publish_completed``, no ``min``/``max``.
  * A keepalive payload is the list of topics to keep alive (empty: all of them). A JSON object
    counts as the list of its keys, so ``{"keepalive-options": [...]}`` keeps nothing alive.
    Only kept-alive topics are published or answered; once a topic's keepalive lapses it is
    cleared with an empty retained payload.
  * A subtree read (``R/…/Schedule/Charge/3``) is answered by one message on the subtree's own
    topic whose value is a JSON object of the leaves.
  * A retained ``W/`` is replayed when dbus-mqtt itself (re)subscribes.

In both modes localsettings refuses out-of-range values silently (``Day`` outside -11…11,
``Soc`` outside 0…100, ``AllowDischarge`` outside 0…1): no echo, no error. The peer can also
stall (:meth:`GxPeer.stall`: the broker still answers, nothing behind it does), hang its settings
service (``settings_hung``: reads and writes of ``settings/`` go unanswered while the heartbeat
goes on), and be stopped and started to simulate the GX going offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiomqtt import Client, MqttError, ProtocolVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from tests.broker import Broker

SCHEDULE = "settings/0/Settings/CGwacs/BatteryLife/Schedule/Charge"
PORTAL_ID = "c0619ab2e3f4"
FLASHMQ = "dbus-flashmq"
DBUS_MQTT = "dbus-mqtt"
MODES = (FLASHMQ, DBUS_MQTT)

USER_SLOTS: dict[int, dict[str, int]] = {
    0: {"Day": 7, "Start": 7200, "Duration": 3600, "Soc": 50, "AllowDischarge": 1},
    1: {"Day": 8, "Start": 50400, "Duration": 1800, "Soc": 80, "AllowDischarge": 0},
    2: {"Day": -9, "Start": 3600, "Duration": 600, "Soc": 30, "AllowDischarge": 0},
}
"""The user's own slots: ioagent must never touch them."""
FACTORY_SLOT = {"Day": -7, "Start": 0, "Duration": 0, "Soc": 100, "AllowDischarge": 0}
LIMITS = {"Day": (-11, 11), "Soc": (0, 100), "AllowDischarge": (0, 1)}
"""The limits dbus-systemcalc-py gives localsettings for the schedule fields."""
BARE_GX_TOPICS = 700
"""About as many topics as a full republish of a bare GX sends."""


def slot_path(slot: int, name: str) -> str:
    return f"{SCHEDULE}/{slot}/{name}"


def initial_settings(portal_id: str, filler: int = BARE_GX_TOPICS) -> dict[str, Any]:
    values: dict[str, Any] = {
        "system/0/Serial": portal_id,
        "system/0/Control/ScheduledChargeStatus": 0,
        "settings/0/Settings/CGwacs/BatteryLife/State": 10,
    }
    for slot in range(5):
        for name, value in USER_SLOTS.get(slot, FACTORY_SLOT).items():
            values[slot_path(slot, name)] = value
    # The rest of a GX: what a full republish would send, and ioagent never needs.
    for number in range(max(0, filler - len(values))):
        values[f"vebus/276/Devices/{number}/Version"] = number
    return values


def limits_of(path: str) -> tuple[int, int] | None:
    if not path.startswith(SCHEDULE + "/"):
        return None
    return LIMITS.get(path.rsplit("/", 1)[-1])


def topic_matches(pattern: str, path: str) -> bool:
    """dbus-mqtt's keepalive patterns: ``+`` is one level, a trailing ``#`` the rest (or none)."""
    wanted, parts = pattern.split("/"), path.split("/")
    for index, level in enumerate(wanted):
        if level == "#":
            return True
        if index >= len(parts) or (level != "+" and level != parts[index]):
            return False
    return len(wanted) == len(parts)


def keepalive_patterns(payload: bytes) -> list[str]:
    """What dbus-mqtt keeps alive for a keepalive payload: empty means everything."""
    if not payload.strip():
        return ["#"]
    try:
        wanted = json.loads(payload)
    except ValueError:
        return []
    # Iterating a JSON object yields its keys: {"keepalive-options": …} keeps nothing alive.
    return (
        [item for item in wanted if isinstance(item, str)]
        if isinstance(wanted, list | dict)
        else []
    )


def _raise_swallowed_cancellation() -> None:
    # aiomqtt's asyncio.wait_for can swallow a racing cancellation on Python 3.11.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass
class GxPeer:
    host: str
    port: int
    portal_id: str = PORTAL_ID
    mode: str = FLASHMQ
    heartbeat_interval: float = 3.0
    """dbus-flashmq beats every 3 s; fast tests shorten it."""
    keepalive_timeout: float = 60.0
    retained_replay_interval: float = 1.0
    """dbus-flashmq: how often "another client" subscribes to ``W/#`` and replays retained W/."""
    announces_keepalive: bool = True
    """dbus-mqtt (Venus OS 2.80 and later) publishes a retained ``N/<portal>/keepalive``."""
    values: dict[str, Any] = field(default_factory=dict)
    writes: list[tuple[str, Any]] = field(default_factory=list)
    """Every non-retained write seen, as (path, value), applied or not."""
    retained_writes: list[str] = field(default_factory=list)
    """Topics of retained writes seen (and applied), once per replay."""
    refused: list[tuple[str, Any]] = field(default_factory=list)
    """Writes localsettings refused silently because the value was out of range."""
    keepalives: list[bytes] = field(default_factory=list)
    published: list[tuple[str, bytes]] = field(default_factory=list)
    """Every message the GX published, as (topic, payload): what the connector cost it."""
    cleared: list[str] = field(default_factory=list)
    """dbus-mqtt: topics cleared with an empty payload when their keepalive lapsed."""
    reject_writes: set[str] = field(default_factory=set)
    """Paths whose writes silently fail, as a real GX does when a write is refused."""
    stalled: bool = False
    """While set, the peer publishes nothing, not even heartbeats, and applies no writes: a GX
    whose dbus-flashmq has stalled behind a broker that still answers."""
    settings_hung: bool = False
    """While set, localsettings does not answer: ``settings/`` reads and writes get nothing back,
    while the heartbeat (dbus-flashmq's own timer) and other services carry on."""
    client_options: dict[str, Any] = field(default_factory=dict)
    """Extra ``aiomqtt.Client`` options (login, TLS) for a broker that asks for them."""
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _keepalive_until: float = 0.0
    _alive_patterns: dict[str, float] = field(default_factory=dict)
    _published_alive: set[str] = field(default_factory=set)
    _heartbeat: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if not self.values:
            self.values = initial_settings(self.portal_id)

    def slot(self, number: int) -> dict[str, Any]:
        return {name: self.values[slot_path(number, name)] for name in FACTORY_SLOT}

    def writes_to(self, number: int) -> list[tuple[str, Any]]:
        prefix = f"{SCHEDULE}/{number}/"
        return [write for write in self.writes if write[0].startswith(prefix)]

    def published_topics(self) -> list[str]:
        """Topics published since the start, without the GX's own retained announcements."""
        own = {f"N/{self.portal_id}/system/0/Serial", f"N/{self.portal_id}/keepalive"}
        return [topic for topic, _ in self.published if topic not in own]

    def stall(self) -> None:
        self.stalled = True

    def resume(self, *, restarted: bool = False) -> None:
        """Talk again. ``restarted``: like a restarted dbus-flashmq (or dbus-mqtt), it has
        forgotten every keepalive and stays quiet until the next one arrives."""
        if restarted:
            self._forget_keepalives()
        self.stalled = False

    async def start(self) -> None:
        self._ready.clear()
        self._forget_keepalives()
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # --- keepalive state ------------------------------------------------------------------

    def _forget_keepalives(self) -> None:
        self._keepalive_until = 0.0
        self._alive_patterns.clear()
        self._published_alive.clear()

    @property
    def _flashmq_alive(self) -> bool:
        return time.monotonic() < self._keepalive_until

    def _kept_alive(self, path: str) -> bool:
        if self.mode == FLASHMQ:
            return self._flashmq_alive
        now = time.monotonic()
        return any(
            until > now and topic_matches(pattern, path)
            for pattern, until in self._alive_patterns.items()
        )

    # --- the connection ------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            try:
                async with Client(
                    self.host,
                    self.port,
                    identifier=f"gx-{self.portal_id}",
                    protocol=ProtocolVersion.V5,
                    **self.client_options,
                ) as client:
                    await self._serve(client)
            except MqttError:
                await asyncio.sleep(0.1)

    async def _serve(self, client: Client) -> None:
        await self._publish(client, "system/0/Serial", self.portal_id, retain=True)
        if self.mode == DBUS_MQTT and self.announces_keepalive:
            await self._publish(client, "keepalive", 1, retain=True)
        # MQTT 5 "retain as published": a broker clears the retain flag on live delivery,
        # and the peer must see it to catch a retained write.
        keep_retain = SubscribeOptions(qos=0, retainAsPublished=True)
        await client.subscribe(f"R/{self.portal_id}/#", options=keep_retain)
        await client.subscribe(f"W/{self.portal_id}/#", options=keep_retain)
        self._ready.set()
        helpers: list[asyncio.Task[None]] = []
        if self.mode == FLASHMQ:
            helpers.append(asyncio.create_task(self._replay_retained_writes(client, keep_retain)))
        else:
            helpers.append(asyncio.create_task(self._expire_keepalives(client)))
        try:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                await self._on_message(client, message.topic.value, payload, message.retain)
        finally:
            if self._heartbeat is not None:
                helpers.append(self._heartbeat)
                self._heartbeat = None
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await helper

    async def _replay_retained_writes(self, client: Client, options: SubscribeOptions) -> None:
        # Subscribing again (retain handling 0) makes the broker replay retained W/ messages,
        # as it does on the real GX whenever any client subscribes to W/# or #.
        while True:
            await asyncio.sleep(self.retained_replay_interval)
            await client.subscribe(f"W/{self.portal_id}/#", options=options)
            _raise_swallowed_cancellation()

    async def _expire_keepalives(self, client: Client) -> None:
        tick = min(0.5, self.keepalive_timeout / 10)
        while True:
            await asyncio.sleep(tick)
            if self.stalled:
                continue
            for path in sorted(self._published_alive):
                if not self._kept_alive(path):
                    self._published_alive.discard(path)
                    self.cleared.append(path)
                    await client.publish(f"N/{self.portal_id}/{path}", b"", retain=True)
                    _raise_swallowed_cancellation()
                    self.published.append((f"N/{self.portal_id}/{path}", b""))

    async def _beat(self, client: Client) -> None:
        # dbus-flashmq's own timer: it beats while kept alive, whatever localsettings does.
        while self._flashmq_alive:
            if not self.stalled:
                await self._publish(client, "heartbeat", int(time.time()))
            await asyncio.sleep(self.heartbeat_interval)
        self._heartbeat = None

    async def _publish(
        self, client: Client, path: str, value: Any, *, retain: bool | None = None
    ) -> None:
        if self.stalled:
            return
        document: dict[str, Any] = {"value": value}
        limits = limits_of(path)
        if self.mode == FLASHMQ and limits is not None and not isinstance(value, dict):
            document["min"], document["max"] = limits
        payload = json.dumps(document).encode()
        topic = f"N/{self.portal_id}/{path}"
        await client.publish(
            topic, payload, retain=self.mode == DBUS_MQTT if retain is None else retain
        )
        _raise_swallowed_cancellation()
        self.published.append((topic, payload))
        if self.mode == DBUS_MQTT and path in self.values and path != "system/0/Serial":
            self._published_alive.add(path)  # the serial is never cleared

    # --- requests ------------------------------------------------------------------------

    async def _on_message(self, client: Client, topic: str, payload: bytes, retain: bool) -> None:
        kind, _, path = topic.split("/", 2)
        if self.stalled:
            # The broker takes the messages, but nothing behind it acts on them.
            if kind == "W" and not retain:
                self.writes.append((path, json.loads(payload)["value"]))
            elif path == "keepalive":
                self.keepalives.append(payload)
            return
        if kind == "W":
            try:
                value = json.loads(payload)["value"]
            except (ValueError, TypeError, KeyError):
                return
            if retain:
                self.retained_writes.append(topic)
            else:
                self.writes.append((path, value))
            await self._write(client, path, value)
        elif path == "keepalive":
            self.keepalives.append(payload)
            if self.mode == FLASHMQ:
                await self._flashmq_keepalive(client, payload)
            else:
                await self._dbus_mqtt_keepalive(client, payload)
        elif self.mode == FLASHMQ:
            await self._flashmq_read(client, path)
        else:
            await self._dbus_mqtt_read(client, path)

    async def _write(self, client: Client, path: str, value: Any) -> None:
        if self.settings_hung and path.startswith("settings/"):
            return
        if path not in self.values or path in self.reject_writes:
            return
        limits = limits_of(path)
        if limits is not None and not (isinstance(value, int) and limits[0] <= value <= limits[1]):
            self.refused.append((path, value))  # refused silently: no echo, no error
            return
        self.values[path] = value
        if self._kept_alive(path):
            await self._publish(client, path, value)

    async def _flashmq_keepalive(self, client: Client, payload: bytes) -> None:
        self._keepalive_until = time.monotonic() + self.keepalive_timeout
        if b"suppress-republish" not in payload:
            for known in list(self.values):
                await self._publish(client, known, self.values[known])
            await self._publish(client, "full_publish_completed", int(time.time()))
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(client))

    async def _flashmq_read(self, client: Client, path: str) -> None:
        if self.settings_hung and path.startswith("settings/"):
            return
        for known in list(self.values):
            if known == path or known.startswith(path + "/"):
                await self._publish(client, known, self.values[known])

    async def _dbus_mqtt_keepalive(self, client: Client, payload: bytes) -> None:
        until = time.monotonic() + self.keepalive_timeout
        for pattern in keepalive_patterns(payload):
            self._alive_patterns[pattern] = until
        for known in list(self.values):
            if known == "system/0/Serial":
                continue
            if known not in self._published_alive and self._kept_alive(known):
                await self._publish(client, known, self.values[known])

    async def _dbus_mqtt_read(self, client: Client, path: str) -> None:
        if self.settings_hung and path.startswith("settings/"):
            return
        if not self._kept_alive(path):
            return
        if path in self.values:
            await self._publish(client, path, self.values[path])
            return
        leaves = {
            known[len(path) + 1 :]: value
            for known, value in self.values.items()
            if known.startswith(path + "/")
        }
        if leaves:
            await self._publish(client, path, leaves)


def victron_section(broker: Broker, **options: Any) -> dict[str, Any]:
    """The daemon's ``[victron]`` section for a GX peer on ``broker``, in slots 3 and 4 (0-2 are
    the user's own), with ``options`` on top."""
    return {"enabled": True, "host": broker.host, "port": broker.port, "slots": [3, 4], **options}
