"""The fake GX (tests/gx_peer.py) is as strict as the real stack: checked with a plain client.

These pin down the behaviours the connector tests rely on, so a kinder peer cannot creep back:
reads answered without a keepalive (dbus-flashmq only), silent refusal of out-of-range values,
retained writes applied and replayed, min/max fields, full_publish_completed, and dbus-mqtt's
topic-list keepalive, its clearing of lapsed topics and its subtree answer as one object.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from aiomqtt import Client

from tests.broker import Broker
from tests.gx_peer import (
    BARE_GX_TOPICS,
    DBUS_MQTT,
    FLASHMQ,
    PORTAL_ID,
    SCHEDULE,
    GxPeer,
    keepalive_patterns,
    slot_path,
    topic_matches,
)

_numbers = itertools.count()
SUPPRESS = json.dumps({"keepalive-options": ["suppress-republish"]})


@dataclass
class Observer:
    client: Client
    seen: list[tuple[str, bytes, bool]] = field(default_factory=list)

    def payloads(self, path: str, *, live_only: bool = True) -> list[bytes]:
        topic = f"N/{PORTAL_ID}/{path}"
        return [p for t, p, retained in self.seen if t == topic and not (live_only and retained)]

    async def send(self, path: str, payload: str | bytes = b"", *, retain: bool = False) -> None:
        await self.client.publish(f"{path[0]}/{PORTAL_ID}/{path[2:]}", payload, retain=retain)


@asynccontextmanager
async def observing(broker: Broker) -> AsyncIterator[Observer]:
    async with Client(broker.host, broker.port, identifier=f"observer-{next(_numbers)}") as client:
        observer = Observer(client)
        await client.subscribe(f"N/{PORTAL_ID}/#")

        async def collect() -> None:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                observer.seen.append((message.topic.value, payload, message.retain))

        task = asyncio.create_task(collect())
        try:
            yield observer
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@asynccontextmanager
async def running(peer: GxPeer) -> AsyncIterator[GxPeer]:
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():
            await asyncio.sleep(0.02)


def kept_alive_payload(mode: str) -> str:
    return SUPPRESS if mode == FLASHMQ else json.dumps([f"{SCHEDULE}/#"])


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("#", "system/0/Serial", True),
        (f"{SCHEDULE}/3/#", f"{SCHEDULE}/3/Day", True),
        (f"{SCHEDULE}/3/#", f"{SCHEDULE}/3", True),
        (f"{SCHEDULE}/3/#", f"{SCHEDULE}/4/Day", False),
        ("settings/+/Settings/#", f"{SCHEDULE}/3/Day", True),
        ("system/0/Serial", "system/0/Serial/x", False),
        ("keepalive-options", "system/0/Serial", False),
    ],
)
def test_dbus_mqtt_keepalive_patterns_match_like_mqtt(
    pattern: str, path: str, matches: bool
) -> None:
    assert topic_matches(pattern, path) is matches


@pytest.mark.parametrize(
    ("payload", "patterns"),
    [
        (b"", ["#"]),
        (b'["vebus/#", "system/0/Serial"]', ["vebus/#", "system/0/Serial"]),
        (SUPPRESS.encode(), ["keepalive-options"]),
        (b"not json", []),
    ],
)
def test_dbus_mqtt_reads_a_keepalive_payload_as_topics(payload: bytes, patterns: list[str]) -> None:
    assert keepalive_patterns(payload) == patterns


async def test_flashmq_answers_reads_without_keepalive(broker: Broker) -> None:
    flashmq = GxPeer(broker.host, broker.port, mode=FLASHMQ)
    async with observing(broker) as seen, running(flashmq):
        await seen.send(f"R/{SCHEDULE}/3")
        await eventually(lambda: bool(seen.payloads(slot_path(3, "Soc"))))
        # Five leaves, no keepalive sent: the answers carry the limits, and no heartbeat runs.
        for name in ("Day", "Start", "Duration", "Soc", "AllowDischarge"):
            await eventually(lambda name=name: bool(seen.payloads(slot_path(3, name))))
        assert json.loads(seen.payloads(slot_path(3, "Day"))[0]) == {
            "value": -7,
            "min": -11,
            "max": 11,
        }
        assert json.loads(seen.payloads(slot_path(3, "Start"))[0]) == {"value": 0}
        assert seen.payloads("heartbeat") == []


async def test_dbus_mqtt_answers_only_kept_alive_reads_and_a_subtree_as_one_object(
    broker: Broker,
) -> None:
    dbus_mqtt = GxPeer(broker.host, broker.port, mode=DBUS_MQTT)
    async with observing(broker) as seen, running(dbus_mqtt):
        await seen.send(f"R/{SCHEDULE}/3")
        await asyncio.sleep(0.5)
        assert seen.payloads(f"{SCHEDULE}/3") == [], "not kept alive: no answer"
        await seen.send("R/keepalive", json.dumps([f"{SCHEDULE}/3/#"]))
        await seen.send(f"R/{SCHEDULE}/3")
        await eventually(lambda: bool(seen.payloads(f"{SCHEDULE}/3")))
        # One message on the subtree's own topic, its value an object of the five leaves.
        assert json.loads(seen.payloads(f"{SCHEDULE}/3")[-1]) == {
            "value": {"Day": -7, "Start": 0, "Duration": 0, "Soc": 100, "AllowDischarge": 0}
        }
        assert seen.payloads("heartbeat") == []
    async with observing(broker) as late:
        # dbus-mqtt retains what it publishes, and announces itself on N/<id>/keepalive.
        await eventually(lambda: bool(late.payloads("keepalive", live_only=False)))
        assert late.payloads("keepalive") == [], "only the retained copy"
        # the broker sends the retained copies one by one: keepalive may come first
        await eventually(lambda: bool(late.payloads(f"{SCHEDULE}/3", live_only=False)))


@pytest.mark.parametrize("mode", [FLASHMQ, DBUS_MQTT])
async def test_out_of_range_values_are_refused_silently(broker: Broker, mode: str) -> None:
    peer = GxPeer(broker.host, broker.port, mode=mode, heartbeat_interval=0.2)
    async with observing(broker) as seen, running(peer):
        await seen.send("R/keepalive", kept_alive_payload(mode))
        if mode == DBUS_MQTT:  # dbus-mqtt publishes the topics it newly keeps alive
            await eventually(lambda: bool(seen.payloads(slot_path(4, "Day"))))
        echoes = len(seen.seen)
        refused = [("Day", 12), ("Day", -12), ("Soc", 101), ("Soc", -1), ("AllowDischarge", 2)]
        for name, value in refused:
            await seen.send(f"W/{slot_path(4, name)}", json.dumps({"value": value}))
        await seen.send(f"W/{slot_path(4, 'Day')}", json.dumps({"value": -11}))
        await eventually(lambda: peer.slot(4)["Day"] == -11)
        await eventually(lambda: len(seen.payloads(slot_path(4, "Day"))) == 1 + (mode == DBUS_MQTT))
        await asyncio.sleep(0.2)
        seen.seen = seen.seen[echoes:]
        assert sorted(peer.refused) == sorted((slot_path(4, n), v) for n, v in refused)
        assert (peer.slot(4)["Soc"], peer.slot(4)["AllowDischarge"]) == (100, 0)
        # Only the accepted value was echoed; nothing at all for the refused ones.
        assert [json.loads(p)["value"] for p in seen.payloads(slot_path(4, "Day"))] == [-11]
        assert seen.payloads(slot_path(4, "Soc")) == []
        assert seen.payloads(slot_path(4, "AllowDischarge")) == []


async def test_flashmq_applies_a_retained_write_again_whenever_a_client_subscribes(
    broker: Broker,
) -> None:
    peer = GxPeer(broker.host, broker.port, mode=FLASHMQ, retained_replay_interval=0.2)
    async with observing(broker) as seen, running(peer):
        await seen.send(f"W/{slot_path(4, 'Day')}", json.dumps({"value": 5}), retain=True)
        await eventually(lambda: peer.slot(4)["Day"] == 5)
        # Someone sets it back on the GX; the next subscriber brings the retained write back.
        peer.values[slot_path(4, "Day")] = -7
        await eventually(lambda: peer.slot(4)["Day"] == 5)
        assert len(peer.retained_writes) >= 2
        await seen.send(f"W/{slot_path(4, 'Day')}", b"", retain=True)  # clear it


async def test_dbus_mqtt_applies_a_retained_write_again_when_it_reconnects(broker: Broker) -> None:
    peer = GxPeer(broker.host, broker.port, mode=DBUS_MQTT)
    async with observing(broker) as seen:
        async with running(peer):
            await seen.send(f"W/{slot_path(4, 'Day')}", json.dumps({"value": 5}), retain=True)
            await eventually(lambda: peer.slot(4)["Day"] == 5)
        peer.values[slot_path(4, "Day")] = -7
        async with running(peer):
            await eventually(lambda: peer.slot(4)["Day"] == 5)
        assert len(peer.retained_writes) == 2


async def test_flashmq_full_republish_ends_with_full_publish_completed(broker: Broker) -> None:
    peer = GxPeer(broker.host, broker.port, mode=FLASHMQ, heartbeat_interval=0.2)
    async with observing(broker) as seen, running(peer):
        await seen.send("R/keepalive", b"")
        await eventually(lambda: bool(seen.payloads("full_publish_completed")))
        topics = [t for t, _, retained in seen.seen if not retained]
        before_done = topics[: topics.index(f"N/{PORTAL_ID}/full_publish_completed")]
        assert len({t for t in before_done if not t.endswith("/heartbeat")}) == BARE_GX_TOPICS
        await eventually(lambda: len(seen.payloads("heartbeat")) >= 2)
        # The suppress-republish form renews the flow without republishing anything.
        count = len(peer.published_topics())
        await seen.send("R/keepalive", SUPPRESS)
        await asyncio.sleep(0.3)
        assert {t for t in peer.published_topics()[count:]} <= {f"N/{PORTAL_ID}/heartbeat"}


async def test_dbus_mqtt_clears_every_topic_when_only_suppress_republish_keepalives_come(
    broker: Broker,
) -> None:
    """What ioagent used to do: one empty keepalive, then the dbus-flashmq renewal, which
    dbus-mqtt reads as a list of topics that matches none."""
    peer = GxPeer(broker.host, broker.port, mode=DBUS_MQTT, keepalive_timeout=1.0)
    async with observing(broker) as seen, running(peer):
        await seen.send("R/keepalive", b"")
        await eventually(lambda: bool(seen.payloads(slot_path(3, "Day"))))
        for _ in range(8):
            await asyncio.sleep(0.25)
            await seen.send("R/keepalive", SUPPRESS)
        await eventually(lambda: slot_path(3, "Day") in peer.cleared)
        assert seen.payloads(slot_path(3, "Day"))[-1] == b""
        assert len(peer.cleared) == BARE_GX_TOPICS - 1, "everything but the serial"
        await seen.send(f"R/{slot_path(3, 'Day')}")
        await asyncio.sleep(0.3)
        assert seen.payloads(slot_path(3, "Day"))[-1] == b"", "and reads go unanswered"


async def test_dbus_mqtt_keeps_a_listed_topic_alive(broker: Broker) -> None:
    peer = GxPeer(broker.host, broker.port, mode=DBUS_MQTT, keepalive_timeout=1.0)
    wanted = json.dumps([f"{SCHEDULE}/3/#"])
    async with observing(broker) as seen, running(peer):
        for _ in range(8):
            await seen.send("R/keepalive", wanted)
            await asyncio.sleep(0.25)
        assert peer.cleared == []
        published = set(peer.published_topics())
        assert published == {f"N/{PORTAL_ID}/{slot_path(3, n)}" for n in peer.slot(3)}
        assert seen.payloads(slot_path(3, "Soc")) == [b'{"value": 100}']
