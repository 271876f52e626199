"""A fake Victron GX on the test broker, behaving as docs/victron.md and the GX reference say.

It publishes the retained ``N/<portal>/system/0/Serial``, sends N/ notifications only while a
keepalive is active, answers ``R/`` reads (a subtree read republishes every leaf), applies
``W/`` writes and echoes them, ignores retained writes (and records them), publishes a heartbeat
and can be stopped and started to simulate the GX going offline. It can also stall (see
:meth:`GxPeer.stall`): its broker connection stays up, but it publishes nothing.
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

SCHEDULE = "settings/0/Settings/CGwacs/BatteryLife/Schedule/Charge"
PORTAL_ID = "c0619ab2e3f4"

USER_SLOTS: dict[int, dict[str, int]] = {
    0: {"Day": 7, "Start": 7200, "Duration": 3600, "Soc": 50, "AllowDischarge": 1},
    1: {"Day": 8, "Start": 50400, "Duration": 1800, "Soc": 80, "AllowDischarge": 0},
    2: {"Day": -9, "Start": 3600, "Duration": 600, "Soc": 30, "AllowDischarge": 0},
}
"""The user's own slots: ioagent must never touch them."""
FACTORY_SLOT = {"Day": -7, "Start": 0, "Duration": 0, "Soc": 100, "AllowDischarge": 0}


def slot_path(slot: int, name: str) -> str:
    return f"{SCHEDULE}/{slot}/{name}"


def initial_settings(portal_id: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "system/0/Serial": portal_id,
        "system/0/Control/ScheduledChargeStatus": 0,
        "settings/0/Settings/CGwacs/BatteryLife/State": 10,
    }
    for slot in range(5):
        for name, value in USER_SLOTS.get(slot, FACTORY_SLOT).items():
            values[slot_path(slot, name)] = value
    return values


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
    heartbeat_interval: float = 0.2
    keepalive_timeout: float = 60.0
    values: dict[str, Any] = field(default_factory=dict)
    writes: list[tuple[str, Any]] = field(default_factory=list)
    """Every non-retained write seen, as (path, value), applied or not."""
    retained_writes: list[str] = field(default_factory=list)
    keepalives: list[bytes] = field(default_factory=list)
    reject_writes: set[str] = field(default_factory=set)
    """Paths whose writes silently fail, as a real GX does when a write is refused."""
    stalled: bool = False
    """While set, the peer publishes nothing, not even heartbeats, and applies no writes: a GX
    whose dbus-flashmq has stalled behind a broker that still answers."""
    client_options: dict[str, Any] = field(default_factory=dict)
    """Extra ``aiomqtt.Client`` options (login, TLS) for a broker that asks for them."""
    _task: asyncio.Task[None] | None = None
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _keepalive_until: float = 0.0

    def __post_init__(self) -> None:
        if not self.values:
            self.values = initial_settings(self.portal_id)

    def slot(self, number: int) -> dict[str, Any]:
        return {name: self.values[slot_path(number, name)] for name in FACTORY_SLOT}

    def writes_to(self, number: int) -> list[tuple[str, Any]]:
        prefix = f"{SCHEDULE}/{number}/"
        return [write for write in self.writes if write[0].startswith(prefix)]

    def stall(self) -> None:
        self.stalled = True

    def resume(self, *, restarted: bool = False) -> None:
        """Talk again. ``restarted``: like a restarted dbus-flashmq, it has forgotten every
        keepalive and stays quiet until the next one arrives."""
        if restarted:
            self._keepalive_until = 0.0
        self.stalled = False

    async def start(self) -> None:
        self._ready.clear()
        self._keepalive_until = 0.0
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 10)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def _alive(self) -> bool:
        return time.monotonic() < self._keepalive_until

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
        await client.publish(
            f"N/{self.portal_id}/system/0/Serial",
            json.dumps({"value": self.portal_id}),
            retain=True,
        )
        # MQTT 5 "retain as published": a broker clears the retain flag on live delivery,
        # and the peer must see it to catch a retained write.
        keep_retain = SubscribeOptions(qos=0, retainAsPublished=True)
        await client.subscribe(f"R/{self.portal_id}/#", options=keep_retain)
        await client.subscribe(f"W/{self.portal_id}/#", options=keep_retain)
        self._ready.set()
        heartbeat = asyncio.create_task(self._heartbeat(client))
        try:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                await self._on_message(client, message.topic.value, payload, message.retain)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat

    async def _heartbeat(self, client: Client) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if self._alive:
                await self._notify(client, "heartbeat", int(time.time()))

    async def _notify(self, client: Client, path: str, value: Any) -> None:
        if self.stalled:
            return
        await client.publish(f"N/{self.portal_id}/{path}", json.dumps({"value": value}))
        _raise_swallowed_cancellation()

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
            if retain:
                self.retained_writes.append(topic)
                return
            value = json.loads(payload)["value"]
            self.writes.append((path, value))
            if path in self.values and path not in self.reject_writes:
                self.values[path] = value
                if self._alive:
                    await self._notify(client, path, value)
            return
        if path == "keepalive":
            self.keepalives.append(payload)
            self._keepalive_until = time.monotonic() + self.keepalive_timeout
            if b"suppress-republish" not in payload:
                for known in list(self.values):
                    await self._notify(client, known, self.values[known])
            return
        if self._alive:
            for known in list(self.values):
                if known == path or known.startswith(path + "/"):
                    await self._notify(client, known, self.values[known])
