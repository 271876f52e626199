"""`ioagent demo`: topics visibly change within the first minute, and it stops cleanly."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ioagent.demo import demo_clock_offset
from tests.broker import Broker, free_port
from tests.harness import watching

ROOT = Path(__file__).resolve().parent.parent


async def test_the_whole_demo_story_plays_out_on_mqtt(broker: Broker) -> None:
    async with watching(broker, "ioagent/#") as watcher:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ioagent",
            "demo",
            "--mqtt-port",
            str(broker.port),
            "--duration",
            "160",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        base = "ioagent/A-SIM00001"

        def event(kind: str) -> Callable[[str], bool]:
            return lambda p: json.loads(p)["event"] == kind

        def reply(command: str) -> Callable[[str], bool]:
            return lambda p: json.loads(p)["command"] == command

        try:
            # Within the first minute: the plug-in at 10 s plans smart slots (a poll in the quiet
            # seconds around :00/:30 of a real-time run waits up to 25 s).
            added = await watcher.wait_for(f"{base}/events", event("slot_added"), timeout=60)
            assert json.loads(added.payload)["slot"]["type"] == "SMART"
            # The first slot starts on the next minute, in the evening peak. On the four-rate
            # product the car's low rate starts with its half-hour and the car charges from
            # the minute; the home bonus follows once the car is seen charging.
            await watcher.wait_for(f"{base}/ev/offpeak", lambda p: p == "true", timeout=70)
            await watcher.wait_for(f"{base}/dispatching", lambda p: p == "true", timeout=70)
            assert watcher.last(f"{base}/allowance/remaining") is not None
            await watcher.wait_for(
                f"{base}/offpeak/confidence", lambda p: p == "charging", timeout=150
            )
            await watcher.wait_for(f"{base}/offpeak", lambda p: p == "true", timeout=10)
            # 75 s: Octopus re-plans.
            changed = await watcher.wait_for(f"{base}/events", event("slot_changed"), timeout=60)
            assert json.loads(changed.payload)["previous"] is not None
            # 110 s and 150 s: a boost over MQTT, then its cancellation.
            boost = await watcher.wait_for(f"{base}/response", reply("boost"), timeout=60)
            assert json.loads(boost.payload)["status"] == "ok", boost.payload
            await watcher.wait_for(f"{base}/device/boost", lambda p: p == "on", timeout=20)
            after = len(watcher.messages)
            cancelled = await watcher.wait_for(
                f"{base}/response", reply("boost"), after=after, timeout=60
            )
            assert json.loads(cancelled.payload)["status"] == "ok", cancelled.payload
            await watcher.wait_for(
                f"{base}/device/boost", lambda p: p == "off", after=after, timeout=20
            )
            output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        text = output.decode()
        assert process.returncode == 0, text
        assert f"mosquitto_sub -h localhost -p {broker.port} -v -t 'ioagent/#'" in text
        assert "Scenario done" in text
        assert watcher.last("ioagent/status") == "offline"


LONDON = ZoneInfo("Europe/London")


@pytest.mark.parametrize(
    ("real_local", "demo_local"),
    [
        # Afternoon and early evening: real time.
        (datetime(2026, 12, 1, 12, 0), datetime(2026, 12, 1, 12, 0)),
        (datetime(2026, 12, 1, 19, 45), datetime(2026, 12, 1, 19, 45)),
        (datetime(2026, 12, 1, 21, 0), datetime(2026, 12, 1, 21, 0)),
        # Late evening: the next day's 18:01.
        (datetime(2026, 12, 1, 21, 1), datetime(2026, 12, 2, 18, 1)),
        (datetime(2026, 12, 1, 23, 59), datetime(2026, 12, 2, 18, 1)),
        # Night and morning: the same day's 18:01.
        (datetime(2026, 12, 2, 0, 30), datetime(2026, 12, 2, 18, 1)),
        (datetime(2026, 12, 2, 11, 59), datetime(2026, 12, 2, 18, 1)),
        # Across the spring-forward night (29 March 2026): 18:01 is BST, 17:01Z.
        (datetime(2026, 3, 29, 2, 30), datetime(2026, 3, 29, 18, 1)),
        # Across the autumn fall-back night (25 October 2026): 18:01 is GMT again.
        (datetime(2026, 10, 24, 22, 0), datetime(2026, 10, 25, 18, 1)),
    ],
)
def test_the_demo_clock_puts_the_story_in_an_evening(
    real_local: datetime, demo_local: datetime
) -> None:
    now = real_local.replace(tzinfo=LONDON).astimezone(UTC)
    shifted = (now + demo_clock_offset(now)).astimezone(LONDON)
    assert shifted.replace(tzinfo=None) == demo_local


async def test_demo_starts_its_own_broker_when_none_is_running() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ioagent",
        "demo",
        "--mqtt-port",
        str(port),
        "--duration",
        "3",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    text = output.decode()
    assert process.returncode == 0, text
    assert f"Started a private Mosquitto on 127.0.0.1:{port}" in text
    assert '"event": "starting"' in text
