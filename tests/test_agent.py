"""The account agent without a broker: what it publishes after a restart and after a poll."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from ioagent.config import TariffSettings
from ioagent.kraken.client import KrakenClient, PollResult
from ioagent.kraken.types import AT_HOME, AWAY, BOOST, SMART, CompletedDispatch, Device, Dispatch
from ioagent.mqtt.topics import Topics
from ioagent.runtime.agent import AccountAgent
from ioagent.store.async_store import AsyncStore
from ioagent.store.database import watching_since_key

NOW = datetime(2026, 11, 23, 18, 0, 7, tzinfo=UTC)
ACCOUNT = "A-1234ABCD"
TOPICS = Topics("ioagent", ACCOUNT)


@dataclass
class RecordingPublisher:
    retained: dict[str, str] = field(default_factory=dict)
    sent: list[tuple[str, str]] = field(default_factory=list)

    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        self.sent.append((topic, payload))
        if retain:
            self.retained[topic] = payload

    def values(self, topic: str) -> list[str]:
        return [payload for sent, payload in self.sent if sent == topic]


def offline_agent(
    publisher: RecordingPublisher,
    store: AsyncStore | None,
    now: datetime = NOW,
    tariff: TariffSettings | None = None,
) -> AccountAgent:
    # Its client is never called: these tests feed the agent directly.
    client = KrakenClient("http://127.0.0.1:9/", SecretStr("sk_test_unused"), clock=lambda: now)
    return AccountAgent(
        account=ACCOUNT,
        client=client,
        publisher=publisher,
        store=store,
        topics=TOPICS,
        tariff=tariff or TariffSettings(),
        clock=lambda: now,
    )


async def restored_api(store: AsyncStore) -> str | None:
    publisher = RecordingPublisher()
    agent = offline_agent(publisher, store)
    await agent.restore()
    await agent.client.close()
    return publisher.retained.get(TOPICS.api)


async def test_a_new_install_does_not_claim_the_api_is_ok_before_its_first_poll(
    tmp_path: Path,
) -> None:
    store = await AsyncStore.open(tmp_path / "ioagent.db")
    try:
        assert await restored_api(store) is None
    finally:
        await store.close()


async def test_a_restart_shows_the_last_known_api_state_and_the_datas_age(tmp_path: Path) -> None:
    last_success = NOW - timedelta(hours=2)
    failed_at = NOW - timedelta(minutes=30)
    store = await AsyncStore.open(tmp_path / "ioagent.db")
    try:
        previous = {
            "state": "auth_failed",
            "last_success": last_success.isoformat().replace("+00:00", "Z"),
            "last_error": "Kraken API refused the API key (KT-CT-1139)",
            "last_error_at": failed_at.isoformat().replace("+00:00", "Z"),
            "stale_seconds": 5400,
            "storage": "ok",
        }
        await store.save_retained(TOPICS.api, json.dumps(previous), failed_at)
        await store.set_meta(f"last_success:{ACCOUNT}", previous["last_success"])
        payload = await restored_api(store)
    finally:
        await store.close()
    assert payload is not None
    health = json.loads(payload)
    assert health["state"] == "auth_failed", "a restart must not turn a known failure into ok"
    assert health["last_error"] == previous["last_error"]
    assert health["last_error_at"] == previous["last_error_at"]
    assert health["stale_seconds"] == 2 * 3600


@pytest.mark.parametrize(
    ("location", "offpeak"),
    [(None, "true"), (AT_HOME, "true"), (AWAY, "false")],
)
async def test_a_slot_completed_away_does_not_make_the_house_offpeak(
    location: str | None, offpeak: str
) -> None:
    now = datetime(2026, 11, 23, 19, 40, tzinfo=UTC)  # the evening peak, outside 23:30-05:30
    start, end = now - timedelta(minutes=10), now + timedelta(minutes=35)
    publisher = RecordingPublisher()
    agent = offline_agent(publisher, None, now)
    planned = Dispatch(start=start, end=end, type=SMART, kwh=3.0, device_id="dev-1")
    # Octopus's completed record (with its location) can arrive while the slot still runs.
    record = CompletedDispatch(start, now, 1.2, "smart-charge", location)
    await agent.apply(
        PollResult(devices=None, planned={"dev-1": [planned]}, completed=[record]), now
    )
    await agent.client.close()
    assert publisher.retained[TOPICS.offpeak] == offpeak
    assert publisher.retained[TOPICS.dispatching] == "true", "the car charges either way"


async def test_a_fresh_install_during_a_running_slot_says_offpeak_once() -> None:
    """The boundary timer publishes at start-up, before the first poll has landed: on a new
    database that used to give offpeak "false", then "true" 0.1 s later, and next_start twice."""
    now = datetime(2026, 11, 23, 19, 40, tzinfo=UTC)  # the evening peak
    start, end = now - timedelta(minutes=10), now + timedelta(minutes=35)
    publisher = RecordingPublisher()
    # Legacy: a planned smart slot is off-peak at once (four-rate waits for the car to charge).
    agent = offline_agent(publisher, None, now, TariffSettings(product="legacy"))
    await agent.publish_tariff(now)  # the daemon's boundaries task, at start-up
    planned = Dispatch(start=start, end=end, type=SMART, kwh=3.0, device_id="dev-1")
    await agent.apply(PollResult(devices=None, planned={"dev-1": [planned]}, completed=[]), now)
    await agent.publish_tariff(now)  # and again once the poll has re-armed it
    await agent.client.close()
    assert publisher.values(TOPICS.offpeak) == ["true"]
    assert publisher.values(TOPICS.dispatching) == ["true"]
    assert len(publisher.values(TOPICS.next_offpeak_start)) == 1
    assert len(publisher.values(TOPICS.offpeak_end)) == 1


async def test_when_the_first_poll_fails_the_fixed_window_is_still_published() -> None:
    now = datetime(2026, 11, 24, 0, 30, tzinfo=UTC)  # inside 23:30-05:30
    publisher = RecordingPublisher()
    agent = offline_agent(publisher, None, now)
    await agent.publish_tariff(now)
    assert TOPICS.offpeak not in publisher.retained, "nothing is known before the first poll"
    outcome = await agent.poll()  # the client points at a closed port
    await agent.publish_tariff(now)
    await agent.client.close()
    assert not outcome.ok
    assert publisher.retained[TOPICS.offpeak] == "true"
    assert json.loads(publisher.retained[TOPICS.api])["state"] == "degraded"


async def test_a_time_with_no_value_is_published_as_none_never_empty() -> None:
    now = datetime(2026, 11, 23, 19, 40, tzinfo=UTC)
    publisher = RecordingPublisher()
    agent = offline_agent(publisher, None, now)
    await agent.apply(PollResult(devices=None, planned={"dev-1": []}, completed=[]), now)
    await agent.client.close()
    assert publisher.retained[TOPICS.next_dispatch_start] == "none"
    assert publisher.retained[TOPICS.next_dispatch_end] == "none"
    assert all(payload for topic, payload in publisher.sent if topic in publisher.retained)


async def test_the_first_good_poll_starts_the_stores_record(tmp_path: Path) -> None:
    store = await AsyncStore.open(tmp_path / "ioagent.db")
    try:
        agent = offline_agent(RecordingPublisher(), store)
        await agent.apply(PollResult(devices=None, planned={"dev-1": []}, completed=[]), NOW)
        later = NOW + timedelta(hours=1)
        await agent.apply(PollResult(devices=None, planned={"dev-1": []}, completed=[]), later)
        await agent.client.close()
        assert await store.get_meta(watching_since_key(ACCOUNT)) == "2026-11-23T18:00:07Z"
    finally:
        await store.close()


async def test_completed_records_without_a_source_take_the_type_seen_planned(
    tmp_path: Path,
) -> None:
    """Octopus sends completed records with ``source: null``, boosts too: the agent types them
    by the slots it saw planned, also after a restart (from the store's record of slots)."""
    now = datetime(2026, 11, 23, 19, 40, tzinfo=UTC)
    boost = Dispatch(now - timedelta(hours=2), now - timedelta(hours=1), BOOST, 7.0, "dev-1")
    smart = Dispatch(now - timedelta(minutes=50), now - timedelta(minutes=20), SMART, 3.0, "dev-1")
    records = [
        CompletedDispatch(boost.start, boost.end, 7.0, None, AT_HOME),
        CompletedDispatch(smart.start, smart.end, 3.0, None, AT_HOME),
        CompletedDispatch(now - timedelta(hours=5), now - timedelta(hours=4), 2.0, None, None),
    ]
    store = await AsyncStore.open(tmp_path / "ioagent.db")
    try:
        # The boost was planned (and seen) while it ran; Octopus then dropped it from the plan.
        await store.save_plan(ACCOUNT, "dev-1", [boost, smart], boost.start + timedelta(minutes=5))
        publisher = RecordingPublisher()
        agent = offline_agent(publisher, store, now)
        await agent.apply(
            PollResult(devices=None, planned={"dev-1": [smart]}, completed=records), now
        )
        await agent.client.close()
        expected = ["UNKNOWN", "BOOST", "SMART"]
        published = json.loads(publisher.retained[TOPICS.completed])
        assert [slot["type"] for slot in published] == expected
        restarted = RecordingPublisher()
        again = offline_agent(restarted, store, now)
        await again.restore()
        await again.publish_plan(now)
        await again.client.close()
        assert [c.type for c in again.completed] == expected
    finally:
        await store.close()


async def test_an_unseen_completed_record_counts_towards_the_allowance_as_smart() -> None:
    """A record ioagent saw no plan for is UNKNOWN (never guessed smart on the topics), but it
    used allowance all the same: the effective plan takes it as smart, the cautious reading."""
    now = datetime(2026, 11, 23, 19, 40, tzinfo=UTC)
    earlier = CompletedDispatch(now - timedelta(hours=3), now - timedelta(hours=2), 7.0, None, None)
    publisher = RecordingPublisher()
    agent = offline_agent(publisher, None, now)
    await agent.apply(PollResult(devices=None, planned={"dev-1": []}, completed=[earlier]), now)
    await agent.client.close()
    assert [c["type"] for c in json.loads(publisher.retained[TOPICS.completed])] == ["UNKNOWN"]
    assert [(s.start, s.type) for s in agent.plan] == [(earlier.start, SMART)]


@dataclass
class StuckPublisher(RecordingPublisher):
    """Takes the message (a subscriber has it) and then never returns: a stop cancels it there."""

    taken: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        await super().publish(topic, payload, retain=retain)
        self.taken.set()
        await asyncio.Event().wait()


async def test_a_stop_during_a_publish_does_not_lose_the_published_value(tmp_path: Path) -> None:
    # Seen in a loaded soak run: a daemon stopped just after publishing offpeak restarted
    # without it, because the write to the database came after the publish and was cancelled.
    store = await AsyncStore.open(tmp_path / "ioagent.db")
    try:
        publisher = StuckPublisher()
        agent = offline_agent(publisher, store)
        putting = asyncio.create_task(agent._put(TOPICS.offpeak, "true"))
        await publisher.taken.wait()
        putting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await putting
    finally:
        await store.close(bound=5.0)
    reopened = await AsyncStore.open(tmp_path / "ioagent.db")
    try:
        retained = await reopened.load_retained()
    finally:
        await reopened.close()
    assert retained[TOPICS.offpeak][0] == "true"
    await agent.client.close()


def _car(state: str) -> Device:
    return Device(
        id="b7c1f2e0-uuid-1",
        provider="TESLA",
        device_type="ELECTRIC_VEHICLES",
        typename="SmartFlexVehicle",
        make="Tesla",
        model="Model 3",
        status_current="LIVE",
        current_state=state,
        is_suspended=False,
    )


@dataclass
class HeldPublisher(RecordingPublisher):
    """Records each publish when it is called (the order in which paho sends them), but holds
    the first one on ``hold_topic`` until released, as a slow broker would."""

    hold_topic: str = ""
    holding: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        await super().publish(topic, payload, retain=retain)
        if topic == self.hold_topic and not self.holding.is_set():
            self.holding.set()
            await self.release.wait()


async def test_a_device_publish_that_a_command_overtakes_mid_way_ends_with_the_newer_state() -> (
    None
):
    # Found by the broker-restart test: the first poll's publish was still under way (its first
    # topic sent, the rest waiting) when a command's re-read published the car's new state; the
    # poll then sent the rest of the older state after it.
    publisher = HeldPublisher(hold_topic=TOPICS.device_state)
    agent = offline_agent(publisher, None)
    agent.take_devices([_car("SMART_CONTROL_CAPABLE")])
    polls_publish = asyncio.create_task(agent.publish_device(NOW))
    await asyncio.wait_for(publisher.holding.wait(), timeout=5)
    agent.take_devices([_car("BOOSTING")])  # the command's re-read, newer
    commands_publish = asyncio.create_task(agent.publish_device(NOW))
    await asyncio.sleep(0.05)
    publisher.release.set()
    await asyncio.wait_for(asyncio.gather(polls_publish, commands_publish), timeout=5)
    await agent.client.close()
    assert publisher.values(TOPICS.device_state)[-1] == "BOOSTING"
    assert json.loads(publisher.values(TOPICS.device)[-1])["state"] == "BOOSTING"


async def test_a_poll_that_lands_after_a_boundary_publishes_the_state_after_it() -> None:
    # A poll read at 05:29:50 and applied at 05:30:01 evaluated the tariff at 05:29:50, and so
    # republished the night's "true" after the boundary timer had flipped it to "false".
    read_at = datetime(2026, 11, 24, 5, 29, 50, tzinfo=UTC)  # winter: London is UTC
    landed_at = read_at + timedelta(seconds=11)
    publisher = RecordingPublisher()
    agent = offline_agent(publisher, None, landed_at)
    await agent.apply(PollResult(devices=None, planned={}, completed=[]), read_at)
    await agent.client.close()
    assert publisher.values(TOPICS.offpeak) == ["false"]


@pytest.mark.parametrize(
    ("overtaken", "shown"), [(False, "SMART_CONTROL_CAPABLE"), (True, "BOOSTING")]
)
async def test_a_poll_overtaken_by_a_commands_re_read_does_not_publish_older_device_states(
    overtaken: bool, shown: str
) -> None:
    # Seen in a loaded soak run: a poll under way while a command changed the car published the
    # car's older state after the command's re-read had published the new one.
    publisher = RecordingPublisher()
    agent = offline_agent(publisher, None)
    agent.take_devices([_car("BOOSTING")])  # the command's re-read, newer
    await agent.publish_device(NOW)
    older = PollResult(devices=[_car("SMART_CONTROL_CAPABLE")], planned={}, completed=[])
    await agent.apply(older, NOW, devices_overtaken=overtaken)
    assert publisher.retained[TOPICS.device_state] == shown
    await agent.client.close()
