"""The ledger inside the daemon: real Mosquitto, the simulator over real sockets, real timers.

It backfills within its own budget, publishes the three retained topics, records the
published signal, and a slot that starts while a backfill is running still flips on time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ioagent.ledger.schedule import LEDGER_PER_MINUTE
from ioagent.ledger.windows import floor_half_hour, local_day_bounds
from ioagent.mqtt.homeassistant import discovery_topic
from ioagent.mqtt.topics import LEDGER_TOPICS
from ioagent.runtime.ledger_task import LedgerPace
from ioagent.simulator.ledger import ledger_settings, mpan_for
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_EV_ID
from ioagent.store.database import Store
from ioagent.store.ledger import HOME_SIGNAL, transitions_between
from tests.broker import Broker
from tests.clocks import real_time, suite_now
from tests.harness import running_daemon, watching
from tests.test_daemon import FLIP_LATENESS_LIMIT, peak_now_tariff

LONDON = ZoneInfo("Europe/London")
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def _calls(simulator: RunningSimulator, operation: str) -> int:
    return int(simulator.state.calls()["by_operation"].get(operation, 0))


def fast_ledger(start_delay: float = 0.2) -> LedgerPace:
    """The ledger's first fetch a moment after start, at up to 60 requests a minute."""
    return LedgerPace(start_delay=start_delay, per_minute=60)


def ledger_section(simulator: RunningSimulator, **options: object) -> dict[str, object]:
    """``[ledger]`` for the simulator's default account: its MPAN, 4 days, 60 calls an hour."""
    mpan = mpan_for(simulator.state, DEFAULT_ACCOUNT)
    return {"mpan": mpan, "backfill_days": 4, "calls_per_hour": 60, **options}


@pytest.mark.timeout(120)
async def test_backfill_publishes_the_ledger_and_records_the_signal(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    pace = fast_ledger()
    ledger = ledger_section(simulator)
    async with running_daemon(broker, simulator, tmp_path, ledger=ledger, ledger_pace=pace) as d:
        root = d.topics.root
        await d.watcher.wait_for(f"{root}/ledger/agreement", timeout=60)
        async with watching(broker, f"{root}/ledger/#") as late:
            agreement = await late.wait_for(f"{root}/ledger/agreement", timeout=5)
            assert agreement.retain  # a late subscriber gets it: retained
        payload = json.loads(agreement.payload)
        assert payload["days"] == 30
        # the signal is recorded from this start on: nothing settled can be compared yet
        assert payload["half_hours"] == 0
        assert payload["not_compared"]["no_signal"] > 0
        month = json.loads((await d.watcher.wait_for(f"{root}/ledger/month")).payload)
        now = suite_now()
        local = now.astimezone(LONDON)
        assert month["month"] == local.strftime("%Y-%m")
        first = local_day_bounds(local.date().replace(day=1))[0]
        settled = floor_half_hour(now - timedelta(days=2))
        # what is settled of this month so far (none in its first two days); a half-hour may
        # have been settled between the fetch and now
        expected = max(0, int((settled - first) / timedelta(minutes=30)))
        assert expected - 1 <= month["half_hours"] <= expected
        yesterday = json.loads((await d.watcher.wait_for(f"{root}/ledger/yesterday")).payload)
        assert yesterday["complete"] is True
        assert yesterday["total_gbp"] > 0
        assert d.watcher.last(d.topics.offpeak) in {"true", "false"}
    store = Store.open(tmp_path / "ioagent.db", read_only=True)
    try:
        recorded = transitions_between(store, DEFAULT_ACCOUNT, HOME_SIGNAL, *EVER)
    finally:
        store.close()
    assert recorded, "the published offpeak signal must be recorded for the ledger"
    assert recorded[-1][1] == (d.watcher.last(d.topics.offpeak) == "true")


@pytest.mark.timeout(120)
async def test_a_flip_is_on_time_while_a_backfill_runs(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    pace = LedgerPace(start_delay=0.2, per_minute=LEDGER_PER_MINUTE)  # the real 2 a minute
    # 30 days in 12-half-hour windows is 120 requests: at 2 a minute the backfill runs for
    # an hour, so it is certainly running when the slot below starts.
    ledger = ledger_section(simulator, backfill_days=30)
    tariff = {**peak_now_tariff(), "round_to_half_hour": False}
    async with running_daemon(
        broker, simulator, tmp_path, ledger=ledger, tariff=tariff, ledger_pace=pace
    ) as d:
        state = simulator.state
        start = suite_now().replace(microsecond=0) + timedelta(seconds=8)
        state.add_dispatch(state.device(DEFAULT_EV_ID), start, start + timedelta(seconds=4),
                           "SMART", 0.4)  # fmt: skip
        assert (await d.command("refresh", "now"))["status"] == "ok"
        on = await d.watcher.wait_for(d.topics.offpeak, lambda p: p == "true", timeout=20)
        lateness = on.at - real_time(start)
        assert 0 <= lateness < FLIP_LATENESS_LIMIT, f"flip {lateness:+.3f}s"
        asked = _calls(simulator, "account")
        assert 1 <= asked < 120, f"the backfill must be under way, not done: {asked} requests"


@pytest.mark.timeout(120)
async def test_without_a_configured_mpan_the_agreements_one_is_used(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    pace = fast_ledger(start_delay=0.5)
    ledger = {"backfill_days": 4, "calls_per_hour": 60}  # no [ledger] mpan
    async with running_daemon(broker, simulator, tmp_path, ledger=ledger, ledger_pace=pace) as d:
        root = d.topics.root
        tariff = json.loads((await d.watcher.wait_for(d.topics.tariff, timeout=30)).payload)
        assert tariff["source"] == "account", "the agreements were read"
        yesterday = await d.watcher.wait_for(f"{root}/ledger/yesterday", timeout=60)
    assert json.loads(yesterday.payload)["total_gbp"] > 0
    assert _calls(simulator, "account") >= 2, "agreements, then the measurements"


@pytest.mark.timeout(120)
async def test_an_unknown_label_is_reported_on_the_api_topic(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    pace = fast_ledger()
    settled = floor_half_hour(suite_now() - timedelta(days=3))
    ledger_settings(simulator.state).unknown_labels[(DEFAULT_ACCOUNT, settled)] = "HOME BONUS"
    ledger = ledger_section(simulator)
    async with running_daemon(broker, simulator, tmp_path, ledger=ledger, ledger_pace=pace) as d:
        seen = await d.watcher.wait_for(
            d.topics.api, lambda p: json.loads(p)["ledger"] != "ok", timeout=60
        )
        note = json.loads(seen.payload)["ledger"]
        assert "HOME BONUS" in note and "1 settled half-hour" in note, note
        assert json.loads(seen.payload)["state"] == "ok", "the plan's own health is untouched"


def _ledger_entities(payload: str) -> dict[str, str]:
    components = json.loads(payload)["components"] if payload else {}
    return {k: v["state_topic"] for k, v in components.items() if k.startswith("ledger_")}


@pytest.mark.timeout(150)
async def test_home_assistant_gets_a_ledger_entity_once_its_topic_is_published(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    pace = fast_ledger(start_delay=3.0)
    ledger = ledger_section(simulator)
    topic = discovery_topic("homeassistant", DEFAULT_ACCOUNT)
    async with running_daemon(broker, simulator, tmp_path, ledger=ledger, ledger_pace=pace) as d:
        first = await d.watcher.wait_for(topic, timeout=10)
        assert _ledger_entities(first.payload) == {}, "nothing is published on them yet"
        announced = await d.watcher.wait_for(
            topic, lambda p: len(_ledger_entities(p)) == 3, timeout=60
        )
        for name in LEDGER_TOPICS:
            published = [m for m in d.watcher.messages if m.topic == d.topics.ledger(name)]
            assert published, f"ledger/{name} announced but never published"
            assert published[0].at <= announced.at, f"ledger/{name} announced before published"
        assert set(_ledger_entities(announced.payload).values()) == {
            d.topics.ledger(name) for name in LEDGER_TOPICS
        }
        before = {name: d.watcher.last(d.topics.ledger(name)) or "" for name in LEDGER_TOPICS}
    # A restart with a broker that lost its retained messages: the stored ledger goes back on
    # MQTT at once, from the store (no fetch before START_DELAY), and HA keeps its entities.
    broker.restart()  # persistence is off: every retained message is gone
    pace = fast_ledger(start_delay=600.0)
    calls = _calls(simulator, "account")
    async with running_daemon(broker, simulator, tmp_path, ledger=ledger, ledger_pace=pace) as d:
        for name in LEDGER_TOPICS:
            seen = await d.watcher.wait_for(d.topics.ledger(name), timeout=10)
            now, then = json.loads(seen.payload), json.loads(before[name])
            assert now["half_hours"] == then["half_hours"], name  # the same stored rows
            assert now.get("total_gbp") == then.get("total_gbp"), name
        again = await d.watcher.wait_for(topic, timeout=10)
        assert len(_ledger_entities(again.payload)) == 3
    assert _calls(simulator, "account") - calls <= 1, "the agreements at most: no measurements"
    announced_again = [_ledger_entities(m.payload) for m in d.watcher.messages if m.topic == topic]
    assert announced_again and all(len(v) == 3 for v in announced_again), "never removed"
