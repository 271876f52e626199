"""What a user reads when Octopus refuses: the ``api`` topic and the log carry Kraken's own text.

Against the simulator over real sockets; the agent publishes to a recording publisher.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest_asyncio
from pydantic import SecretStr
from structlog.testing import capture_logs

from ioagent.config import TariffSettings
from ioagent.kraken.client import KrakenClient
from ioagent.mqtt.topics import Topics
from ioagent.runtime.agent import AccountAgent
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_API_KEY, SimulatorState

NOW = datetime(2026, 1, 12, 18, 7, 31, tzinfo=UTC)
TOPICS = Topics("ioagent", DEFAULT_ACCOUNT)


@dataclass
class RecordingPublisher:
    retained: dict[str, str] = field(default_factory=dict)

    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        if retain:
            self.retained[topic] = payload


@dataclass
class World:
    sim: RunningSimulator
    publisher: RecordingPublisher

    def agent(self, api_key: str = DEFAULT_API_KEY) -> AccountAgent:
        client = KrakenClient(self.sim.graphql_url, SecretStr(api_key), clock=lambda: NOW)
        return AccountAgent(
            account=DEFAULT_ACCOUNT,
            client=client,
            publisher=self.publisher,
            store=None,
            topics=TOPICS,
            tariff=TariffSettings(),
            clock=lambda: NOW,
        )

    def api(self) -> dict[str, object]:
        health: dict[str, object] = json.loads(self.publisher.retained[TOPICS.api])
        return health


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    state = SimulatorState.with_default_account(clock=lambda: NOW)
    async with run_simulator(state) as sim:
        yield World(sim, RecordingPublisher())


async def test_a_bad_key_shows_krakens_reason_on_the_api_topic(world: World) -> None:
    agent = world.agent("sk_test_not_a_key_the_simulator_knows")
    try:
        with capture_logs() as logs:
            outcome = await agent.poll()
    finally:
        await agent.client.close()
    assert not outcome.ok
    health = world.api()
    assert health["state"] == "auth_failed"
    # Kraken's message is "Invalid data."; the reason is in errorDescription.
    assert "Authentication failed." in str(health["last_error"])
    [logged] = [e for e in logs if e["event"] == "api_error"]
    assert "Authentication failed." in logged["error"]


async def test_a_disabled_field_is_api_changed_and_the_last_plan_is_kept(world: World) -> None:
    agent = world.agent()
    try:
        first = await agent.poll()
        assert first.ok, first.error
        planned_before = world.publisher.retained[TOPICS.planned]
        world.sim.state.add_fault("disabled_field", 1, field="flexPlannedDispatches")
        with capture_logs() as logs:
            outcome = await agent.poll()
    finally:
        await agent.client.close()
    assert not outcome.ok
    health = world.api()
    assert health["state"] == "api_changed"
    assert "KT-CT-1113" in str(health["last_error"])
    assert "Disabled GraphQL field requested." in str(health["last_error"])
    assert world.publisher.retained[TOPICS.planned] == planned_before
    partial = [e for e in logs if e["event"] == "kraken_poll_partial"]
    assert partial and "KT-CT-1113" in json.dumps(partial[0]["failed"])
