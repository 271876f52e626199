"""Only smart-chargeable devices are polled for planned dispatches.

Real accounts list retired registrations, batteries, heat pumps and storage heaters beside the
car. They have no plan worth asking for, and each planned-dispatch query spends the 5-a-minute
budget, so they are shown on the ``device`` topic (marked not smart-charged) and never polled.
Runs against the simulator's mixed account over real sockets.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest_asyncio
from pydantic import SecretStr

from ioagent.config import PollingSettings, TariffSettings
from ioagent.kraken.client import KrakenClient
from ioagent.kraken.types import Device
from ioagent.mqtt.topics import Topics
from ioagent.runtime.agent import AccountAgent
from ioagent.runtime.poller import Poller
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import (
    MIXED_ACCOUNT,
    MIXED_API_KEY,
    MIXED_BATTERY_ID,
    MIXED_HEAT_PUMP_ID,
    MIXED_LIVE_EV_ID,
    MIXED_RETIRED_EV_ID,
    SimulatorState,
)

NOW = datetime(2026, 1, 12, 18, 7, 31, tzinfo=UTC)
TOPICS = Topics("ioagent", MIXED_ACCOUNT)


@dataclass
class RecordingPublisher:
    retained: dict[str, str] = field(default_factory=dict)

    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        if retain:
            self.retained[topic] = payload


@dataclass
class Mixed:
    sim: RunningSimulator
    agent: AccountAgent
    publisher: RecordingPublisher

    def planned_queries(self) -> int:
        return int(self.sim.state.calls()["by_operation"].get("flexPlannedDispatches", 0))


@pytest_asyncio.fixture
async def mixed() -> AsyncIterator[Mixed]:
    state = SimulatorState.with_default_account(clock=lambda: NOW)
    async with run_simulator(state) as sim:
        client = KrakenClient(sim.graphql_url, SecretStr(MIXED_API_KEY), clock=lambda: NOW)
        publisher = RecordingPublisher()
        agent = AccountAgent(
            account=MIXED_ACCOUNT,
            client=client,
            publisher=publisher,
            store=None,
            topics=TOPICS,
            tariff=TariffSettings(),
            clock=lambda: NOW,
        )
        try:
            yield Mixed(sim, agent, publisher)
        finally:
            await client.close()


def test_smart_chargeable_means_a_live_ev_or_charge_point() -> None:
    def device(device_type: str, status: str | None) -> Device:
        return Device("d", None, device_type, None, None, None, status, None, None)

    assert device("ELECTRIC_VEHICLES", "LIVE").is_smart_chargeable
    for device_type, status in [
        ("ELECTRIC_VEHICLES", "RETIRED"),
        ("ELECTRIC_VEHICLES", "PENDING_LIVE"),
        ("ELECTRIC_VEHICLES", None),
        ("BATTERIES", "LIVE"),
        ("HEAT_PUMPS", "LIVE"),
        ("STORAGE_HEATERS", "LIVE"),
        ("CHARGE_POINTS", "LIVE"),  # no such Kraken type: a charge point says ELECTRIC_VEHICLES
    ]:
        assert not device(device_type, status).is_smart_chargeable, (device_type, status)


async def test_a_poll_of_four_devices_spends_one_planned_dispatch_query(mixed: Mixed) -> None:
    settings = PollingSettings()
    poller = Poller(mixed.agent, settings, clock=lambda: NOW)
    await poller._poll_for({"start"})
    assert len(mixed.agent.devices) == 4
    assert mixed.planned_queries() == 1
    assert poller.budget.used_last_minute(NOW) == 1
    assert list(mixed.agent.plans) == [MIXED_LIVE_EV_ID]
    # A second poll costs one more, not four more.
    assert poller._cost() == 1
    await mixed.agent.poll()
    assert mixed.planned_queries() == 2


async def test_devices_without_smart_charging_are_shown_marked_as_such(mixed: Mixed) -> None:
    outcome = await mixed.agent.poll()
    assert outcome.ok, outcome.error
    published = json.loads(mixed.publisher.retained[TOPICS.device])
    assert published["id"] == MIXED_LIVE_EV_ID
    assert published["smart_charged"] is True
    assert published["device_ids"] == [MIXED_LIVE_EV_ID]
    listed = {d["id"]: d for d in published["devices"]}
    assert set(listed) == {
        MIXED_LIVE_EV_ID,
        MIXED_RETIRED_EV_ID,
        MIXED_BATTERY_ID,
        MIXED_HEAT_PUMP_ID,
    }
    summary = {
        device_id: (d["device_type"], d["status"], d["smart_charged"])
        for device_id, d in listed.items()
    }
    assert summary == {
        MIXED_LIVE_EV_ID: ("ELECTRIC_VEHICLES", "LIVE", True),
        MIXED_RETIRED_EV_ID: ("ELECTRIC_VEHICLES", "RETIRED", False),
        MIXED_BATTERY_ID: ("BATTERIES", "LIVE", False),
        MIXED_HEAT_PUMP_ID: ("HEAT_PUMPS", "LIVE", False),
    }
    assert listed[MIXED_BATTERY_ID]["type"] == "SmartFlexDevice"


async def test_an_account_with_no_live_ev_polls_no_plan(mixed: Mixed) -> None:
    live = mixed.sim.state.device(MIXED_LIVE_EV_ID)
    live.status_current = "RETIRED"
    outcome = await mixed.agent.poll()
    assert outcome.ok, outcome.error
    assert mixed.planned_queries() == 0
    assert mixed.agent.device_ids == []
    published = json.loads(mixed.publisher.retained[TOPICS.device])
    assert published["smart_charged"] is False
    assert len(published["devices"]) == 4
