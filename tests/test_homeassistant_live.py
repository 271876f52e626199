"""Home Assistant discovery through a real broker, driven the way HA drives it."""

from __future__ import annotations

import asyncio
import json
from datetime import time
from pathlib import Path
from typing import Any

from ioagent.mqtt.topics import COMMANDS
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_EV_ID
from tests.broker import Broker
from tests.harness import RunningDaemon, running_daemon, watching

DISCOVERY = "homeassistant/device/ioagent_a_sim00001/config"


async def discovery(d: RunningDaemon) -> dict[str, Any]:
    seen = await d.watcher.wait_for(DISCOVERY, lambda p: bool(p) and "target_soc" in p, timeout=10)
    payload: dict[str, Any] = json.loads(seen.payload)
    return payload


def state_topics(component: dict[str, Any]) -> set[str]:
    return {
        value
        for key, value in component.items()
        if key.endswith("_topic") and not key.startswith("command") and isinstance(value, str)
    }


async def test_discovery_is_valid_and_names_only_topics_the_daemon_uses(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with running_daemon(broker, simulator, tmp_path) as d:
        config = await discovery(d)
        assert config["device"]["identifiers"]
        assert config["origin"]["name"] == "ioagent"
        components: dict[str, dict[str, Any]] = config["components"]
        assert len(components) >= 15
        unique_ids = [c["unique_id"] for c in components.values()]
        assert len(unique_ids) == len(set(unique_ids))
        await asyncio.sleep(1.0)  # let every retained state topic arrive
        published = {m.topic for m in d.watcher.messages}
        availability = {a["topic"] for a in config.get("availability", [])}
        assert availability == {d.topics.status}
        handled = {d.topics.command(name) for name in COMMANDS}
        handled.add(d.topics.refresh)
        for name, component in components.items():
            assert "platform" in component and "unique_id" in component, name
            if component["platform"] == "event":
                # Events and replies are not retained: they appear only when something happens.
                assert state_topics(component) <= {d.topics.events, d.topics.response}, name
                continue
            for topic in state_topics(component):
                assert topic in published, f"{name} reads {topic}, which the daemon never publishes"
            if "command_topic" in component:
                assert component["command_topic"] in handled, name
    async with watching(broker, "homeassistant/#") as late:
        kept = await late.wait_for(DISCOVERY, timeout=5)
    assert kept.retain, "discovery is retained, so HA finds it whenever it starts"
    assert json.loads(kept.payload) == config


async def test_every_ha_control_changes_the_simulator(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    device = simulator.state.device(DEFAULT_EV_ID)
    simulator.state.plug(device, True)
    async with running_daemon(broker, simulator, tmp_path, polling={"resync_pause": 1.0}) as d:
        components = (await discovery(d))["components"]
        by_platform: dict[str, list[dict[str, Any]]] = {}
        for component in components.values():
            by_platform.setdefault(component["platform"], []).append(component)

        async def press(component: dict[str, Any], payload: str) -> dict[str, Any]:
            mark = len(d.watcher.messages)
            await d.watcher.publish(component["command_topic"], payload)
            reply = await d.watcher.wait_for(d.topics.response, after=mark, timeout=15)
            result: dict[str, Any] = json.loads(reply.payload)
            return result

        number = next(c for c in by_platform["number"] if "target_soc" in c["command_topic"])
        assert (await press(number, "65"))["status"] == "ok"  # HA sends the bare number
        assert all(s.max == 65 for s in device.preferences.schedules)

        select = next(c for c in by_platform["select"] if "ready_by" in c["command_topic"])
        assert "05:30" in select["options"]
        assert (await press(select, "05:30"))["status"] == "ok"
        assert all(s.time == time(5, 30) for s in device.preferences.schedules)

        switches = {c["command_topic"].rsplit("/", 1)[1]: c for c in by_platform["switch"]}
        smart = switches["smart_control"]
        assert (await press(smart, smart["payload_off"]))["status"] == "ok"
        assert device.is_suspended
        assert (await press(smart, smart["payload_on"]))["status"] == "ok"
        assert not device.is_suspended

        boost = switches["boost"]
        assert (await press(boost, boost["payload_on"]))["status"] == "ok"
        assert any(item.type == "BOOST" for item in device.planned)
        assert (await press(boost, boost["payload_off"]))["status"] == "ok"
        assert not any(item.type == "BOOST" for item in device.planned)

        buttons = {c["command_topic"].rsplit("/", 1)[1]: c for c in by_platform["button"]}
        assert set(buttons) == {"refresh", "resync"}
        button = buttons["refresh"]
        before = simulator.state.calls()["by_operation"].get("flexPlannedDispatches", 0)
        assert (await press(button, button["payload_press"]))["status"] == "ok"
        await asyncio.sleep(0.5)
        after = simulator.state.calls()["by_operation"].get("flexPlannedDispatches", 0)
        assert after > before

        resync = buttons["resync"]
        smart_calls = simulator.state.calls()["by_operation"].get("updateDeviceSmartControl", 0)
        assert (await press(resync, resync["payload_press"]))["status"] == "ok"
        calls = simulator.state.calls()["by_operation"].get("updateDeviceSmartControl", 0)
        assert calls == smart_calls + 2, "a resync suspends and resumes"
        assert not device.is_suspended


async def test_ha_birth_message_triggers_a_republish(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with running_daemon(broker, simulator, tmp_path) as d:
        await discovery(d)
        mark = len(d.watcher.messages)
        await d.watcher.publish("homeassistant/status", "online")
        # Discovery and state come again after a short random delay (1-5 s).
        await d.watcher.wait_for(DISCOVERY, after=mark, timeout=10)
        await d.watcher.wait_for(d.topics.offpeak, after=mark, timeout=10)
        await d.watcher.wait_for(d.topics.device_state, after=mark, timeout=10)


async def test_turning_discovery_off_removes_the_device(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with running_daemon(broker, simulator, tmp_path) as d:
        await discovery(d)
    async with running_daemon(broker, simulator, tmp_path, homeassistant={"enabled": False}) as d2:
        await d2.watcher.wait_for(DISCOVERY, lambda p: p == "", timeout=10)
    async with watching(broker, "homeassistant/#") as late:
        await asyncio.sleep(0.5)
        assert late.last(DISCOVERY) is None, "no retained discovery is left on the broker"


def car_components(payload: str) -> dict[str, Any]:
    components: dict[str, Any] = json.loads(payload)["components"]
    return {key: components[key] for key in CAR_COMPONENTS if key in components}


CAR_COMPONENTS = ("device_state", "target_soc", "ready_by", "smart_control", "boost", "resync")


async def test_the_car_appears_in_ha_when_the_api_answers_after_the_broker(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    # A real login takes longer than connecting to a local broker: discovery goes out first.
    simulator.state.add_fault("timeout", count=3, include_auth=True, delay=1.5)
    async with running_daemon(broker, simulator, tmp_path) as d:
        config = await discovery(d)
        assert set(car_components(json.dumps(config))) == set(CAR_COMPONENTS)


async def test_a_restart_with_the_api_down_keeps_the_cars_entities(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with running_daemon(broker, simulator, tmp_path) as d:
        await discovery(d)
    simulator.state.add_fault("http_500", count=1000, include_auth=True)
    async with running_daemon(broker, simulator, tmp_path, wait_for_poll=False) as d2:
        announced = await d2.watcher.wait_for(DISCOVERY, timeout=10)
        await asyncio.sleep(1.0)
        payloads = [announced.payload, *d2.watcher.values(DISCOVERY)]
    for payload in payloads:
        components = car_components(payload)
        assert set(components) == set(CAR_COMPONENTS), "HA must not lose the car's entities"
        assert all(len(config) > 1 for config in components.values()), "no removal stub"


async def test_a_car_that_leaves_the_account_is_removed_from_ha(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with running_daemon(broker, simulator, tmp_path) as d:
        await discovery(d)
        del simulator.state.devices[DEFAULT_EV_ID]
        await d.watcher.publish(d.topics.refresh, "")
        removed = await d.watcher.wait_for(
            DISCOVERY, lambda p: car_components(p).get("target_soc") == {"platform": "number"}
        )
        stubs = car_components(removed.payload)
        assert set(stubs) == set(CAR_COMPONENTS)
        assert all(list(config) == ["platform"] for config in stubs.values())
        assert "offpeak" in json.loads(removed.payload)["components"], "the account stays"


async def test_turning_discovery_off_clears_it_even_with_a_new_database(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with running_daemon(broker, simulator, tmp_path / "first") as d:
        await discovery(d)
    disabled = {"enabled": False}
    async with running_daemon(broker, simulator, tmp_path / "fresh", homeassistant=disabled) as d2:
        await d2.watcher.wait_for(DISCOVERY, lambda p: p == "", timeout=10)
    async with watching(broker, "homeassistant/#") as late:
        await asyncio.sleep(0.5)
        assert late.last(DISCOVERY) is None, "no retained discovery is left on the broker"
