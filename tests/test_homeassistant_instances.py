"""Two ioagent instances (two accounts) on one broker: one's death never darkens the other in HA.

HA marks an entity unavailable when *any* topic of its ``availability`` list carries the
not-available payload (the default ``availability_mode`` is ``latest``, which follows the last
message on any of them). So the check is on what HA reads: every availability topic that an
instance's discovery payload names, as the broker holds it retained, once the other instance
has stopped (cleanly, or killed so that only its MQTT last will speaks).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from ioagent.mqtt.homeassistant import discovery_topic
from ioagent.mqtt.topics import Topics
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    SECOND_ACCOUNT,
    SECOND_API_KEY,
)
from tests.broker import Broker
from tests.faults import retained_snapshot
from tests.faults.test_kill_restart import DaemonProcess
from tests.harness import running_daemon, watching

SECOND = {"account_number": SECOND_ACCOUNT, "api_key": SECOND_API_KEY}


def availability_topics(discovery: str) -> set[str]:
    """Every availability topic HA follows for any entity of this discovery payload."""
    root: dict[str, Any] = json.loads(discovery)
    configs = [root, *root.get("components", {}).values()]
    topics = {entry["topic"] for config in configs for entry in config.get("availability", [])}
    topics |= {c["availability_topic"] for c in configs if "availability_topic" in c}
    return topics


async def announced(broker: Broker, account: str) -> str:
    topic = discovery_topic("homeassistant", account)
    async with watching(broker, topic) as watcher:
        seen = await watcher.wait_for(topic, bool, timeout=20)
    return seen.payload


async def test_stopping_one_instance_leaves_the_others_entities_available(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with (
        running_daemon(broker, simulator, tmp_path / "first") as first,
        running_daemon(broker, simulator, tmp_path / "second", octopus=SECOND) as second,
    ):
        first_topics = availability_topics(await announced(broker, DEFAULT_ACCOUNT))
        second_topics = availability_topics(await announced(broker, SECOND_ACCOUNT))
        assert first_topics and second_topics
        await first.stop()
        held = await retained_snapshot(broker)
        assert {held.get(topic) for topic in second_topics} == {"online"}, (
            "the running instance's entities must stay available"
        )
        assert "offline" in {held.get(topic) for topic in first_topics}, (
            "the stopped instance's entities must become unavailable"
        )
        assert second.daemon.bridge.connected


def write_config(path: Path, broker: Broker, simulator: RunningSimulator, octopus: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""
[octopus]
{octopus}
api_url = "{simulator.graphql_url}"
rest_url = "{simulator.rest_url}"

[mqtt]
host = "{broker.host}"
port = {broker.port}

[storage]
path = "{path.parent / "ioagent.db"}"
"""
    )
    return path


async def test_a_killed_instances_last_will_leaves_the_others_entities_available(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    first_config = write_config(
        tmp_path / "first" / "config.toml",
        broker,
        simulator,
        f'api_key = "{DEFAULT_API_KEY}"\naccount_number = "{DEFAULT_ACCOUNT}"',
    )
    second_config = write_config(
        tmp_path / "second" / "config.toml",
        broker,
        simulator,
        f'api_key = "{SECOND_API_KEY}"\naccount_number = "{SECOND_ACCOUNT}"',
    )
    first = await DaemonProcess.start(first_config, tmp_path / "first.log")
    second = await DaemonProcess.start(second_config, tmp_path / "second.log")
    try:
        first_topics = availability_topics(await announced(broker, DEFAULT_ACCOUNT))
        second_topics = availability_topics(await announced(broker, SECOND_ACCOUNT))
        first_api = Topics("ioagent", DEFAULT_ACCOUNT).api
        async with watching(broker, first_api, *first_topics) as watcher:
            await watcher.wait_for(first_api, lambda p: json.loads(p)["state"] == "ok", timeout=40)
            # SIGKILL: no goodbye from the daemon; the broker publishes its last will.
            await first.stop(signal.SIGKILL)
            for topic in first_topics:
                await watcher.wait_for(topic, lambda p: p == "offline", timeout=10)
        held = await retained_snapshot(broker)
        assert {held.get(topic) for topic in second_topics} == {"online"}
        assert first_api in held, "the killed instance's state stays retained"
        assert second.process.returncode is None
    finally:
        await first.ensure_dead()
        await second.ensure_dead()
