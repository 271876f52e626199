"""ioagent against a real Home Assistant: what HA actually makes of the discovery and the topics.

One ioagent (account A-SIM00001, a plugged-in Tesla in the simulator) runs through most tests;
the later ones add a second instance (A-SIM00002) and restart ioagent and HA. Every control is
used through HA's own service calls, and the result is checked in the simulator.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from ioagent.mqtt.homeassistant import discovery_topic
from ioagent.mqtt.topics import NO_TIME, Topics
from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_EV_ID, SECOND_ACCOUNT
from ioagent.timeutil import parse_iso
from tests.broker import Broker
from tests.faults import retained_snapshot
from tests.harness import watching
from tests.real_ha.conftest import Ioagent, Simulator
from tests.real_ha.ha import HomeAssistant

pytestmark = pytest.mark.asyncio(loop_scope="session")

FIRST = Topics("ioagent", DEFAULT_ACCOUNT)
UNAVAILABLE = "unavailable"


# --- helpers -----------------------------------------------------------------------------------


async def announced(broker: Broker, account: str) -> dict[str, dict[str, Any]]:
    """The components of the account's retained discovery payload, removal stubs left out."""
    for _ in range(60):
        held = await retained_snapshot(broker)
        payload = held.get(discovery_topic("homeassistant", account))
        if payload and "target_soc" in payload:
            components: dict[str, dict[str, Any]] = json.loads(payload)["components"]
            return {key: c for key, c in components.items() if len(c) > 1}
        await asyncio.sleep(0.5)
    raise AssertionError(f"no discovery with the car for {account}")


def entity_id(component: dict[str, Any]) -> str:
    return str(component["default_entity_id"])


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def same_instant(payload: str) -> Callable[[str], bool]:
    if not payload or payload == NO_TIME:  # no such time: HA's unknown
        return lambda state: state == "unknown"
    # HA shows a timestamp sensor to the whole second (ioagent's last_success has microseconds).
    expected = instant(payload).replace(microsecond=0)
    return lambda state: state not in ("unknown", UNAVAILABLE) and instant(state) == expected


def number(value: float) -> Callable[[str], bool]:
    return lambda state: state not in ("unknown", UNAVAILABLE) and float(state) == value


def equals(value: str) -> Callable[[str], bool]:
    return lambda state: state == value


def not_unavailable(state: str) -> bool:
    return state != UNAVAILABLE


def expected_states(held: dict[str, str], t: Topics) -> dict[str, Callable[[str], bool]]:
    """What HA must show for each component key, from the retained topics ioagent published."""
    on_off = {"true": "on", "false": "off"}
    transitions = json.loads(held[t.transitions])
    return {
        "offpeak": equals(on_off[held[t.offpeak]]),
        "dispatching": equals(on_off[held[t.dispatching]]),
        "next_offpeak_start": same_instant(held[t.next_offpeak_start]),
        "offpeak_end": same_instant(held[t.offpeak_end]),
        "next_dispatch_start": same_instant(held[t.next_dispatch_start]),
        "next_dispatch_end": same_instant(held[t.next_dispatch_end]),
        "next_change": same_instant(transitions[0]["at"] if transitions else ""),
        "planned_kwh": number(float(held[t.planned_kwh])),
        "planned_dispatches": number(len(json.loads(held[t.planned]))),
        "completed_dispatches": number(len(json.loads(held[t.completed]))),
        "api": equals(json.loads(held[t.api])["state"]),
        "api_last_success": same_instant(json.loads(held[t.api])["last_success"]),
        "device_state": equals(held[t.device_state].lower()),
        "target_soc": number(float(held[t.target_soc])),
        "ready_by": equals(held[t.ready_by]),
        "smart_control": equals(held[t.smart_control]),
        "boost": equals(held[t.boost]),
        "target_soc_reading": number(float(held[t.target_soc])),
        "ready_by_reading": equals(held[t.ready_by]),
        "smart_control_reading": equals(held[t.smart_control]),
        "boost_reading": equals(held[t.boost]),
        # Never pressed or fired yet: HA's unknown, but available.
        "refresh": not_unavailable,
        "resync": not_unavailable,
        "command_result": not_unavailable,
        "plan_event": not_unavailable,
        # The account's product (the tariff work): HA shows the rates in GBP/kWh (pence / 100).
        "ev_offpeak": equals(on_off[held[t.ev_offpeak]]),
        "offpeak_confidence": equals(held[t.offpeak_confidence]),
        "product": equals(json.loads(held[t.tariff])["product"]),
        "rate_home": gbp_per_kwh(held.get(t.rate_home, "")),
        "rate_ev": gbp_per_kwh(held.get(t.rate_ev, "")),
        "allowance_remaining": number(float(held.get(t.allowance_remaining) or "nan")),
        # The settlement ledger: announced once each topic has a payload (docs/ledger.md).
        "ledger_yesterday": ledger_number(held.get(t.ledger("yesterday")), "total_gbp"),
        "ledger_month": ledger_number(held.get(t.ledger("month")), "total_gbp"),
        "ledger_agreement": ledger_number(held.get(t.ledger("agreement")), "ratio", 100),
    }


def ledger_number(payload: str | None, key: str, scale: float = 1) -> Callable[[str], bool]:
    """A ledger payload's number as HA shows it; unknown while it is null."""
    value = json.loads(payload)[key] if payload else None
    if value is None:
        return equals("unknown")
    return number(round(value * scale, 1) if scale != 1 else value)


def gbp_per_kwh(pence: str) -> Callable[[str], bool]:
    """A rate topic in pence per kWh, as HA shows it in GBP/kWh; unknown while empty."""
    if not pence:
        return equals("unknown")
    return lambda state: (
        state not in ("unknown", UNAVAILABLE) and abs(float(state) - float(pence) / 100) < 1e-6
    )


async def mismatches(
    ha: HomeAssistant, broker: Broker, components: dict[str, dict[str, Any]], t: Topics
) -> list[str]:
    """Entities whose HA state does not match what the broker holds right now."""
    held = await retained_snapshot(broker)
    expected = expected_states(held, t)
    states = await ha.states()
    wrong = []
    for key, component in components.items():
        state = states.get(entity_id(component))
        if state is None or not expected[key](state["state"]):
            topics = {v for k, v in component.items() if k.endswith("state_topic")}
            shown = {topic: held.get(topic) for topic in topics}
            wrong.append(f"{key}={state['state'] if state else None} (topics: {shown})")
    return wrong


async def wait_states_match(
    ha: HomeAssistant, broker: Broker, components: dict[str, dict[str, Any]], t: Topics = FIRST
) -> None:
    """Until every entity shows what its topic holds (a poll may change both meanwhile)."""
    wrong: list[str] = []
    for _ in range(60):
        wrong = await mismatches(ha, broker, components, t)
        if not wrong:
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"HA shows other states than the topics: {wrong}")


async def wait_all_available(ha: HomeAssistant, components: dict[str, dict[str, Any]]) -> None:
    for component in components.values():
        await ha.wait_state(
            entity_id(component),
            lambda s: s["state"] != UNAVAILABLE,
            timeout=60,
            what="available",
        )


async def device_in_sim(sim: Simulator, device_id: str = DEFAULT_EV_ID) -> dict[str, Any]:
    state = await sim.control.state()
    return next(d for d in state["devices"] if d["id"] == device_id)


async def until(check: Callable[[], Any], *, timeout: float = 30.0, what: str) -> None:
    """Poll an async ``check`` until it returns true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


async def operation_count(sim: Simulator, operation: str) -> int:
    calls = await sim.control.calls()
    return int(calls["by_operation"].get(operation, 0))


@pytest_asyncio.fixture(loop_scope="session")
async def first(
    ioagents: dict[str, Ioagent], ha: HomeAssistant, ha_broker: Broker
) -> dict[str, dict[str, Any]]:
    """The first ioagent running, and its announced components all available in HA."""
    agent = ioagents[DEFAULT_ACCOUNT]
    if agent.process is None:
        await agent.start()
    components = await announced(ha_broker, DEFAULT_ACCOUNT)
    await wait_all_available(ha, components)
    return components


# --- tests ---------------------------------------------------------------------------------------


async def test_every_announced_entity_exists_with_its_state_and_classes(
    first: dict[str, dict[str, Any]], ha: HomeAssistant, ha_broker: Broker
) -> None:
    held = await retained_snapshot(ha_broker)
    assert set(first) <= set(expected_states(held, FIRST)), "every entity has an expected state"
    await wait_states_match(ha, ha_broker, first)
    registry = await ha.entity_registry()
    states = await ha.states()
    for key, component in first.items():
        entity = entity_id(component)
        state = states[entity]
        attributes = state["attributes"]
        for option in ("device_class", "unit_of_measurement", "state_class"):
            assert attributes.get(option) == component.get(option), f"{key}: {option}"
        if component.get("platform") == "sensor" and component.get("device_class") == "enum":
            assert attributes["options"] == component["options"], key
        name = attributes["friendly_name"]
        assert name == f"Intelligent Octopus {DEFAULT_ACCOUNT} {component['name']}", key
        assert "charger" not in name.lower() and "dispatch" not in name.lower(), name
        entry = registry[entity]
        assert entry["platform"] == "mqtt", key
        assert entry["unique_id"] == component["unique_id"], key
        assert entry["entity_category"] == component.get("entity_category"), key
    # The refresh button is a control: not hidden under diagnostics.
    assert registry[entity_id(first["refresh"])]["entity_category"] is None
    assert registry[entity_id(first["api"])]["entity_category"] == "diagnostic"
    planned = await ha.state(entity_id(first["planned_dispatches"]))
    assert planned is not None
    assert planned["attributes"]["dispatches"] == json.loads(held[FIRST.planned])
    car = await ha.state(entity_id(first["device_state"]))
    assert car is not None and car["attributes"]["octopus_state"] == held[FIRST.device_state]


async def test_ha_logs_no_warning_about_ioagents_discovery(
    first: dict[str, dict[str, Any]], ha: HomeAssistant
) -> None:
    problems = [
        line
        for line in ha.log_lines("WARNING", "ERROR")
        if "homeassistant.components.mqtt" in line or "ioagent" in line
    ]
    assert problems == []


async def test_the_ledger_entities_show_the_settled_costs(
    first: dict[str, dict[str, Any]], ha: HomeAssistant, ha_broker: Broker
) -> None:
    # The ledger's first fetch starts a minute after ioagent starts and publishes day by day
    # (2 requests a minute); each entity is announced once its topic has a payload. The month
    # and the agreement come with the first day; "last day" only when the backfill is done,
    # minutes later, so it is checked only if it is there by then.
    ledger: dict[str, dict[str, Any]] = {}
    for _ in range(480):
        components = await announced(ha_broker, DEFAULT_ACCOUNT)
        ledger = {k: c for k, c in components.items() if k.startswith("ledger_")}
        if {"ledger_month", "ledger_agreement"} <= set(ledger):
            break
        await asyncio.sleep(0.5)
    assert {"ledger_month", "ledger_agreement"} <= set(ledger), sorted(ledger)
    await wait_all_available(ha, ledger)
    await wait_states_match(ha, ha_broker, ledger)
    held = await retained_snapshot(ha_broker)
    for key in ("ledger_yesterday", "ledger_month"):
        if key not in ledger:
            continue
        state = await ha.state(entity_id(ledger[key]))
        assert state is not None
        attributes = state["attributes"]
        assert (attributes["device_class"], attributes["state_class"]) == ("monetary", "total")
        assert attributes["unit_of_measurement"] == "GBP"
        # HA's Energy dashboard reads a total's cycle from last_reset: the day's or month's start
        payload = json.loads(held[ledger[key]["state_topic"]])
        assert parse_iso(attributes["last_reset"]) == parse_iso(payload["start"]), key
    registry = await ha.entity_registry()
    assert registry[entity_id(ledger["ledger_agreement"])]["entity_category"] == "diagnostic"


async def test_each_control_changes_the_simulator(
    first: dict[str, dict[str, Any]], ha: HomeAssistant, sim: Simulator
) -> None:
    target, ready_by = entity_id(first["target_soc"]), entity_id(first["ready_by"])
    smart, boost = entity_id(first["smart_control"]), entity_id(first["boost"])

    async def schedules() -> list[dict[str, Any]]:
        device = await device_in_sim(sim)
        result: list[dict[str, Any]] = device["preferences"]["schedules"]
        return result

    await ha.call("number", "set_value", entity_id=target, value=65)
    await until(lambda: _all(schedules(), lambda s: s["max"] == 65), what="target 65 %")
    await ha.wait_state(target, lambda s: s["state"] in ("65", "65.0"), what="HA shows 65")

    await ha.call("select", "select_option", entity_id=ready_by, option="05:30")
    await until(lambda: _all(schedules(), lambda s: s["time"] == "05:30:00"), what="05:30")
    await ha.wait_state(ready_by, lambda s: s["state"] == "05:30", what="HA shows 05:30")

    await ha.call("switch", "turn_off", entity_id=smart)
    await until(lambda: _device(sim, lambda d: d["is_suspended"]), what="suspended")
    await ha.wait_state(smart, lambda s: s["state"] == "off", what="smart charging off")
    await ha.call("switch", "turn_on", entity_id=smart)
    await until(lambda: _device(sim, lambda d: not d["is_suspended"]), what="resumed")
    await ha.wait_state(smart, lambda s: s["state"] == "on", what="smart charging on")

    def boosting(device: dict[str, Any]) -> bool:
        return any(item["type"] == "BOOST" for item in device["planned"])

    await ha.call("switch", "turn_on", entity_id=boost)
    await until(lambda: _device(sim, boosting), what="a boost in the plan")
    await ha.wait_state(boost, lambda s: s["state"] == "on", what="boost on")
    await ha.call("switch", "turn_off", entity_id=boost)
    await until(lambda: _device(sim, lambda d: not boosting(d)), what="boost cancelled")
    await ha.wait_state(boost, lambda s: s["state"] == "off", what="boost off")

    polls = await operation_count(sim, "flexPlannedDispatches")
    await ha.call("button", "press", entity_id=entity_id(first["refresh"]))

    async def polled_again() -> bool:
        return await operation_count(sim, "flexPlannedDispatches") > polls

    await until(polled_again, what="a poll after Refresh")

    toggles = await operation_count(sim, "updateDeviceSmartControl")
    await ha.call("button", "press", entity_id=entity_id(first["resync"]))

    async def suspended_and_resumed() -> bool:
        return await operation_count(sim, "updateDeviceSmartControl") >= toggles + 2

    await until(suspended_and_resumed, what="resync: suspend, then resume")
    await until(lambda: _device(sim, lambda d: not d["is_suspended"]), what="resumed")


async def _all(items: Any, predicate: Callable[[Any], bool]) -> bool:
    values = await items
    return bool(values) and all(predicate(value) for value in values)


async def _device(sim: Simulator, predicate: Callable[[dict[str, Any]], bool]) -> bool:
    return predicate(await device_in_sim(sim))


async def test_a_refused_command_shows_in_the_command_result_event(
    first: dict[str, dict[str, Any]], ha: HomeAssistant
) -> None:
    events = entity_id(first["command_result"])
    before = await ha.state(events)
    assert before is not None
    # What an automation may well send: HA checks the range, not the 5 % step; ioagent refuses.
    await ha.call("number", "set_value", entity_id=entity_id(first["target_soc"]), value=62.5)
    fired = await ha.wait_state(
        events,
        lambda s: s["state"] != before["state"] and s["attributes"].get("event_type") == "error",
        what="an error event",
    )
    assert fired["attributes"]["command"] == "target_soc"
    assert fired["attributes"]["error"], "the refusal says why"
    assert fired["attributes"]["event_types"] == ["ok", "error"]
    await ha.call("select", "select_option", entity_id=entity_id(first["ready_by"]), option="06:00")
    ok = await ha.wait_state(
        events, lambda s: s["attributes"].get("event_type") == "ok", what="an ok event"
    )
    assert ok["attributes"]["command"] == "ready_by"
    assert ok["attributes"]["error"] is None


async def test_plan_changes_show_in_the_charge_slot_event(
    first: dict[str, dict[str, Any]], ha: HomeAssistant, sim: Simulator
) -> None:
    events = entity_id(first["plan_event"])
    # Well after any boost of the earlier tests, at an odd minute, so it is a new slot.
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=5, minutes=7)
    await sim.control.add_dispatch(
        DEFAULT_EV_ID, start, start + timedelta(minutes=40), type="SMART", kwh=3.2
    )
    # From HA's state_changed events: the same poll can also report a slot that an earlier
    # test's command made the simulator drop, and that later event replaces this one as the
    # entity's state (a run at 07:11 saw only slot_removed).
    fired = await ha.state_after(
        events,
        lambda s: (
            s["attributes"].get("event_type") == "slot_added"
            and instant(s["attributes"]["slot"]["start"]) == start
        ),
        lambda: ha.call("button", "press", entity_id=entity_id(first["refresh"])),
        timeout=60,
        what="slot_added",
    )
    assert fired["attributes"]["previous"] is None
    assert fired["attributes"]["event_types"] == ["slot_added", "slot_removed", "slot_changed"]


async def test_api_status_is_not_rewritten_on_every_poll(
    first: dict[str, dict[str, Any]], ha: HomeAssistant, sim: Simulator
) -> None:
    api, success = entity_id(first["api"]), entity_id(first["api_last_success"])
    before = await ha.state(api)
    last_success = await ha.state(success)
    assert before is not None and last_success is not None
    await asyncio.sleep(1.1)  # last_success has whole seconds
    await ha.call("button", "press", entity_id=entity_id(first["refresh"]))
    await ha.wait_state(
        success, lambda s: s["state"] != last_success["state"], timeout=60, what="a new poll"
    )
    after = await ha.state(api)
    assert after is not None
    assert after["state"] == "ok"
    assert after["last_updated"] == before["last_updated"], "no new state row for a plain poll"
    assert "stale_seconds" not in after["attributes"]
    assert "last_success" not in after["attributes"]


async def test_two_instances_one_dies_the_other_stays_available(
    first: dict[str, dict[str, Any]],
    ha: HomeAssistant,
    ha_broker: Broker,
    ioagents: dict[str, Ioagent],
) -> None:
    second_agent = ioagents[SECOND_ACCOUNT]
    await second_agent.start()
    second = await announced_any(ha_broker, SECOND_ACCOUNT)
    await wait_all_available(ha, second)
    first_agent = ioagents[DEFAULT_ACCOUNT]
    await first_agent.stop(signal.SIGKILL)  # only the broker's last will speaks
    for component in first.values():
        await ha.wait_state(
            entity_id(component), lambda s: s["state"] == UNAVAILABLE, what="unavailable"
        )
    await asyncio.sleep(2.0)
    for key, component in second.items():
        state = await ha.state(entity_id(component))
        assert state is not None and state["state"] != UNAVAILABLE, key
    await first_agent.start()
    await wait_all_available(ha, first)
    await second_agent.stop(signal.SIGTERM)
    for component in second.values():
        await ha.wait_state(
            entity_id(component), lambda s: s["state"] == UNAVAILABLE, what="unavailable"
        )
    for key, component in first.items():
        state = await ha.state(entity_id(component))
        assert state is not None and state["state"] != UNAVAILABLE, key


async def announced_any(broker: Broker, account: str) -> dict[str, dict[str, Any]]:
    """Like :func:`announced`, for an account whose device is a charger (no car check)."""
    for _ in range(60):
        held = await retained_snapshot(broker)
        payload = held.get(discovery_topic("homeassistant", account))
        if payload and "device_state" in payload:
            components: dict[str, dict[str, Any]] = json.loads(payload)["components"]
            return {key: c for key, c in components.items() if len(c) > 1}
        await asyncio.sleep(0.5)
    raise AssertionError(f"no discovery with a device for {account}")


async def test_an_ioagent_restart(
    first: dict[str, dict[str, Any]],
    ha: HomeAssistant,
    ha_broker: Broker,
    ioagents: dict[str, Ioagent],
) -> None:
    agent = ioagents[DEFAULT_ACCOUNT]
    assert await agent.stop(signal.SIGTERM) == 0
    for component in first.values():
        await ha.wait_state(
            entity_id(component), lambda s: s["state"] == UNAVAILABLE, what="unavailable"
        )
    await agent.start()
    await wait_all_available(ha, first)
    await wait_states_match(ha, ha_broker, first)


async def test_a_home_assistant_restart(
    first: dict[str, dict[str, Any]], ha: HomeAssistant, ha_broker: Broker
) -> None:
    topic = discovery_topic("homeassistant", DEFAULT_ACCOUNT)
    async with watching(ha_broker, topic) as watcher:
        await watcher.wait_for(topic, bool, timeout=10)  # the retained copy
        mark = len(watcher.messages)
        await ha.stop(signal.SIGTERM)
        await ha.start()
        # HA's birth message makes ioagent announce again (a live, not a retained, message).
        again = await watcher.wait_for(topic, bool, after=mark, timeout=60)
        assert not again.retain
    await wait_all_available(ha, first)
    await wait_states_match(ha, ha_broker, first)


async def test_read_only_mode_swaps_the_controls_for_sensors(
    first: dict[str, dict[str, Any]],
    ha: HomeAssistant,
    ha_broker: Broker,
    ioagents: dict[str, Ioagent],
) -> None:
    agent = ioagents[DEFAULT_ACCOUNT]
    normal = agent.config.read_text()
    try:
        await agent.stop(signal.SIGTERM)
        agent.config.write_text(normal.replace("[mqtt]\n", "[mqtt]\nread_only = true\n"))
        await agent.start()
        controls = {
            key: c
            for key, c in first.items()
            if c["platform"] in ("number", "select", "switch", "button") or key == "command_result"
        }
        assert len(controls) == 7
        for key, component in controls.items():
            await until(
                lambda c=component: _gone(ha, entity_id(c)), timeout=60, what=f"{key} removed"
            )
        readings = {
            key: c
            for key, c in (await announced_read_only(ha_broker)).items()
            if key.endswith("_reading")
        }
        assert set(readings) == {
            "target_soc_reading",
            "ready_by_reading",
            "smart_control_reading",
            "boost_reading",
        }
        await wait_all_available(ha, readings)
        await wait_states_match(ha, ha_broker, readings)
        registry = await ha.entity_registry()
        for key, component in controls.items():
            assert entity_id(component) not in registry, f"{key} left in the registry"
    finally:
        await agent.ensure_dead()
        agent.config.write_text(normal)
        await agent.start()
    await wait_all_available(ha, first)


async def _gone(ha: HomeAssistant, entity: str) -> bool:
    return await ha.state(entity) is None


async def announced_read_only(broker: Broker) -> dict[str, dict[str, Any]]:
    for _ in range(60):
        held = await retained_snapshot(broker)
        payload = held.get(discovery_topic("homeassistant", DEFAULT_ACCOUNT))
        if payload and "target_soc_reading" in payload:
            components: dict[str, dict[str, Any]] = json.loads(payload)["components"]
            return {key: c for key, c in components.items() if len(c) > 1}
        await asyncio.sleep(0.5)
    raise AssertionError("no read-only discovery")


async def test_ha_logged_no_warning_about_ioagent_in_the_whole_run(
    first: dict[str, dict[str, Any]], ha: HomeAssistant
) -> None:
    await test_ha_logs_no_warning_about_ioagents_discovery(first, ha)
