"""What docs/mqtt.md shows is what ioagent publishes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ioagent.simulator.server import RunningSimulator
from tests.broker import Broker
from tests.harness import running_daemon

MQTT_DOC = Path(__file__).resolve().parent.parent / "docs" / "mqtt.md"


def documented_api_health() -> dict[str, object]:
    text = MQTT_DOC.read_text(encoding="utf-8")
    section = text.split("API health:", 1)[1]
    block = re.search(r"```json\n(.*?)\n```", section, re.S)
    assert block is not None, "docs/mqtt.md has no API health example"
    example: dict[str, object] = json.loads(block.group(1))
    return example


async def test_the_documented_api_health_example_is_what_a_kt_ct_4340_publishes(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    example = documented_api_health()
    async with running_daemon(broker, simulator, tmp_path) as d:
        simulator.state.add_fault("kt_4340", 1, field="flexPlannedDispatches")
        mark = len(d.watcher.messages)
        assert (await d.command("refresh", "docs"))["status"] == "ok"
        seen = await d.watcher.wait_for(
            d.topics.api, lambda p: json.loads(p)["state"] == "degraded", after=mark, timeout=15
        )
    health = json.loads(seen.payload)
    assert sorted(health) == sorted(example), "the documented fields are the published ones"
    assert list(example) == sorted(example), "the example shows the keys in published order"
    assert health["last_error"] == example["last_error"]
    assert health["storage"] == example["storage"] == "ok"
