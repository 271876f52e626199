"""The simulator's schema is as strict as Octopus's published GraphQL reference.

Requests the live API refuses must be refused here too, with the live API's wording, and every
document ioagent sends must validate against the schema (all of them: a new query in
``ioagent/kraken/queries.py`` is picked up by the walk below without touching this file).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNonNull,
    GraphQLObjectType,
    OperationDefinitionNode,
    parse,
    validate,
)

from ioagent.kraken import queries
from ioagent.simulator.graphql_api import kraken_schema
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import DEFAULT_API_KEY, DEFAULT_EV_ID, SimulatorState

NOW = datetime(2026, 1, 12, 18, 7, 31, tzinfo=UTC)
LOGIN = """mutation Login($key: String) {
  obtainKrakenToken(input: {APIKey: $key}) { token }
}"""


def _documents() -> Iterator[tuple[str, str]]:
    """Every GraphQL document in ``queries``: each module-level string that parses as one
    (fragments are completed with DEVICE_FIELDS) and the poll query for 0 to 4 devices."""
    for name, value in sorted(vars(queries).items()):
        if not isinstance(value, str) or name.startswith("_"):
            continue
        text = value.strip()
        if not text.startswith(("query", "mutation", "fragment", "{")):
            continue
        if text.startswith("fragment"):
            continue  # validated as part of the documents that spread it
        yield name, value
    for count in range(5):
        yield f"poll_query({count})", queries.poll_query(count)


DOCUMENTS = list(_documents())


def test_the_walk_finds_every_operation_in_queries() -> None:
    names = {name for name, _ in DOCUMENTS}
    # The walk must see the module's operations; if this list grows, the walk needs no change.
    assert {"OBTAIN_TOKEN", "ACCOUNTS", "DEVICES", "PLANNED_DISPATCHES"} <= names
    assert {"COMPLETED_DISPATCHES", "SET_PREFERENCES", "UPDATE_BOOST"} <= names
    assert "UPDATE_SMART_CONTROL" in names
    for _, text in DOCUMENTS:
        assert any(isinstance(d, OperationDefinitionNode) for d in parse(text).definitions)


@pytest.mark.parametrize(("name", "document"), DOCUMENTS, ids=[n for n, _ in DOCUMENTS])
def test_every_ioagent_document_validates_against_the_schema(name: str, document: str) -> None:
    errors = validate(kraken_schema(), parse(document))
    assert errors == [], f"{name}: {[e.message for e in errors]}"


# --- the types Octopus publishes ---------------------------------------------------------------


def _named(type_name: str) -> Any:
    return kraken_schema().type_map[type_name]


def _field_type(type_name: str, field: str) -> str:
    graphql_type = _named(type_name)
    fields = graphql_type.fields
    return str(fields[field].type)


@pytest.mark.parametrize(
    ("type_name", "field", "expected"),
    [
        ("SmartFlexDeviceInterface", "id", "ID!"),
        ("SmartFlexDeviceInterface", "deviceType", "KrakenFlexDeviceTypes!"),
        ("SmartFlexDeviceInterface", "provider", "ProviderChoices!"),
        ("SmartFlexDeviceInterface", "status", "SmartFlexDeviceStatusInterface!"),
        ("SmartFlexDeviceInterface", "preferences", "SmartFlexDevicePreferencesInterface"),
        ("SmartFlexDeviceStatusInterface", "current", "SmartFlexDeviceLifecycleStatus"),
        ("SmartFlexDeviceStatusInterface", "currentState", "SmartFlexDeviceState"),
        ("SmartFlexDevicePreferencesInterface", "mode", "PreferencesModeChoices!"),
        ("SmartFlexDevicePreferencesInterface", "unit", "PreferencesUnitChoices!"),
        ("SmartFlexDevicePreferencesInterface", "targetType", "PreferencesTargetType!"),
        (
            "SmartFlexDevicePreferencesInterface",
            "isChargingDurationCapped",
            "FlexIsChargingDurationCapped!",
        ),
        ("SmartFlexDevicePreferenceSchedule", "dayOfWeek", "DayOfWeek!"),
        ("SmartFlexDevicePreferenceSchedule", "time", "Time!"),
        ("SmartFlexDispatch", "start", "DateTime!"),
        ("SmartFlexDispatch", "end", "DateTime!"),
        ("SmartFlexDispatch", "type", "SmartFlexChargingType!"),
        ("SmartFlexDispatch", "energyAddedKwh", "Decimal"),
        ("UpsideDispatchType", "delta", "Decimal"),
        ("PreferencesScheduleInput", "max", "Decimal!"),
        ("PreferencesScheduleInput", "min", "Decimal"),
        ("PreferencesScheduleInput", "time", "Time!"),
        ("PreferencesScheduleInput", "dayOfWeek", "DayOfWeek!"),
        ("SmartFlexDevicePreferencesInput", "deviceId", "ID!"),
        ("SmartFlexDevicePreferencesInput", "schedules", "[PreferencesScheduleInput]!"),
        ("UpdateBoostChargeInput", "deviceId", "String!"),
        ("UpdateBoostChargeInput", "action", "UpdateBoostChargeAction!"),
        ("SmartControlInput", "deviceId", "ID!"),
        ("SmartControlInput", "action", "SmartControlAction!"),
    ],
)
def test_field_types_are_those_octopus_publishes(type_name: str, field: str, expected: str) -> None:
    assert _field_type(type_name, field) == expected


def test_interfaces_are_interfaces_and_the_device_types_implement_them() -> None:
    for name in (
        "SmartFlexDeviceInterface",
        "SmartFlexDeviceStatusInterface",
        "SmartFlexDevicePreferencesInterface",
    ):
        assert isinstance(_named(name), GraphQLInterfaceType), name
    for name in ("SmartFlexVehicle", "SmartFlexChargePoint", "SmartFlexDevice"):
        device = _named(name)
        assert isinstance(device, GraphQLObjectType)
        assert "SmartFlexDeviceInterface" in [i.name for i in device.interfaces]


@pytest.mark.parametrize(
    ("enum", "values"),
    [
        ("UpdateBoostChargeAction", {"BOOST", "CANCEL"}),
        ("SmartControlAction", {"SUSPEND", "UNSUSPEND"}),
        ("SmartFlexChargingType", {"SMART", "BOOST", "TEST"}),
        ("PreferencesModeChoices", {"CHARGE", "COOL", "HEAT"}),
        ("PreferencesUnitChoices", {"CELSIUS", "PERCENTAGE"}),
        (
            "PreferencesTargetType",
            {"ABSOLUTE_STATE_OF_CHARGE", "RELATIVE_STATE_OF_CHARGE", "ABSOLUTE_TEMPERATURE"},
        ),
        ("FlexIsChargingDurationCapped", {"ENABLED", "DISABLED", "NOT_APPLICABLE"}),
        (
            "KrakenFlexDeviceTypes",
            {
                "BATTERIES",
                "ELECTRIC_VEHICLES",
                "INVERTERS",
                "HEAT_PUMPS",
                "STORAGE_HEATERS",
                "ELECTRICITY_METERS",
                "THERMOSTATS",
            },
        ),
        (
            "SmartFlexDeviceLifecycleStatus",
            {
                "ONBOARDING",
                "PENDING_LIVE",
                "LIVE",
                "ONBOARDING_TEST_IN_PROGRESS",
                "FAILED_ONBOARDING_TEST",
                "RETIRED",
            },
        ),
    ],
)
def test_enums_have_octopus_names_and_values(enum: str, values: set[str]) -> None:
    graphql_type = _named(enum)
    assert isinstance(graphql_type, GraphQLEnumType)
    assert set(graphql_type.values) == values


def test_update_boost_charge_takes_a_nullable_input() -> None:
    mutation = _named("Mutation")
    argument = mutation.fields["updateBoostCharge"].args["input"]
    assert not isinstance(argument.type, GraphQLNonNull)
    assert isinstance(argument.type, GraphQLInputObjectType)
    assert argument.type.name == "UpdateBoostChargeInput"


# --- refusals over HTTP, worded as Kraken words them ------------------------------------------


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[tuple[RunningSimulator, aiohttp.ClientSession, str]]:
    state = SimulatorState.with_default_account(clock=lambda: NOW)
    async with run_simulator(state) as running, aiohttp.ClientSession() as http:
        async with http.post(
            running.graphql_url, json={"query": LOGIN, "variables": {"key": DEFAULT_API_KEY}}
        ) as response:
            token = (await response.json())["data"]["obtainKrakenToken"]["token"]
        yield running, http, token


async def _post(
    sim: tuple[RunningSimulator, aiohttp.ClientSession, str],
    query: str,
    variables: dict[str, Any],
) -> tuple[int, dict[str, Any]]:
    running, http, token = sim
    async with http.post(
        running.graphql_url,
        json={"query": query, "variables": variables},
        headers={"Authorization": token},
    ) as response:
        return response.status, await response.json()


def _messages(body: dict[str, Any]) -> list[str]:
    return [error["message"] for error in body.get("errors", [])]


async def test_a_string_variable_in_an_id_position_is_refused(
    sim: tuple[RunningSimulator, aiohttp.ClientSession, str],
) -> None:
    query = """mutation Suspend($d: String!) {
      updateDeviceSmartControl(input: {deviceId: $d, action: SUSPEND}) { id }
    }"""
    status, body = await _post(sim, query, {"d": DEFAULT_EV_ID})
    assert status == 400
    assert "data" not in body
    assert _messages(body) == [
        "Variable '$d' of type 'String!' used in position expecting type 'ID!'."
    ]


def _schedules(**override: Any) -> list[dict[str, Any]]:
    days = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
    return [{"dayOfWeek": day, "time": "07:30", "max": 80, **override} for day in days]


async def test_a_schedule_without_max_is_refused(
    sim: tuple[RunningSimulator, aiohttp.ClientSession, str],
) -> None:
    schedules = _schedules()
    del schedules[2]["max"]
    variables = {
        "input": {
            "deviceId": DEFAULT_EV_ID,
            "mode": "CHARGE",
            "unit": "PERCENTAGE",
            "schedules": schedules,
        }
    }
    status, body = await _post(sim, queries.SET_PREFERENCES, variables)
    assert status == 400
    assert "data" not in body
    [message] = _messages(body)
    # graphql-core words this (Kraken's server runs on it too); the exact sentence differs
    # between graphql-core 3.2 and 3.3, the parts below are in both.
    assert message.startswith("Variable '$input' ")
    assert "schedules[2]" in message
    assert "'max'" in message
    assert "required" in message


async def test_a_wrong_enum_value_is_refused(
    sim: tuple[RunningSimulator, aiohttp.ClientSession, str],
) -> None:
    variables = {"input": {"deviceId": DEFAULT_EV_ID, "action": "START"}}
    status, body = await _post(sim, queries.UPDATE_BOOST, variables)
    assert status == 400
    assert "data" not in body
    [message] = _messages(body)
    assert message.startswith("Variable '$input' ")
    assert "action" in message
    assert "Value 'START' does not exist in 'UpdateBoostChargeAction' enum." in message


async def test_an_enum_literal_that_does_not_exist_is_refused(
    sim: tuple[RunningSimulator, aiohttp.ClientSession, str],
) -> None:
    query = """mutation Smart($d: ID!) {
      updateDeviceSmartControl(input: {deviceId: $d, action: PAUSE}) { id }
    }"""
    status, body = await _post(sim, query, {"d": DEFAULT_EV_ID})
    assert status == 400
    [message] = _messages(body)
    assert message.startswith("Value 'PAUSE' does not exist in 'SmartControlAction' enum.")


async def test_the_live_documents_still_run(
    sim: tuple[RunningSimulator, aiohttp.ClientSession, str],
) -> None:
    variables = {
        "input": {
            "deviceId": DEFAULT_EV_ID,
            "mode": "CHARGE",
            "unit": "PERCENTAGE",
            "schedules": _schedules(),
        }
    }
    status, body = await _post(sim, queries.SET_PREFERENCES, variables)
    assert status == 200, body
    assert body["data"]["setDevicePreferences"] == {"id": DEFAULT_EV_ID}
    state = sim[0].state
    state.plug(state.device(DEFAULT_EV_ID), True)
    status, body = await _post(
        sim, queries.UPDATE_BOOST, {"input": {"deviceId": DEFAULT_EV_ID, "action": "BOOST"}}
    )
    assert status == 200, body
    assert body["data"]["updateBoostCharge"] == {"id": DEFAULT_EV_ID}


@pytest.mark.parametrize(
    ("value", "accepted"),
    [("80", True), (80, True), (79.5, True), ("eighty", False), (True, False), ("NaN", False)],
)
async def test_decimal_inputs_are_checked(
    sim: tuple[RunningSimulator, aiohttp.ClientSession, str], value: Any, accepted: bool
) -> None:
    variables = {
        "input": {
            "deviceId": DEFAULT_EV_ID,
            "mode": "CHARGE",
            "unit": "PERCENTAGE",
            "schedules": _schedules(max=value),
        }
    }
    status, body = await _post(sim, queries.SET_PREFERENCES, variables)
    assert (status == 200 and "errors" not in body) is accepted, body


@pytest.mark.parametrize(("value", "accepted"), [("07:30", True), ("7.30am", False), (730, False)])
async def test_time_inputs_are_checked(
    sim: tuple[RunningSimulator, aiohttp.ClientSession, str], value: Any, accepted: bool
) -> None:
    variables = {
        "input": {
            "deviceId": DEFAULT_EV_ID,
            "mode": "CHARGE",
            "unit": "PERCENTAGE",
            "schedules": _schedules(time=value),
        }
    }
    status, body = await _post(sim, queries.SET_PREFERENCES, variables)
    assert (status == 200 and "errors" not in body) is accepted, body
    if not accepted:
        assert status == 400
