"""Account discovery is visible on the broker: a wrong key shows on ``{base}/setup/…``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ioagent.mqtt.topics import setup_api_topic, setup_status_topic
from ioagent.runtime.daemon import Daemon
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_ACCOUNT
from tests.broker import Broker
from tests.harness import daemon_settings, stop_daemon, watching

BASE = "ioagent"


async def test_a_refused_key_without_an_account_number_shows_on_the_setup_topics(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    wrong = {"api_key": "sk_live_FAKEnotAKnownKey00002", "account_number": None}
    settings = daemon_settings(broker, simulator, tmp_path, octopus=wrong)
    async with watching(broker) as watcher:
        daemon = Daemon(settings)
        task = asyncio.create_task(daemon.run())
        try:
            await watcher.wait_for(setup_status_topic(BASE), lambda p: p == "online", timeout=15)
            seen = await watcher.wait_for(setup_api_topic(BASE), timeout=15)
            api = json.loads(seen.payload)
            assert api["state"] == "auth_failed"
            assert "[octopus] api_key" in api["hint"], "the hint names the key to fix"
            assert api["retry_at"] and api["last_error"]
            assert wrong["api_key"] not in seen.payload
            # A late subscriber (HA, Node-RED, mosquitto_sub) finds it retained.
            async with watching(broker, f"{BASE}/setup/#") as late:
                kept = await late.wait_for(setup_api_topic(BASE), timeout=5)
            assert kept.retain and json.loads(kept.payload)["state"] == "auth_failed"
        finally:
            await stop_daemon(daemon, task)
        await watcher.wait_for(setup_status_topic(BASE), lambda p: p == "offline", timeout=5)


async def test_a_found_account_clears_the_setup_topics(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    settings = daemon_settings(broker, simulator, tmp_path, octopus={"account_number": None})
    async with watching(broker) as watcher:
        # What an earlier failed run left behind.
        await watcher.publish(setup_api_topic(BASE), '{"state": "auth_failed"}', retain=True)
        await watcher.publish(setup_status_topic(BASE), "offline", retain=True)
        daemon = Daemon(settings)
        task = asyncio.create_task(daemon.run())
        try:
            await watcher.wait_for(f"{BASE}/{DEFAULT_ACCOUNT}/api", timeout=30)
            await watcher.wait_for(setup_api_topic(BASE), lambda p: p == "", timeout=10)
            await watcher.wait_for(setup_status_topic(BASE), lambda p: p == "", timeout=10)
            async with watching(broker, f"{BASE}/setup/#") as late:
                await asyncio.sleep(0.5)
                assert late.messages == [], "nothing retained is left on the setup topics"
        finally:
            await stop_daemon(daemon, task)
