"""The agent reads the product and the rates from the simulator; failures keep what is known."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import pytest_asyncio
from pydantic import SecretStr

from ioagent.budget import avoid_boundary
from ioagent.config import TariffSettings
from ioagent.kraken.client import KrakenClient
from ioagent.kraken.rest import ProductsClient
from ioagent.mqtt.topics import NO_TIME, Topics
from ioagent.runtime.agent import AccountAgent
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_EV_ID,
    SimulatorState,
)
from ioagent.store.async_store import AsyncStore
from ioagent.timeutil import utc_now

TOPICS = Topics("ioagent", DEFAULT_ACCOUNT)


@dataclass
class RecordingPublisher:
    retained: dict[str, str] = field(default_factory=dict)

    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        if retain:
            self.retained[topic] = payload


@pytest_asyncio.fixture
async def four_rate_sim() -> AsyncIterator[RunningSimulator]:
    state = SimulatorState.with_default_account(clock=utc_now, product="four_rate")
    async with run_simulator(state) as running:
        yield running


def make_agent(
    sim: RunningSimulator, store: AsyncStore | None, now: datetime, **tariff: object
) -> tuple[AccountAgent, RecordingPublisher]:
    publisher = RecordingPublisher()
    agent = AccountAgent(
        account=DEFAULT_ACCOUNT,
        client=KrakenClient(sim.graphql_url, SecretStr(DEFAULT_API_KEY), clock=lambda: now),
        publisher=publisher,
        store=store,
        topics=TOPICS,
        tariff=TariffSettings.model_validate(tariff),
        clock=lambda: now,
    )
    agent.rates_client = ProductsClient(sim.rest_url)
    # As after the daemon's first poll: before one has ended, no tariff topic is published at
    # all (a fresh install would otherwise flicker; docs/mqtt.md).
    agent.polled = True
    return agent, publisher


async def close(agent: AccountAgent) -> None:
    await agent.client.close()
    assert agent.rates_client is not None
    await agent.rates_client.close()


def api(publisher: RecordingPublisher) -> dict[str, object]:
    result: dict[str, object] = json.loads(publisher.retained[TOPICS.api])
    return result


async def test_a_failed_agreements_read_keeps_the_stored_product(
    four_rate_sim: RunningSimulator, tmp_path: Path
) -> None:
    now = avoid_boundary(utc_now())
    store = await AsyncStore.open(tmp_path / "ioagent.db")
    try:
        first, _ = make_agent(four_rate_sim, store, now)
        assert await first.refresh_product_if_due(now)
        assert first.product.family == "four_rate"
        await close(first)

        four_rate_sim.state.add_fault("partial", count=5, field="account")
        # restarted a minute later: the stored budget (1 read a minute) allows the next read
        later = avoid_boundary(now + timedelta(seconds=61))
        second, publisher = make_agent(four_rate_sim, store, later)
        await second.restore()
        assert not await second.refresh_product_if_due(later)
        assert (second.product.family, second.product.product) == (
            "four_rate",
            "IOG-SMB-VAR-24-10-29",
        )
        note = str(api(publisher)["product"])
        assert note.startswith("degraded: agreements unreadable") and "IOG-SMB" in note
        await second.publish_tariff(later)
        assert json.loads(publisher.retained[TOPICS.tariff])["family"] == "four_rate"
        await close(second)
    finally:
        await store.close()


async def test_rates_that_cannot_be_read_keep_the_last_known_values(
    four_rate_sim: RunningSimulator,
) -> None:
    now = avoid_boundary(utc_now())
    agent, publisher = make_agent(four_rate_sim, None, now)
    await agent.refresh_product_if_due(now)
    assert await agent.refresh_rates_if_due(now)
    home = publisher.retained[TOPICS.rate_home]
    assert home in ("30.371355", "6.89997")
    four_rate_sim.state.tariffs.failing_feeds.add("day-unit-rates")
    agent.rates_checked_at = None  # due again
    assert not await agent.refresh_rates_if_due(now)
    assert publisher.retained[TOPICS.rate_home] == home, "the last known value stays"
    assert str(api(publisher)["rates"]).startswith("degraded: rates unreadable")
    await close(agent)


async def test_a_migration_away_from_four_rate_clears_the_allowance(
    four_rate_sim: RunningSimulator,
) -> None:
    now = avoid_boundary(utc_now())
    agent, publisher = make_agent(four_rate_sim, None, now)
    await agent.refresh_product_if_due(now)
    assert publisher.retained[TOPICS.allowance_remaining] == "6.00"
    # No plan uses it up: "none", like the other time topics (an empty retained payload would
    # delete the topic, and a late subscriber would wait for it forever).
    assert publisher.retained[TOPICS.allowance_exhausted_at] == NO_TIME
    four_rate_sim.state.migrate(DEFAULT_ACCOUNT, "legacy", now)
    agent.product_checked_at = None  # the daily re-read
    agent.product_budget.per_minute = 10
    assert await agent.refresh_product_if_due(now)
    assert agent.product.family == "legacy"
    for topic in TOPICS.allowance_topics:
        assert publisher.retained[topic] == "", topic
    await close(agent)


async def test_a_product_override_applies_without_an_agreement(
    four_rate_sim: RunningSimulator,
) -> None:
    now = avoid_boundary(utc_now())
    agent, publisher = make_agent(four_rate_sim, None, now, product="legacy")
    await agent.refresh_product_if_due(now)
    await agent.publish_tariff(now)
    tariff = json.loads(publisher.retained[TOPICS.tariff])
    assert (tariff["family"], tariff["source"], tariff["product"]) == ("legacy", "config", None)
    assert TOPICS.allowance_remaining not in publisher.retained
    await close(agent)


async def test_a_crash_loop_gets_no_fresh_hour_of_agreements_reads(
    four_rate_sim: RunningSimulator, tmp_path: Path
) -> None:
    # Six restarts a minute and a half apart: each start reads the agreements if the budget
    # lets it. The budget (4 an hour) must hold across the restarts, not per process.
    start = avoid_boundary(utc_now())
    store = await AsyncStore.open(tmp_path / "ioagent.db")
    reads = 0
    try:
        for restart in range(6):
            now = avoid_boundary(start + timedelta(seconds=90 * restart))
            agent, _ = make_agent(four_rate_sim, store, now)
            await agent.restore()
            await agent.refresh_product_if_due(now)
            reads += agent.product_checked_at is not None
            await close(agent)
    finally:
        await store.close()
    assert reads == agent.product_budget.per_hour == 4


async def test_charging_seen_before_a_restart_still_counts_after_it(
    four_rate_sim: RunningSimulator, tmp_path: Path
) -> None:
    now = avoid_boundary(utc_now())
    state = four_rate_sim.state
    slot_start = now - timedelta(minutes=5)
    state.add_dispatch(state.device(DEFAULT_EV_ID), slot_start, now + timedelta(minutes=25),
                       "SMART", 3.5)  # fmt: skip
    store = await AsyncStore.open(tmp_path / "ioagent.db")
    try:
        first, _ = make_agent(four_rate_sim, store, now)
        assert await first.check_device_state(now), "the simulated car is charging"
        await close(first)
        second, _ = make_agent(four_rate_sim, store, now + timedelta(seconds=30))
        await second.restore()
        [seen] = second.charging_seen
        assert abs(seen - now) < timedelta(seconds=1)
        assert any(piece.start <= seen < piece.end for piece in second.evidence())
        assert second.device_budget.used_last_hour(now + timedelta(seconds=30)) == 1
        await close(second)
    finally:
        await store.close()
