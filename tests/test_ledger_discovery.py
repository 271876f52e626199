"""The ledger's Home Assistant entities (pure): one per ledger topic already published."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from ioagent.config import HomeAssistantSettings
from ioagent.ledger.parse import Bucket, SettledHalfHour
from ioagent.ledger.reconcile import agreement_json, reconcile
from ioagent.ledger.summary import month_json, yesterday_json
from ioagent.ledger.windows import local_day_bounds
from ioagent.mqtt.homeassistant import discovery_messages, ledger_components
from ioagent.mqtt.topics import LEDGER_TOPICS, Topics

TOPICS = Topics("ioagent", "A-1234ABCD")
ROOT = TOPICS.root
NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def _rows() -> list[SettledHalfHour]:
    start, end = local_day_bounds(datetime(2026, 11, 19).date())
    rows = []
    while start < end:
        bucket = Bucket("HOME STANDARD RATE", "home standard", 0.2, 5.6, 28.0)
        rows.append(
            SettledHalfHour(
                start, start + timedelta(minutes=30), "standard", "none", (bucket,), 1.0
            )
        )
        start += timedelta(minutes=30)
    return rows


def fields(template: str) -> set[str]:
    return set(re.findall(r"value_json\.(\w+)", template))


def test_costs_are_monetary_totals_reading_fields_the_payloads_have() -> None:
    components = ledger_components(TOPICS, "a_1234abcd", LEDGER_TOPICS)
    payloads = {"yesterday": yesterday_json(_rows(), NOW), "month": month_json(_rows(), NOW)}
    for key, topic in (("ledger_yesterday", "yesterday"), ("ledger_month", "month")):
        entity = components[key]
        assert entity["state_topic"] == f"{ROOT}/ledger/{topic}"
        assert (entity["device_class"], entity["state_class"]) == ("monetary", "total")
        assert entity["unit_of_measurement"] == "GBP"
        payload = payloads[topic]
        assert payload is not None
        used = fields(entity["value_template"]) | fields(entity["last_reset_value_template"])
        assert used == {"total_gbp", "start"}
        assert used <= set(payload)
    assert payloads["yesterday"] is not None
    assert payloads["yesterday"]["total_gbp"] == round((48 * 5.6 + 48) / 100, 2)


def test_agreement_is_a_diagnostic_percentage_unknown_before_any_comparison() -> None:
    entity = ledger_components(TOPICS, "a_1234abcd", LEDGER_TOPICS)["ledger_agreement"]
    assert entity["entity_category"] == "diagnostic"
    assert entity["unit_of_measurement"] == "%"
    assert fields(entity["value_template"]) == {"ratio"}
    assert "is not none else None" in entity["value_template"]
    assert "ratio" in agreement_json(reconcile(_rows(), [], []), days=30)
    assert entity["unique_id"] == "ioagent_a_1234abcd_ledger_agreement"
    json.dumps(entity)


def test_only_the_three_ledger_topics_exist() -> None:
    assert TOPICS.ledger("month") == f"{ROOT}/ledger/month"
    with pytest.raises(ValueError, match="yesterday, month, agreement"):
        TOPICS.ledger("week")


@pytest.mark.parametrize(
    ("published", "entities"),
    [
        ((), set()),
        (("month", "agreement"), {"ledger_month", "ledger_agreement"}),
        (LEDGER_TOPICS, {"ledger_yesterday", "ledger_month", "ledger_agreement"}),
    ],
)
def test_the_device_announces_only_the_ledger_topics_published(
    published: tuple[str, ...], entities: set[str]
) -> None:
    [payload] = discovery_messages(
        TOPICS,
        account="A-1234ABCD",
        devices=[],
        settings=HomeAssistantSettings(),
        sw_version="0",
        ledger=published,
    ).values()
    components = json.loads(payload)["components"]
    assert {key for key in components if key.startswith("ledger_")} == entities
    for key in entities:
        assert components[key]["state_topic"] == TOPICS.ledger(key.removeprefix("ledger_"))
