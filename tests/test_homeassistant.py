"""Home Assistant discovery payloads: shape, ids, and that they name only contract topics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ioagent.config import HomeAssistantSettings
from ioagent.kraken.types import DEVICE_STATES as API_DEVICE_STATES
from ioagent.kraken.types import Device
from ioagent.mqtt.homeassistant import (
    API_ATTRIBUTES,
    DEVICE_STATES,
    HA_STATUS_TOPIC,
    PLAN_EVENTS,
    READY_BY_OPTIONS,
    REPLY_STATUSES,
    account_slug,
    component_removal,
    device_model,
    discovery_messages,
    discovery_topic,
    ha_status_topic,
    referenced_topics,
    removal_messages,
)
from ioagent.mqtt.topics import COMMANDS, LEDGER_TOPICS, Topics

ACCOUNT = "A-1234ABCD"
TOPICS = Topics("ioagent", ACCOUNT)
SETTINGS = HomeAssistantSettings()
DEVICE_COMMANDS = ("target_soc", "ready_by", "smart_control", "boost", "resync")
OBJECT_ID = re.compile(r"[a-zA-Z0-9_-]+")
ENTITY_ID = re.compile(r"[a-z_]+\.[a-z0-9_]+")


def ev(
    device_id: str = "b7c1f2e0-uuid-1", *, make: str | None = "Tesla", live: bool = True
) -> Device:
    return Device(
        id=device_id,
        provider="TESLA",
        device_type="ELECTRIC_VEHICLES",
        typename="SmartFlexVehicle",
        make=make,
        model="Model 3",
        status_current="LIVE" if live else "RETIRED",
        current_state="SMART_CONTROL_CAPABLE",
        is_suspended=False,
    )


def build(
    *,
    topics: Topics = TOPICS,
    account: str = ACCOUNT,
    devices: tuple[Device, ...] = (ev(),),
    settings: HomeAssistantSettings = SETTINGS,
    read_only: bool = False,
    ledger: tuple[str, ...] = (),
) -> dict[str, str]:
    return discovery_messages(
        topics,
        account=account,
        devices=devices,
        settings=settings,
        sw_version="1.2.3",
        read_only=read_only,
        ledger=ledger,
    )


def only_payload(messages: dict[str, str]) -> dict[str, Any]:
    assert len(messages) == 1
    payload: dict[str, Any] = json.loads(next(iter(messages.values())))
    return payload


def components(messages: dict[str, str]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = only_payload(messages)["components"]
    return result


def contract_state_topics(topics: Topics) -> set[str]:
    return {
        getattr(topics, name) for name, attr in vars(Topics).items() if isinstance(attr, property)
    }


def contract_command_topics(topics: Topics) -> set[str]:
    return {topics.command(name) for name in DEVICE_COMMANDS} | {topics.refresh}


def test_one_retained_device_payload_on_the_device_discovery_topic() -> None:
    messages = build()
    assert list(messages) == ["homeassistant/device/ioagent_a_1234abcd/config"]
    assert isinstance(only_payload(messages), dict)


def test_device_and_origin_blocks() -> None:
    payload = only_payload(build())
    device = payload["device"]
    assert device["identifiers"] == ["ioagent_a_1234abcd"]
    assert ACCOUNT in device["name"]
    assert device["manufacturer"]
    assert "Tesla Model 3" in device["model"]
    assert device["sw_version"] == "1.2.3"
    assert payload["origin"]["name"] == "ioagent"
    assert payload["origin"]["sw_version"] == "1.2.3"
    assert "support_url" not in payload["origin"]


def test_support_url_is_passed_through() -> None:
    messages = discovery_messages(
        TOPICS,
        account=ACCOUNT,
        devices=(),
        settings=SETTINGS,
        sw_version="1",
        support_url="https://example.org/ioagent",
    )
    assert only_payload(messages)["origin"]["support_url"] == "https://example.org/ioagent"


@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize("devices", [(), (ev(),)])
def test_every_component_has_platform_unique_id_and_entity_id(
    read_only: bool, devices: tuple[Device, ...]
) -> None:
    found = components(build(devices=devices, read_only=read_only))
    unique_ids = [config["unique_id"] for config in found.values()]
    assert len(unique_ids) == len(set(unique_ids))
    for key, config in found.items():
        assert OBJECT_ID.fullmatch(key)
        assert config["platform"]
        assert config["unique_id"].startswith("ioagent_a_1234abcd_")
        entity_id = config["default_entity_id"]
        assert ENTITY_ID.fullmatch(entity_id)
        assert entity_id == f"{config['platform']}.{config['unique_id']}"
        assert config["name"]


def test_availability_follows_the_daemon_status_topic() -> None:
    payload = only_payload(build())
    assert payload["availability"] == [
        {
            "topic": "ioagent/A-1234ABCD/status",
            "payload_available": "online",
            "payload_not_available": "offline",
        }
    ]


def test_unique_ids_survive_a_device_uuid_change() -> None:
    before = build(devices=(ev("11111111-aaaa"),))
    after = build(devices=(ev("22222222-bbbb"),))
    assert before == after
    assert "11111111-aaaa" not in next(iter(before.values()))


def test_unique_ids_survive_a_new_car() -> None:
    before = components(build(devices=(ev(make="Tesla"),)))
    after = components(build(devices=(ev(make="Polestar"),)))
    assert {k: c["unique_id"] for k, c in before.items()} == {
        k: c["unique_id"] for k, c in after.items()
    }


def test_two_accounts_never_share_ids_or_topics() -> None:
    first = build()
    second = build(topics=Topics("ioagent", "A-99999999"), account="A-99999999")
    assert set(first).isdisjoint(second)
    first_ids = {c["unique_id"] for c in components(first).values()}
    second_ids = {c["unique_id"] for c in components(second).values()}
    assert first_ids.isdisjoint(second_ids)
    assert (
        only_payload(first)["device"]["identifiers"]
        != only_payload(second)["device"]["identifiers"]
    )


@pytest.mark.parametrize(
    ("account", "slug"),
    [
        ("A-1234ABCD", "a_1234abcd"),
        ("a-1234abcd", "a_1234abcd"),
        ("A/12+34#", "a_12_34"),
        ("  A 1 ", "a_1"),
        ("Ä-1é", "1"),
    ],
)
def test_account_slug(account: str, slug: str) -> None:
    assert account_slug(account) == slug


@pytest.mark.parametrize("account", ["", "---", "+/#", "ÄÖ"])
def test_account_without_letters_or_digits_is_refused(account: str) -> None:
    with pytest.raises(ValueError):
        account_slug(account)


@given(st.text(min_size=1, max_size=30).filter(lambda text: re.search(r"[a-zA-Z0-9]", text)))
def test_any_account_gives_valid_ids(account: str) -> None:
    topic = discovery_topic("homeassistant", account)
    prefix, platform, object_id, config = topic.split("/")
    assert (prefix, platform, config) == ("homeassistant", "device", "config")
    assert OBJECT_ID.fullmatch(object_id)
    found = components(build(topics=Topics("ioagent", "X"), account=account))
    for key, entity in found.items():
        assert ENTITY_ID.fullmatch(entity["default_entity_id"]), key


@pytest.mark.parametrize("read_only", [False, True])
def test_state_topics_are_contract_topics(read_only: bool) -> None:
    reads, _ = referenced_topics(build(read_only=read_only))
    assert reads <= contract_state_topics(TOPICS)
    assert TOPICS.status in reads


def test_command_topics_are_exactly_the_daemon_commands() -> None:
    _, writes = referenced_topics(build())
    assert writes == contract_command_topics(TOPICS)
    assert set(DEVICE_COMMANDS) <= set(COMMANDS)


def test_read_only_publishes_no_controls() -> None:
    messages = build(read_only=True)
    _, writes = referenced_topics(messages)
    assert writes == set()
    platforms = {c["platform"] for c in components(messages).values()}
    assert platforms.isdisjoint({"number", "select", "switch", "button"})
    reads, _ = referenced_topics(messages)
    assert {TOPICS.target_soc, TOPICS.ready_by, TOPICS.smart_control, TOPICS.boost} <= reads


def test_without_a_device_only_account_entities_appear() -> None:
    found = components(build(devices=()))
    reads, writes = referenced_topics(build(devices=()))
    assert writes == {TOPICS.refresh}
    assert TOPICS.device_state not in reads
    assert {"offpeak", "dispatching", "planned_kwh", "api", "refresh", "plan_event"} <= set(found)


def test_custom_prefix_and_base_topic() -> None:
    topics = Topics("house/octopus", ACCOUNT)
    messages = build(topics=topics, settings=HomeAssistantSettings(prefix="ha/"))
    assert list(messages) == ["ha/device/ioagent_a_1234abcd/config"]
    reads, writes = referenced_topics(messages)
    assert all(topic.startswith("house/octopus/") for topic in reads | writes)
    assert reads <= contract_state_topics(topics)
    assert writes == contract_command_topics(topics)


ENTITY_TABLE: list[tuple[str, str, str, dict[str, Any]]] = [
    ("offpeak", "binary_sensor", TOPICS.offpeak, {"payload_on": "true", "payload_off": "false"}),
    (
        "dispatching",
        "binary_sensor",
        TOPICS.dispatching,
        {"payload_on": "true", "payload_off": "false"},
    ),
    ("next_offpeak_start", "sensor", TOPICS.next_offpeak_start, {"device_class": "timestamp"}),
    ("offpeak_end", "sensor", TOPICS.offpeak_end, {"device_class": "timestamp"}),
    ("next_dispatch_start", "sensor", TOPICS.next_dispatch_start, {"device_class": "timestamp"}),
    ("next_dispatch_end", "sensor", TOPICS.next_dispatch_end, {"device_class": "timestamp"}),
    (
        "next_change",
        "sensor",
        TOPICS.transitions,
        {"device_class": "timestamp", "json_attributes_topic": TOPICS.transitions},
    ),
    (
        "completed_dispatches",
        "sensor",
        TOPICS.completed,
        {"json_attributes_topic": TOPICS.completed, "state_class": "measurement"},
    ),
    (
        "planned_kwh",
        "sensor",
        TOPICS.planned_kwh,
        {"device_class": "energy", "unit_of_measurement": "kWh"},
    ),
    (
        "planned_dispatches",
        "sensor",
        TOPICS.planned,
        {"json_attributes_topic": TOPICS.planned},
    ),
    (
        "api",
        "sensor",
        TOPICS.api,
        {
            "entity_category": "diagnostic",
            "json_attributes_topic": TOPICS.api,
            "device_class": "enum",
        },
    ),
    ("device_state", "sensor", TOPICS.device_state, {"device_class": "enum"}),
    (
        "target_soc",
        "number",
        TOPICS.target_soc,
        {"command_topic": TOPICS.command("target_soc"), "min": 10, "max": 100, "step": 5},
    ),
    ("ready_by", "select", TOPICS.ready_by, {"command_topic": TOPICS.command("ready_by")}),
    (
        "smart_control",
        "switch",
        TOPICS.smart_control,
        {
            "command_topic": TOPICS.command("smart_control"),
            "payload_on": "on",
            "payload_off": "off",
        },
    ),
    (
        "boost",
        "switch",
        TOPICS.boost,
        {"command_topic": TOPICS.command("boost"), "payload_on": "on", "payload_off": "off"},
    ),
]


@pytest.mark.parametrize(("key", "platform", "state_topic", "expected"), ENTITY_TABLE)
def test_entity(key: str, platform: str, state_topic: str, expected: dict[str, Any]) -> None:
    config = components(build())[key]
    assert config["platform"] == platform
    assert config["state_topic"] == state_topic
    for option, value in expected.items():
        assert config[option] == value, option


def test_refresh_button() -> None:
    config = components(build())["refresh"]
    assert config["platform"] == "button"
    assert config["command_topic"] == "ioagent/A-1234ABCD/refresh"
    assert "state_topic" not in config
    assert "entity_category" not in config, "a control, not hidden under diagnostics"


def test_resync_button_is_a_device_control() -> None:
    config = components(build())["resync"]
    assert config["platform"] == "button"
    assert config["command_topic"] == "ioagent/A-1234ABCD/set/resync"
    assert "entity_category" not in config
    assert "resync" not in components(build(devices=()))
    assert "resync" not in components(build(read_only=True))


def test_command_results_are_an_event_entity_on_the_reply_topic() -> None:
    config = components(build())["command_result"]
    assert config["platform"] == "event"
    assert config["state_topic"] == TOPICS.response
    assert config["event_types"] == list(REPLY_STATUSES) == ["ok", "error"]
    template = config["value_template"]
    assert "'event_type': value_json.status" in template
    assert "value_json.error" in template and "value_json.command" in template
    assert "command_result" not in components(build(read_only=True)), "no commands, no replies"


def test_plan_events_are_an_event_entity_on_the_events_topic() -> None:
    config = components(build(devices=()))["plan_event"]
    assert config["platform"] == "event"
    assert config["state_topic"] == TOPICS.events
    assert config["event_types"] == list(PLAN_EVENTS)
    assert "'event_type': value_json.event" in config["value_template"]


def test_plan_event_types_are_every_kind_the_plan_diff_makes() -> None:
    assert PLAN_EVENTS == ("slot_added", "slot_removed", "slot_changed")


def test_api_attributes_leave_out_what_changes_on_every_poll() -> None:
    template = components(build())["api"]["json_attributes_template"]
    assert set(API_ATTRIBUTES) == {"last_error", "last_error_at", "storage"}
    for name in API_ATTRIBUTES:
        assert f"value_json.{name}" in template
    assert "last_success" not in template and "stale_seconds" not in template


@pytest.mark.parametrize(
    ("key", "device_class"),
    [("dispatching", "running"), ("target_soc", "battery"), ("planned_kwh", "energy")],
)
def test_device_classes(key: str, device_class: str) -> None:
    assert components(build())[key]["device_class"] == device_class


@pytest.mark.parametrize(
    ("key", "device_class", "state_class"),
    [
        ("target_soc_reading", "battery", "measurement"),
        ("boost_reading", "running", None),
        ("planned_dispatches", None, "measurement"),
        ("completed_dispatches", None, "measurement"),
    ],
)
def test_read_only_classes(key: str, device_class: str | None, state_class: str | None) -> None:
    config = components(build(read_only=True))[key]
    assert config.get("device_class") == device_class
    assert config.get("state_class") == state_class


def test_no_entity_name_calls_the_car_a_charger_or_a_slot_a_dispatch() -> None:
    for read_only in (False, True):
        for config in components(build(read_only=read_only)).values():
            assert "charger" not in config["name"].lower(), config["name"]
            assert "dispatch" not in config["name"].lower(), config["name"]


def test_planned_energy_has_no_meter_state_class() -> None:
    # total/total_increasing would make HA sum the ups and downs of a plan as consumption.
    assert "state_class" not in components(build())["planned_kwh"]


def test_timestamp_sensors_turn_an_empty_payload_into_none() -> None:
    timestamps = [c for c in components(build()).values() if c.get("device_class") == "timestamp"]
    assert len(timestamps) >= 4
    for config in timestamps:
        assert "None" in config["value_template"], config["unique_id"]
    # The time topics say "none" when there is no such time (an empty retained payload would
    # delete the topic): HA must show that as unknown, not fail to parse a timestamp.
    time_topics = [c for c in timestamps if c["state_topic"].endswith(("next_start", "/end"))]
    assert len(time_topics) == 4
    for config in time_topics:
        assert "value != 'none'" in config["value_template"], config["unique_id"]


def test_dispatch_list_is_wrapped_as_attributes() -> None:
    config = components(build())["planned_dispatches"]
    assert "value_json | length" in config["value_template"]
    assert "'dispatches': value_json" in config["json_attributes_template"]


def test_ready_by_options_are_the_app_choices() -> None:
    expected = [
        "04:00", "04:30", "05:00", "05:30", "06:00", "06:30", "07:00", "07:30",
        "08:00", "08:30", "09:00", "09:30", "10:00", "10:30", "11:00",
    ]  # fmt: skip
    assert list(READY_BY_OPTIONS) == expected
    assert components(build())["ready_by"]["options"] == expected


def test_device_state_options_are_lower_case_states_and_other() -> None:
    config = components(build())["device_state"]
    assert config["options"] == list(DEVICE_STATES)
    assert (*(state.lower() for state in API_DEVICE_STATES), "other") == DEVICE_STATES
    assert len(set(DEVICE_STATES)) == 15
    assert all(option == option.lower() for option in config["options"])
    assert "unknown" not in config["options"], "HA's own unknown is the no-value state"
    assert all(state in config["value_template"] for state in API_DEVICE_STATES)
    assert "octopus_state" in config["json_attributes_template"], "the raw state is kept"


def test_api_status_options_are_the_published_states() -> None:
    config = components(build())["api"]
    assert config["options"] == ["ok", "degraded", "rate_limited", "auth_failed", "api_changed"]
    assert config["value_template"] == "{{ value_json.state }}"


@pytest.mark.parametrize(
    ("devices", "model"),
    [
        ((), "Intelligent Octopus"),
        ((ev(),), "Intelligent Octopus (Tesla Model 3)"),
        ((ev(), ev("other")), "Intelligent Octopus (Tesla Model 3)"),
        ((ev(make="Kia", live=False), ev()), "Intelligent Octopus (Tesla Model 3)"),
        ((ev(make="Kia", live=False),), "Intelligent Octopus (Kia Model 3)"),
        ((ev(make=None),), "Intelligent Octopus (Model 3)"),
        ((ev(make="Kia"), ev()), "Intelligent Octopus (Kia Model 3, Tesla Model 3)"),
    ],
)
def test_device_model(devices: tuple[Device, ...], model: str) -> None:
    assert device_model(devices) == model


def test_disabled_removes_the_device() -> None:
    messages = build(settings=HomeAssistantSettings(enabled=False))
    assert messages == {"homeassistant/device/ioagent_a_1234abcd/config": ""}
    assert referenced_topics(messages) == (set(), set())


def test_removal_messages_are_empty_payloads() -> None:
    topics = ["homeassistant/device/ioagent_a_1/config", "ha/device/ioagent_a_2/config"]
    assert removal_messages(topics) == dict.fromkeys(topics, "")
    assert removal_messages([]) == {}


def test_component_removal_sends_platform_stubs_once() -> None:
    with_device = build()
    without_device = build(devices=())
    topic = next(iter(with_device))

    first = component_removal(with_device, without_device)
    stubs = {
        key: config for key, config in components(first).items() if set(config) == {"platform"}
    }
    assert stubs == {
        "device_state": {"platform": "sensor"},
        "target_soc": {"platform": "number"},
        "ready_by": {"platform": "select"},
        "smart_control": {"platform": "switch"},
        "boost": {"platform": "switch"},
        "resync": {"platform": "button"},
    }
    kept = {key: c for key, c in components(first).items() if key not in stubs}
    assert kept == components(without_device)

    second = component_removal(first, without_device)
    assert second == without_device
    assert topic in second


def test_component_removal_when_switching_to_read_only() -> None:
    result = component_removal(build(), build(read_only=True))
    found = components(result)
    assert found["target_soc"] == {"platform": "number"}
    assert found["refresh"] == {"platform": "button"}
    assert found["target_soc_reading"]["platform"] == "sensor"


def test_component_removal_without_changes_is_the_current_messages() -> None:
    assert component_removal(build(), build()) == build()
    assert component_removal({}, build()) == build()


def test_component_removal_drops_topics_no_longer_published() -> None:
    old = build()
    new = build(settings=HomeAssistantSettings(prefix="ha"))
    result = component_removal(old, new)
    assert result[next(iter(old))] == ""
    assert result[next(iter(new))] == new[next(iter(new))]


def test_component_removal_tolerates_a_foreign_retained_payload() -> None:
    topic = discovery_topic("homeassistant", ACCOUNT)
    assert component_removal({topic: "not json"}, build()) == build()


@pytest.mark.parametrize(
    ("prefix", "topic"),
    [("homeassistant", "homeassistant/status"), ("ha/", "ha/status"), ("a/b", "a/b/status")],
)
def test_ha_status_topic(prefix: str, topic: str) -> None:
    assert HA_STATUS_TOPIC(prefix) == topic
    assert ha_status_topic(prefix) == topic


@pytest.mark.parametrize("read_only", [False, True])
def test_docs_list_every_entity_with_its_classes_and_unit(read_only: bool) -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs/home-assistant.md").read_text()
    rows = {
        line.split("|")[1].strip(" `"): [cell.strip(" `") for cell in line.split("|")[1:-1]]
        for line in docs.splitlines()
        if line.startswith("| `")
    }
    for key, config in components(build(read_only=read_only, ledger=LEDGER_TOPICS)).items():
        row = rows.get(config["default_entity_id"])
        assert row is not None, f"docs/home-assistant.md does not list {key}"
        _, platform, device_class, unit, state_class = row[:5]
        assert platform.startswith(config["platform"].replace("_", " ")), key
        assert device_class == config.get("device_class", "–"), key
        assert unit == config.get("unit_of_measurement", "–"), key
        assert state_class.split(" ")[0] == config.get("state_class", "–"), key
