"""Home Assistant gets car entities only for a device Octopus can smart-charge."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ioagent.mqtt.homeassistant import discovery_topic
from ioagent.mqtt.topics import Topics
from ioagent.runtime.daemon import Daemon
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import MIXED_ACCOUNT, MIXED_API_KEY, MIXED_LIVE_EV_ID
from tests.broker import Broker
from tests.harness import daemon_settings, stop_daemon, watching


async def test_an_account_without_a_live_ev_gets_no_car_controls(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    # What is left: a retired EV registration, a home battery and a heat pump.
    del simulator.state.devices[MIXED_LIVE_EV_ID]
    octopus = {"api_key": MIXED_API_KEY, "account_number": MIXED_ACCOUNT}
    settings = daemon_settings(broker, simulator, tmp_path, octopus=octopus)
    topics = Topics(settings.mqtt.base_topic, MIXED_ACCOUNT)
    async with watching(broker) as watcher:
        daemon = Daemon(settings)
        task = asyncio.create_task(daemon.run())
        try:
            device = await watcher.wait_for(topics.device, timeout=40)  # the first poll is in
            assert len(json.loads(device.payload)["devices"]) == 3
            await asyncio.sleep(0.5)  # the discovery that follows a device change
            announced = watcher.last(discovery_topic("homeassistant", MIXED_ACCOUNT))
        finally:
            await stop_daemon(daemon, task)
    assert announced
    components = json.loads(announced)["components"]
    car = {"device_state", "target_soc", "ready_by", "smart_control", "boost"}
    assert not car & set(components), sorted(components)
    assert "offpeak" in components, "the account's own entities stay"
