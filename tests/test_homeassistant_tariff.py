"""Discovery entities for the product, the car's off-peak signal, the allowance and the rates."""

from __future__ import annotations

import json
from typing import Any

from ioagent.config import HomeAssistantSettings
from ioagent.mqtt.homeassistant import discovery_messages, tariff_components
from ioagent.mqtt.topics import Topics

TOPICS = Topics("ioagent", "A-1234ABCD")


def components() -> dict[str, dict[str, Any]]:
    messages = discovery_messages(
        TOPICS,
        account="A-1234ABCD",
        devices=[],
        settings=HomeAssistantSettings(),
        sw_version="1.2.3",
    )
    (payload,) = messages.values()
    result: dict[str, dict[str, Any]] = json.loads(payload)["components"]
    return result


def test_the_new_entities_are_announced_on_their_topics() -> None:
    found = components()
    expected = {
        "ev_offpeak": (TOPICS.ev_offpeak, "binary_sensor"),
        "offpeak_confidence": (TOPICS.offpeak_confidence, "sensor"),
        "allowance_remaining": (TOPICS.allowance_remaining, "sensor"),
        "rate_home": (TOPICS.rate_home, "sensor"),
        "rate_ev": (TOPICS.rate_ev, "sensor"),
        "product": (TOPICS.tariff, "sensor"),
    }
    for key, (topic, platform) in expected.items():
        assert (found[key]["state_topic"], found[key]["platform"]) == (topic, platform), key


def test_rates_are_energy_dashboard_prices_in_gbp_per_kwh() -> None:
    for key in ("rate_home", "rate_ev"):
        entity = tariff_components(TOPICS, "a_1234abcd")[key]
        assert entity["unit_of_measurement"] == "GBP/kWh"
        assert "/ 100" in entity["value_template"], "the topics are pence, HA wants pounds"
        assert "device_class" not in entity, "monetary takes a plain currency unit"


def test_allowance_in_hours_and_product_as_a_diagnostic() -> None:
    found = components()
    assert found["allowance_remaining"]["unit_of_measurement"] == "h"
    assert found["allowance_remaining"]["device_class"] == "duration"
    assert found["product"]["entity_category"] == "diagnostic"
    assert found["offpeak_confidence"]["options"] == ["guaranteed", "charging", "planned", "none"]
    assert found["ev_offpeak"]["payload_on"] == "true"
