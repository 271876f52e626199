"""`ioagent demo`: topics visibly change within the first minute, and it stops cleanly."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.broker import Broker, free_port
from tests.harness import watching

ROOT = Path(__file__).resolve().parent.parent


async def test_demo_topics_change_within_a_minute(broker: Broker) -> None:
    async with watching(broker, "ioagent/#") as watcher:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ioagent",
            "demo",
            "--mqtt-port",
            str(broker.port),
            "--duration",
            "18",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            base = "ioagent/A-SIM00001"
            await watcher.wait_for(f"{base}/dispatches/planned", lambda p: p == "[]", timeout=20)
            added = await watcher.wait_for(
                f"{base}/events", lambda p: json.loads(p)["event"] == "slot_added", timeout=40
            )
            assert json.loads(added.payload)["slot"]["type"] == "SMART"
            await watcher.wait_for(
                f"{base}/dispatches/planned", lambda p: len(json.loads(p)) >= 1, timeout=5
            )
            await watcher.wait_for(f"{base}/response", timeout=5)
            output, _ = await asyncio.wait_for(process.communicate(), timeout=40)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        text = output.decode()
        assert process.returncode == 0, text
        assert f"mosquitto_sub -h localhost -p {broker.port} -v -t 'ioagent/#'" in text
        assert watcher.last("ioagent/status") == "offline"


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
