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


ROOT = MQTT_DOC.parent.parent
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_compose_header_and_the_docs_give_check_before_up() -> None:
    header = [
        line for line in (ROOT / "docker-compose.yml").read_text().splitlines() if "# then:" in line
    ]
    (line,) = header
    steps = [step.strip() for step in line.split("# then:", 1)[1].split("&&")]
    assert steps == [
        "docker compose build",
        "docker compose run --rm ioagent check",
        "docker compose up -d",
    ]
    for doc in (ROOT / "README.md", ROOT / "docs" / "docker.md"):
        text = doc.read_text()
        assert text.index("docker compose run --rm ioagent check") < text.index(
            "docker compose up -d"
        ), doc.name


def test_every_doc_writes_the_command_as_a_bare_ioagent() -> None:
    # scripts/install puts `ioagent` on the PATH; a doc that says .venv/bin/ioagent or
    # `python -m ioagent` to a user would be a second way to do the same thing.
    for doc in USER_DOCS:
        if doc.name in {"benchmarks.md", "reliability.md"}:
            continue  # they describe how the benchmarks and tests start it, not user commands
        text = doc.read_text()
        assert ".venv/bin/ioagent" not in text, doc.name
        assert "python -m ioagent" not in text, doc.name
