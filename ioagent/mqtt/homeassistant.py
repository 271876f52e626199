"""Home Assistant MQTT discovery: the retained payloads that make ioagent's topics appear in HA.

Pure: every function builds strings from its arguments; the daemon publishes them (retained)
on start, after every reconnect and after HA announces ``online`` on :func:`HA_STATUS_TOPIC`.

Design (see ``docs/home-assistant.md``):

- One HA device per Octopus account, announced with device-based discovery on
  ``<prefix>/device/ioagent_<account>/config``. The car's make and model go in the model string.
- ``unique_id`` is ``ioagent_<account>_<entity key>``. It never contains the Octopus device id,
  because Octopus issues a new one when a car is re-registered, and it does not contain the
  make/model either, because the topics it reads are per account: a new car keeps the entity
  ids, history and automations.
- Entities read and write exactly the topics of :class:`ioagent.mqtt.topics.Topics`; controls send
  to the command topics the daemon listens on and nothing else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, get_args

from ioagent.config import HomeAssistantSettings
from ioagent.kraken.types import DEVICE_STATES as API_DEVICE_STATES
from ioagent.kraken.types import Device
from ioagent.mqtt.topics import NO_TIME, Topics
from ioagent.tariff.plan import EventKind

ORIGIN_NAME = "ioagent"
MANUFACTURER = "Octopus Energy"
PRODUCT = "Intelligent Octopus"

AVAILABLE = "online"
NOT_AVAILABLE = "offline"
HA_ONLINE = "online"
"""The birth payload HA publishes on :func:`HA_STATUS_TOPIC` after it starts."""
REPUBLISH_DELAY_SECONDS = (1.0, 5.0)
"""After HA's birth message, wait a random time in this range before republishing, so a
restarted HA is not flooded by every bridge at the same instant."""

TRUE = "true"
FALSE = "false"
ON = "on"
OFF = "off"
PRESS_PAYLOAD = "PRESS"
"""What the refresh and resync buttons send; both commands ignore the value."""

OTHER_DEVICE_STATE = "other"
DEVICE_STATES = (*(state.lower() for state in API_DEVICE_STATES), OTHER_DEVICE_STATE)
"""``device/state`` as HA shows it: Octopus's ``currentState`` lower-cased (HA's own states,
``unknown`` among them, are lower-case; an upper-case ``UNKNOWN`` beside HA's ``unknown`` read as
two different things). HA refuses an enum value outside ``options``, so the template maps a state
Octopus adds later to ``other``; the attribute ``octopus_state`` always holds the raw value."""

API_STATES = ("ok", "degraded", "rate_limited", "auth_failed", "api_changed")
API_ATTRIBUTES = ("last_error", "last_error_at", "storage")
"""The ``api`` fields HA keeps as attributes of the API status sensor. ``last_success`` and
``stale_seconds`` change on every poll: as attributes they would make HA write a new state row
every half hour for nothing (``last_success`` has its own timestamp sensor)."""

REPLY_STATUSES = ("ok", "error")
"""Event types of the command-result event entity: the ``status`` of every reply."""
PLAN_EVENTS: tuple[str, ...] = get_args(EventKind)
"""Event types of the charge-slot event entity: the ``event`` of every ``events`` message."""

TARGET_SOC_MIN = 10
TARGET_SOC_MAX = 100
TARGET_SOC_STEP = 5

READY_BY_OPTIONS = tuple(
    f"{minutes // 60:02d}:{minutes % 60:02d}" for minutes in range(240, 661, 30)
)
"""04:00 … 11:00 in 30-minute steps, as the Octopus app offers."""

# Only HA's sensor treats the rendered text "None" as "no value"; an empty payload is ignored
# and would leave the previous instant on screen. ioagent publishes "none" (NO_TIME) when there
# is no such time; an empty payload (from ioagent before 0.2) means the same.
_EMPTY_AS_NONE = "{{ value if value and value != '" + NO_TIME + "' else None }}"
NO_DEVICE_STATE = "UNKNOWN"
"""What ``device/state`` carries when Octopus reported no state at all: HA's own ``unknown``."""
_DEVICE_STATE_TEMPLATE = (
    "{% set known = " + json.dumps(list(API_DEVICE_STATES)) + " %}"
    "{% if not value or value == '" + NO_DEVICE_STATE + "' %}None"
    "{% elif value in known %}{{ value | lower }}"
    "{% else %}" + OTHER_DEVICE_STATE + "{% endif %}"
)
_DEVICE_STATE_ATTRIBUTES = "{{ {'octopus_state': value or None} | to_json }}"
_API_ATTRIBUTES_TEMPLATE = (
    "{{ {" + ", ".join(f"'{name}': value_json.{name}" for name in API_ATTRIBUTES) + "} | to_json }}"
)
# HA's event entity wants a JSON object with ``event_type``; the other keys become attributes.
_REPLY_EVENT_TEMPLATE = (
    "{{ {'event_type': value_json.status, 'command': value_json.command,"
    " 'error': value_json.error | default(None),"
    " 'transaction': value_json.transaction | default(None)} | to_json }}"
)
_PLAN_EVENT_TEMPLATE = (
    "{{ {'event_type': value_json.event, 'slot': value_json.slot,"
    " 'previous': value_json.previous, 'at': value_json.at} | to_json }}"
)
_SLOT_COUNT = "{{ value_json | length }}"
_SLOT_LIST = "{{ {'dispatches': value_json} | to_json }}"
_NEXT_CHANGE = "{{ value_json[0].at if value_json else None }}"
_TRANSITION_LIST = "{{ {'transitions': value_json} | to_json }}"


def ha_status_topic(prefix: str) -> str:
    """The topic on which HA publishes ``online`` (birth) and ``offline`` (will)."""
    return f"{_clean_prefix(prefix)}/status"


HA_STATUS_TOPIC = ha_status_topic
"""The same function under the name the design notes use."""


def account_slug(account: str) -> str:
    """``A-1234ABCD`` -> ``a_1234abcd``: valid in object ids, unique ids and entity ids."""
    slug = re.sub(r"[^a-z0-9]+", "_", account.lower()).strip("_")
    if not slug:
        raise ValueError("account number has no letters or digits to build ids from")
    return slug


def device_object_id(account: str) -> str:
    return f"{ORIGIN_NAME}_{account_slug(account)}"


def discovery_topic(prefix: str, account: str) -> str:
    """The one device-discovery topic used for ``account``."""
    return f"{_clean_prefix(prefix)}/device/{device_object_id(account)}/config"


def discovery_messages(
    topics: Topics,
    *,
    account: str,
    devices: Sequence[Device],
    settings: HomeAssistantSettings,
    sw_version: str,
    read_only: bool = False,
    support_url: str | None = None,
    allowance: bool = True,
    ledger: Collection[str] = (),
) -> dict[str, str]:
    """Discovery topic -> retained JSON payload for ``account``.

    ``allowance``: the account's product has the car allowance (four-rate). Without it the
    allowance topics are never published, so HA gets no entity for them. ``ledger``: the
    ledger topics (``LEDGER_TOPICS``) published so far; each gets its entity.

    With ``settings.enabled`` false this returns the removal message for the same topic, so the
    daemon can always publish what it gets and a disabled integration cleans up after itself.
    Device entities (state, controls) appear only when ``devices`` is not empty. With
    ``read_only`` the controls become plain sensors, because the daemon would ignore commands.
    """
    topic = discovery_topic(settings.prefix, account)
    if not settings.enabled:
        return removal_messages([topic])
    slug = account_slug(account)
    components = _account_components(topics, slug)
    components.update(tariff_components(topics, slug, allowance=allowance))
    components.update(ledger_components(topics, slug, ledger))
    if devices:
        components.update(_device_components(topics, slug, read_only=read_only))
    if not read_only:
        components.update(_account_controls(topics, slug))
    origin: dict[str, str] = {"name": ORIGIN_NAME, "sw_version": sw_version}
    if support_url:
        origin["support_url"] = support_url
    payload = {
        "device": {
            "identifiers": [device_object_id(account)],
            "name": f"{PRODUCT} {account}",
            "manufacturer": MANUFACTURER,
            "model": device_model(devices),
            "sw_version": sw_version,
        },
        "origin": origin,
        "availability": [
            {
                "topic": topics.status,
                "payload_available": AVAILABLE,
                "payload_not_available": NOT_AVAILABLE,
            }
        ],
        # At least once: a dropped command would silently not change the charge.
        "qos": 1,
        "components": components,
    }
    return {topic: _dumps(payload)}


def device_model(devices: Sequence[Device]) -> str:
    """``Intelligent Octopus (Tesla Model 3)``; live devices are named before others."""
    chosen = [device for device in devices if device.is_live] or list(devices)
    names: list[str] = []
    for device in chosen:
        name = " ".join(
            part.strip() for part in (device.make, device.model) if part and part.strip()
        )
        if name and name not in names:
            names.append(name)
    return f"{PRODUCT} ({', '.join(names)})" if names else PRODUCT


def removal_messages(previous_topics: Iterable[str]) -> dict[str, str]:
    """An empty retained payload per discovery topic: HA removes the device and its entities,
    and the broker drops the retained config."""
    return dict.fromkeys(previous_topics, "")


def component_removal(previous: Mapping[str, str], current: Mapping[str, str]) -> dict[str, str]:
    """Messages that move HA from ``previous`` to ``current`` discovery payloads.

    A component that ``previous`` had and ``current`` lacks is sent with only its ``platform``
    (HA's way to remove one entity of a device); a topic ``current`` lacks is removed entirely.
    Once HA has seen the platform-only stub, the next ``current`` may drop it.
    """
    messages = dict(current)
    for topic, old_payload in previous.items():
        old_components = _components(old_payload)
        if topic not in current:
            if old_payload:
                messages[topic] = ""
            continue
        if not current[topic]:
            continue
        new_root = json.loads(current[topic])
        new_components: dict[str, Any] = new_root.setdefault("components", {})
        gone = {
            key: {"platform": config["platform"]}
            for key, config in old_components.items()
            # A stub is sent once; carrying it on would keep it in the retained config forever.
            if key not in new_components and "platform" in config and len(config) > 1
        }
        if gone:
            new_components.update(gone)
            messages[topic] = _dumps(new_root)
    return messages


def referenced_topics(messages: Mapping[str, str]) -> tuple[set[str], set[str]]:
    """(topics HA reads: state, availability, attributes; topics HA writes: commands)."""
    reads: set[str] = set()
    writes: set[str] = set()
    for payload in messages.values():
        if not payload:
            continue
        root = json.loads(payload)
        configs = [root, *root.get("components", {}).values()]
        for config in configs:
            for entry in config.get("availability", []):
                reads.add(entry["topic"])
            for key, value in config.items():
                if not key.endswith("_topic") or not isinstance(value, str):
                    continue
                (writes if key.endswith("command_topic") else reads).add(value)
    return reads, writes


# --- components ------------------------------------------------------------------------------


def _account_components(topics: Topics, slug: str) -> dict[str, dict[str, Any]]:
    return {
        # No device class: none of HA's binary-sensor classes means "cheap rate now".
        "offpeak": _entity(
            slug,
            "offpeak",
            "binary_sensor",
            "Off-peak",
            state_topic=topics.offpeak,
            payload_on=TRUE,
            payload_off=FALSE,
            icon="mdi:clock-check-outline",
        ),
        # "running": HA shows Running / Not running, which is what a charge slot does.
        "dispatching": _entity(
            slug,
            "dispatching",
            "binary_sensor",
            "Charge slot",
            state_topic=topics.dispatching,
            payload_on=TRUE,
            payload_off=FALSE,
            device_class="running",
            icon="mdi:ev-station",
        ),
        "next_offpeak_start": _timestamp(
            slug, "next_offpeak_start", "Next off-peak start", topics.next_offpeak_start
        ),
        "offpeak_end": _timestamp(slug, "offpeak_end", "Off-peak end", topics.offpeak_end),
        "next_dispatch_start": _timestamp(
            slug, "next_dispatch_start", "Next charge slot start", topics.next_dispatch_start
        ),
        "next_dispatch_end": _timestamp(
            slug, "next_dispatch_end", "Charge slot end", topics.next_dispatch_end
        ),
        "next_change": _entity(
            slug,
            "next_change",
            "sensor",
            "Next tariff change",
            state_topic=topics.transitions,
            value_template=_NEXT_CHANGE,
            device_class="timestamp",
            json_attributes_topic=topics.transitions,
            json_attributes_template=_TRANSITION_LIST,
            icon="mdi:swap-horizontal",
        ),
        # No state_class: energy allows only total/total_increasing, and both make HA compile a
        # running "sum" and offer the sensor as a meter on the Energy dashboard. A plan that
        # rises and falls is neither; without a state_class HA just records the value.
        "planned_kwh": _entity(
            slug,
            "planned_kwh",
            "sensor",
            "Planned energy",
            state_topic=topics.planned_kwh,
            device_class="energy",
            unit_of_measurement="kWh",
            suggested_display_precision=1,
            icon="mdi:car-electric",
        ),
        "planned_dispatches": _slot_list(
            slug, "planned_dispatches", "Planned charge slots", topics.planned, "mdi:calendar-clock"
        ),
        "completed_dispatches": _slot_list(
            slug,
            "completed_dispatches",
            "Completed charge slots",
            topics.completed,
            "mdi:calendar-check",
        ),
        "plan_event": _entity(
            slug,
            "plan_event",
            "event",
            "Charge slot change",
            state_topic=topics.events,
            event_types=list(PLAN_EVENTS),
            value_template=_PLAN_EVENT_TEMPLATE,
            icon="mdi:calendar-sync",
        ),
        "api": _entity(
            slug,
            "api",
            "sensor",
            "API status",
            state_topic=topics.api,
            value_template="{{ value_json.state }}",
            device_class="enum",
            options=list(API_STATES),
            json_attributes_topic=topics.api,
            json_attributes_template=_API_ATTRIBUTES_TEMPLATE,
            entity_category="diagnostic",
            icon="mdi:api",
        ),
        "api_last_success": _entity(
            slug,
            "api_last_success",
            "sensor",
            "Last successful poll",
            state_topic=topics.api,
            value_template="{{ value_json.last_success or None }}",
            device_class="timestamp",
            entity_category="diagnostic",
        ),
    }


def _account_controls(topics: Topics, slug: str) -> dict[str, dict[str, Any]]:
    return {
        # A control, not a diagnostic: it is what a user presses when the plan looks old.
        "refresh": _entity(
            slug,
            "refresh",
            "button",
            "Refresh plan",
            command_topic=topics.refresh,
            payload_press=PRESS_PAYLOAD,
            icon="mdi:refresh",
        ),
        # Every reply to every command, so a refused command (from HA, an automation or any
        # other client) is visible in HA instead of a control that silently does not move.
        "command_result": _entity(
            slug,
            "command_result",
            "event",
            "Command result",
            state_topic=topics.response,
            event_types=list(REPLY_STATUSES),
            value_template=_REPLY_EVENT_TEMPLATE,
            icon="mdi:message-reply-text",
        ),
    }


def _device_components(topics: Topics, slug: str, *, read_only: bool) -> dict[str, Any]:
    components: dict[str, Any] = {
        "device_state": _entity(
            slug,
            "device_state",
            "sensor",
            "Car state",
            state_topic=topics.device_state,
            value_template=_DEVICE_STATE_TEMPLATE,
            device_class="enum",
            options=list(DEVICE_STATES),
            json_attributes_topic=topics.device_state,
            json_attributes_template=_DEVICE_STATE_ATTRIBUTES,
            icon="mdi:car-connected",
        ),
    }
    if read_only:
        # Different keys from the controls, so switching modes removes one and adds the other.
        components.update(
            target_soc_reading=_entity(
                slug,
                "target_soc_reading",
                "sensor",
                "Target charge",
                state_topic=topics.target_soc,
                device_class="battery",
                state_class="measurement",
                unit_of_measurement="%",
                icon="mdi:battery-charging-80",
            ),
            ready_by_reading=_entity(
                slug,
                "ready_by_reading",
                "sensor",
                "Ready by",
                state_topic=topics.ready_by,
                icon="mdi:clock-end",
            ),
            smart_control_reading=_entity(
                slug,
                "smart_control_reading",
                "binary_sensor",
                "Smart charging",
                state_topic=topics.smart_control,
                payload_on=ON,
                payload_off=OFF,
                icon="mdi:auto-mode",
            ),
            boost_reading=_entity(
                slug,
                "boost_reading",
                "binary_sensor",
                "Boost charge",
                state_topic=topics.boost,
                payload_on=ON,
                payload_off=OFF,
                device_class="running",
                icon="mdi:rocket-launch",
            ),
        )
        return components
    components.update(
        target_soc=_entity(
            slug,
            "target_soc",
            "number",
            "Target charge",
            state_topic=topics.target_soc,
            command_topic=topics.command("target_soc"),
            min=TARGET_SOC_MIN,
            max=TARGET_SOC_MAX,
            step=TARGET_SOC_STEP,
            mode="slider",
            device_class="battery",
            unit_of_measurement="%",
            icon="mdi:battery-charging-80",
        ),
        ready_by=_entity(
            slug,
            "ready_by",
            "select",
            "Ready by",
            state_topic=topics.ready_by,
            command_topic=topics.command("ready_by"),
            options=list(READY_BY_OPTIONS),
            icon="mdi:clock-end",
        ),
        smart_control=_entity(
            slug,
            "smart_control",
            "switch",
            "Smart charging",
            state_topic=topics.smart_control,
            command_topic=topics.command("smart_control"),
            payload_on=ON,
            payload_off=OFF,
            icon="mdi:auto-mode",
        ),
        boost=_entity(
            slug,
            "boost",
            "switch",
            "Boost charge",
            state_topic=topics.boost,
            command_topic=topics.command("boost"),
            payload_on=ON,
            payload_off=OFF,
            icon="mdi:rocket-launch",
        ),
        resync=_entity(
            slug,
            "resync",
            "button",
            "Resync charging schedule",
            command_topic=topics.command("resync"),
            payload_press=PRESS_PAYLOAD,
            icon="mdi:calendar-refresh",
        ),
    )
    return components


def _slot_list(slug: str, key: str, name: str, state_topic: str, icon: str) -> dict[str, Any]:
    """A count of charge slots whose attribute ``dispatches`` is the list itself."""
    return _entity(
        slug,
        key,
        "sensor",
        name,
        state_topic=state_topic,
        value_template=_SLOT_COUNT,
        state_class="measurement",
        json_attributes_topic=state_topic,
        json_attributes_template=_SLOT_LIST,
        icon=icon,
    )


def _timestamp(slug: str, key: str, name: str, state_topic: str) -> dict[str, Any]:
    return _entity(
        slug,
        key,
        "sensor",
        name,
        state_topic=state_topic,
        device_class="timestamp",
        value_template=_EMPTY_AS_NONE,
    )


def _entity(slug: str, key: str, platform: str, name: str, **options: Any) -> dict[str, Any]:
    entity_id = f"{ORIGIN_NAME}_{slug}_{key}"
    return {
        "platform": platform,
        "unique_id": entity_id,
        "default_entity_id": f"{platform}.{entity_id}",
        "name": name,
        **options,
    }


def _components(payload: str) -> dict[str, Any]:
    if not payload:
        return {}
    try:
        root = json.loads(payload)
    except ValueError:
        return {}
    components = root.get("components") if isinstance(root, dict) else None
    return components if isinstance(components, dict) else {}


def _clean_prefix(prefix: str) -> str:
    return prefix.strip().rstrip("/") or "homeassistant"


def _dumps(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=False)


# --- the account's product, the car allowance and the rates (issue 15): a block of its own ---

_PENCE_TO_GBP = "{{ ((value | float) / 100) | round(6) if value else None }}"
"""The rate topics are pence per kWh; HA's energy dashboard prices are currency per kWh."""


def tariff_components(
    topics: Topics, slug: str, *, allowance: bool = True
) -> dict[str, dict[str, Any]]:
    """The car's off-peak signal, the allowance, the home and car rates and the product.

    The rates have unit ``GBP/kWh`` so the energy dashboard accepts them as prices. They carry
    no ``device_class``: HA's ``monetary`` class takes a plain currency as its unit, and a
    per-kWh price would be refused there.
    """
    components = {
        "ev_offpeak": _entity(
            slug,
            "ev_offpeak",
            "binary_sensor",
            "Car off-peak",
            state_topic=topics.ev_offpeak,
            payload_on=TRUE,
            payload_off=FALSE,
            icon="mdi:car-clock",
        ),
        "offpeak_confidence": _entity(
            slug,
            "offpeak_confidence",
            "sensor",
            "Off-peak confidence",
            state_topic=topics.offpeak_confidence,
            device_class="enum",
            options=["guaranteed", "charging", "planned", "none"],
            icon="mdi:shield-check-outline",
        ),
        "allowance_remaining": _entity(
            slug,
            "allowance_remaining",
            "sensor",
            "Car allowance remaining",
            state_topic=topics.allowance_remaining,
            value_template=_EMPTY_AS_NONE,
            device_class="duration",
            unit_of_measurement="h",
            suggested_display_precision=1,
            icon="mdi:timer-sand",
        ),
        "rate_home": _entity(
            slug,
            "rate_home",
            "sensor",
            "Home rate",
            state_topic=topics.rate_home,
            value_template=_PENCE_TO_GBP,
            unit_of_measurement="GBP/kWh",
            state_class="measurement",
            suggested_display_precision=4,
            icon="mdi:cash",
        ),
        "rate_ev": _entity(
            slug,
            "rate_ev",
            "sensor",
            "Car rate",
            state_topic=topics.rate_ev,
            value_template=_PENCE_TO_GBP,
            unit_of_measurement="GBP/kWh",
            state_class="measurement",
            suggested_display_precision=4,
            icon="mdi:cash",
        ),
        "product": _entity(
            slug,
            "product",
            "sensor",
            "Tariff product",
            state_topic=topics.tariff,
            value_template="{{ value_json.product or value_json.family }}",
            json_attributes_topic=topics.tariff,
            entity_category="diagnostic",
            icon="mdi:file-document-outline",
        ),
    }
    if not allowance:
        del components["allowance_remaining"]
    return components


# --- the settlement ledger (issue 16): announced topic by topic, once each is published ---


def ledger_components(
    topics: Topics, slug: str, published: Collection[str]
) -> dict[str, dict[str, Any]]:
    """The ledger's entities for those of its topics (``LEDGER_TOPICS``) already published.

    Only published ones: the ledger's first payloads come after its first fetch (a minute after
    start, and ``yesterday`` only once a whole day is settled), and an entity announced for a
    topic with nothing on it would sit ``unknown`` in HA with no hint why.

    The costs are ``monetary`` in GBP with ``state_class: total`` and a ``last_reset`` at the
    start of their day or month, which HA's Energy dashboard takes as a cost entity. The
    agreement is a diagnostic percentage; a ratio of ``null`` (nothing compared yet) is HA's
    ``unknown``, never 0 %.
    """
    components: dict[str, dict[str, Any]] = {}
    costs = {"yesterday": "Settled cost (last day)", "month": "Settled cost (month to date)"}
    for name, label in costs.items():
        if name in published:
            topic = topics.ledger(name)
            components[f"ledger_{name}"] = _entity(
                slug,
                f"ledger_{name}",
                "sensor",
                label,
                state_topic=topic,
                value_template="{{ value_json.total_gbp }}",
                last_reset_value_template="{{ value_json.start }}",
                json_attributes_topic=topic,
                device_class="monetary",
                state_class="total",
                unit_of_measurement="GBP",
                suggested_display_precision=2,
                icon="mdi:cash",
            )
    if "agreement" in published:
        topic = topics.ledger("agreement")
        components["ledger_agreement"] = _entity(
            slug,
            "ledger_agreement",
            "sensor",
            "Signal agreement with the bill",
            state_topic=topic,
            value_template=(
                "{{ (value_json.ratio * 100) | round(1) "
                "if value_json.ratio is not none else None }}"
            ),
            json_attributes_topic=topic,
            unit_of_measurement="%",
            state_class="measurement",
            entity_category="diagnostic",
            suggested_display_precision=1,
            icon="mdi:check-decagram",
        )
    return components
