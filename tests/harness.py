"""Run the real daemon in-process against the simulator and a real Mosquitto, and watch topics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ioagent.aio import cancel_and_wait, describe_tasks
from ioagent.config import Settings
from ioagent.mqtt.topics import Topics
from ioagent.runtime.daemon import Daemon
from ioagent.runtime.ledger_task import LedgerPace
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_API_KEY
from ioagent.timeutil import Clock, parse_iso
from tests import canary
from tests.broker import Broker
from tests.clocks import suite_now

STOP_WAIT = 15.0
"""How long a test waits for ``request_stop`` to end the daemon (its own bound is less)."""
CANCEL_WAIT = 5.0
"""After that, how long it waits for a cancellation to end it, before failing."""


@dataclass
class Seen:
    topic: str
    payload: str
    retain: bool
    at: float
    correlation_data: bytes | None = None


@dataclass
class Watcher:
    """A plain MQTT subscriber that records every message it sees."""

    broker: Broker
    patterns: tuple[str, ...] = ("#",)
    messages: list[Seen] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    client: aiomqtt.Client | None = None

    async def run(self, ready: asyncio.Event) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    identifier=f"watcher-{id(self)}",
                    protocol=aiomqtt.ProtocolVersion.V5,
                ) as client:
                    self.client = client
                    for pattern in self.patterns:
                        await client.subscribe(pattern, qos=1)
                    ready.set()
                    async for message in client.messages:
                        payload = message.payload
                        text = (
                            payload.decode("utf-8", "replace")
                            if isinstance(payload, bytes | bytearray)
                            else str(payload)
                        )
                        canary.check_message(str(message.topic), text)
                        props = message.properties
                        corr = getattr(props, "CorrelationData", None) if props else None
                        async with self._changed:
                            self.messages.append(
                                Seen(str(message.topic), text, message.retain, time.time(), corr)
                            )
                            self._changed.notify_all()
            except aiomqtt.MqttError:
                self.client = None
                await asyncio.sleep(0.2)

    def values(self, topic: str) -> list[str]:
        return [m.payload for m in self.messages if m.topic == topic]

    def last(self, topic: str) -> str | None:
        values = self.values(topic)
        return values[-1] if values else None

    async def wait_for(
        self,
        topic: str,
        predicate: Callable[[str], bool] = lambda _: True,
        *,
        timeout: float = 10.0,
        after: int = 0,
    ) -> Seen:
        """The first message on ``topic`` (index >= ``after``) whose payload satisfies ``predicate``."""

        def find() -> Seen | None:
            for message in self.messages[after:]:
                if message.topic == topic and predicate(message.payload):
                    return message
            return None

        async with asyncio.timeout(timeout), self._changed:
            while (found := find()) is None:
                await self._changed.wait()
            return found

    async def publish(
        self,
        topic: str,
        payload: str | bytes,
        *,
        retain: bool = False,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        expiry: int | None = None,
    ) -> None:
        assert self.client is not None
        properties = None
        if response_topic or correlation or expiry is not None:
            properties = Properties(PacketTypes.PUBLISH)
            if response_topic:
                properties.ResponseTopic = response_topic
            if correlation:
                properties.CorrelationData = correlation
            if expiry is not None:
                properties.MessageExpiryInterval = expiry
        await self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)


def daemon_settings(
    broker: Broker, sim: RunningSimulator, data: Path, **sections: dict[str, Any]
) -> Settings:
    base: dict[str, Any] = {
        "octopus": {
            "api_key": DEFAULT_API_KEY,
            "account_number": DEFAULT_ACCOUNT,
            "api_url": sim.graphql_url,
            "rest_url": sim.rest_url,
            "read_timeout": 3.0,
        },
        "mqtt": {"host": broker.host, "port": broker.port},
        "storage": {"path": str(data / "ioagent.db")},
        "polling": {"backoff_initial": 1.0, "backoff_max": 10.0},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return Settings.model_validate(base)


@dataclass
class RunningDaemon:
    daemon: Daemon
    settings: Settings
    topics: Topics
    watcher: Watcher
    task: asyncio.Task[None]

    async def stop(self) -> float:
        """Stop the daemon as SIGTERM does; the seconds it took (see :func:`stop_daemon`)."""
        return await stop_daemon(self.daemon, self.task)

    async def command(
        self, name: str, payload: str, *, timeout: float = 15.0, **publish: Any
    ) -> dict[str, Any]:
        """Send a command as JSON with a fresh transaction id and return its one reply."""
        transaction = f"t{time.monotonic_ns()}"
        body = json.dumps({"value": _jsonable(payload), "transaction": transaction})
        topic = self.topics.refresh if name == "refresh" else self.topics.command(name)
        mark = len(self.watcher.messages)
        await self.watcher.publish(topic, body, **publish)
        seen = await self.watcher.wait_for(
            self.topics.response,
            lambda p: json.loads(p).get("transaction") == transaction,
            after=mark,
            timeout=timeout,
        )
        reply: dict[str, Any] = json.loads(seen.payload)
        return reply

    def replies(self) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.watcher.values(self.topics.response)]


async def stop_daemon(daemon: Daemon, task: asyncio.Task[None]) -> float:
    """Stop ``daemon`` (running as ``task``) as SIGTERM does; the seconds it took.

    Never waits forever: after ``STOP_WAIT`` s it fails with every task's stack, after
    cancelling the daemon (``asyncio.wait_for`` would wait without a bound for a task that
    does not finish cancelling; this gives up after ``CANCEL_WAIT`` more seconds).
    """
    started = time.monotonic()
    daemon.request_stop()
    done, _ = await asyncio.wait({task}, timeout=STOP_WAIT)
    elapsed = time.monotonic() - started
    if not done:
        stacks = describe_tasks(asyncio.all_tasks())
        still = await cancel_and_wait(task, grace=0.0, bound=CANCEL_WAIT)
        after = (
            f"and it ignored cancellation for {CANCEL_WAIT:g} s more"
            if still
            else "cancelling it then ended it"
        )
        raise AssertionError(
            f"the daemon did not stop within {STOP_WAIT:g} s of request_stop, {after}; "
            f"where each task was waiting:\n{stacks}"
        )
    if not task.cancelled() and (error := task.exception()) is not None:
        raise error
    return elapsed


def _jsonable(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


async def wait_connected(daemon: Daemon, timeout: float = 10.0) -> None:
    """Until the daemon's bridge has subscribed, so a command sent now is not lost."""
    async with asyncio.timeout(timeout):
        while getattr(daemon, "bridge", None) is None:
            await asyncio.sleep(0.01)
        await daemon.bridge.connected_event.wait()


@contextlib.asynccontextmanager
async def watching(broker: Broker, *patterns: str) -> AsyncIterator[Watcher]:
    watcher = Watcher(broker, patterns or ("#",))
    ready = asyncio.Event()
    task = asyncio.create_task(watcher.run(ready), name="watcher")
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        yield watcher
    finally:
        still = await cancel_and_wait(task, grace=2.0, bound=CANCEL_WAIT)
        assert not still, f"the MQTT watcher did not stop:\n{describe_tasks(still)}"


@contextlib.asynccontextmanager
async def running_daemon(
    broker: Broker,
    sim: RunningSimulator,
    data: Path,
    *,
    wait_for_poll: bool = True,
    clock: Clock = suite_now,
    ledger_pace: LedgerPace | None = None,
    **sections: dict[str, Any],
) -> AsyncIterator[RunningDaemon]:
    """A daemon connected to ``broker``; with ``wait_for_poll``, also after its first good poll.

    ``clock``: the daemon's clock; shift the simulator's by the same offset (see
    ``SimulatorState.set_time_offset``) so that both agree on the time. ``ledger_pace``: the
    ledger's start delay and request rate (the daemon's defaults are for Octopus's live API).
    """
    settings = daemon_settings(broker, sim, data, **sections)
    topics = Topics(settings.mqtt.base_topic, settings.octopus.account_number or DEFAULT_ACCOUNT)
    started = clock().replace(microsecond=0)

    def polled_in_this_run(payload: str) -> bool:
        health = json.loads(payload)
        success = health.get("last_success")
        return health["state"] == "ok" and bool(success) and parse_iso(success) >= started

    async with watching(broker) as watcher:
        daemon = Daemon(settings, clock=clock, ledger_pace=ledger_pace)
        task = asyncio.create_task(daemon.run(), name="daemon-under-test")
        handle = RunningDaemon(daemon, settings, topics, watcher, task)
        try:
            if wait_for_poll:
                # Up to 25 s: a first poll that falls in the quiet seconds around :00/:30 waits.
                await watcher.wait_for(topics.api, polled_in_this_run, timeout=40)
            await wait_connected(daemon)
            yield handle
        finally:
            if not task.done():
                await handle.stop()
