"""The fault suite (see docs/reliability.md), and the small MQTT helpers its tests share."""

from __future__ import annotations

import uuid
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.broker import Broker


def client_for(broker: Broker, **options: Any) -> aiomqtt.Client:
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=f"faults-{uuid.uuid4().hex[:10]}",
        protocol=aiomqtt.ProtocolVersion.V5,
        **options,
    )


async def publish_once(
    broker: Broker,
    topic: str,
    payload: str,
    *,
    retain: bool = False,
    expiry: int | None = None,
    **options: Any,
) -> None:
    """Connect, publish at QoS 1 (the broker has acknowledged it on return), disconnect."""
    properties = None
    if expiry is not None:
        properties = Properties(PacketTypes.PUBLISH)
        properties.MessageExpiryInterval = expiry
    async with client_for(broker, **options) as client:
        await client.publish(topic, payload, qos=1, retain=retain, properties=properties)


async def retained_snapshot(broker: Broker, pattern: str = "#", **options: Any) -> dict[str, str]:
    """Every retained message a late subscriber to ``pattern`` gets, complete.

    The broker sends the retained messages right after the subscription; a message this client
    then publishes to a probe topic comes back after all of them, so it marks the end.
    """
    probe = f"faults/probe/{uuid.uuid4().hex}"
    snapshot: dict[str, str] = {}
    async with client_for(broker, **options) as client:
        await client.subscribe(pattern, qos=1)
        await client.subscribe(probe, qos=1)
        await client.publish(probe, "end", qos=1)
        async for message in client.messages:
            topic = str(message.topic)
            if topic == probe:
                break
            if message.retain:
                payload = message.payload
                snapshot[topic] = (
                    payload.decode("utf-8", "replace")
                    if isinstance(payload, bytes | bytearray)
                    else str(payload)
                )
    return snapshot
