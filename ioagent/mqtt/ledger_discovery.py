"""Home Assistant entities for the ledger topics (pure; planned, not yet announced).

To be merged into the device's ``components`` by :mod:`ioagent.mqtt.homeassistant` once the
daemon publishes the ``ledger/*`` topics (docs/ledger.md, "Not done yet"). Kept apart so that
it merges without touching the discovery module other work changes.

- Yesterday's and the month's cost are monetary sensors in GBP with ``state_class: total`` and
  a ``last_reset`` at the start of the day or month, which is what HA's Energy dashboard asks
  of a cost entity.
- The agreement is a diagnostic percentage; ``None`` (no half-hour compared yet) renders as
  unknown in HA, never as 0 %.
"""

from __future__ import annotations

from typing import Any, Final

LEDGER_TOPICS: Final = ("yesterday", "month", "agreement")
ORIGIN_NAME: Final = "ioagent"


def ledger_topic(root: str, name: str) -> str:
    """``{base}/{acct}/ledger/<name>``; ``root`` is ``{base}/{acct}``."""
    if name not in LEDGER_TOPICS:
        raise ValueError(f"no ledger topic {name!r}")
    return f"{root}/ledger/{name}"


def _entity(slug: str, key: str, name: str, **options: Any) -> dict[str, Any]:
    entity_id = f"{ORIGIN_NAME}_{slug}_{key}"
    return {
        "platform": "sensor",
        "unique_id": entity_id,
        "default_entity_id": f"sensor.{entity_id}",
        "name": name,
        **options,
    }


def _cost(slug: str, key: str, name: str, topic: str) -> dict[str, Any]:
    return _entity(
        slug,
        key,
        name,
        state_topic=topic,
        value_template="{{ value_json.total_gbp if value_json else None }}",
        last_reset_value_template="{{ value_json.start if value_json else None }}",
        json_attributes_topic=topic,
        device_class="monetary",
        state_class="total",
        unit_of_measurement="GBP",
        suggested_display_precision=2,
        icon="mdi:cash",
    )


def ledger_components(root: str, slug: str) -> dict[str, dict[str, Any]]:
    """The three ledger entities, keyed like the other components of the device payload."""
    agreement = ledger_topic(root, "agreement")
    return {
        "ledger_yesterday": _cost(
            slug, "ledger_yesterday", "Settled cost (last day)", ledger_topic(root, "yesterday")
        ),
        "ledger_month": _cost(
            slug, "ledger_month", "Settled cost (month to date)", ledger_topic(root, "month")
        ),
        "ledger_agreement": _entity(
            slug,
            "ledger_agreement",
            "Signal agreement with the bill",
            state_topic=agreement,
            value_template=(
                "{{ (value_json.ratio * 100) | round(1) "
                "if value_json.ratio is not none else None }}"
            ),
            json_attributes_topic=agreement,
            unit_of_measurement="%",
            state_class="measurement",
            entity_category="diagnostic",
            suggested_display_precision=1,
            icon="mdi:check-decagram",
        ),
    }
