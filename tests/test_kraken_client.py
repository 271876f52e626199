"""KrakenClient against the simulator over real loopback sockets: reads, poll, faults, commands."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import time, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from pydantic import SecretStr
from structlog.testing import capture_logs

from ioagent.kraken import queries
from ioagent.kraken.client import (
    COMPLETED_PART,
    DEVICES_PART,
    KrakenClient,
    planned_part,
)
from ioagent.kraken.errors import (
    AccountError,
    ApiChanged,
    AuthFailed,
    CommandRefused,
    RateLimited,
    TransientError,
)
from ioagent.kraken.types import AT_HOME, BOOST, DAYS_OF_WEEK, SMART, SOURCE_BUMP
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_CHARGER_ID,
    DEFAULT_EV_ID,
    SECOND_ACCOUNT,
    SimSchedule,
)
from tests.clocks import suite_now


async def control(sim: RunningSimulator, path: str, body: Any = None) -> Any:
    """Call the simulator's control API (POST with a body, GET without)."""
    async with aiohttp.ClientSession() as session:
        method = "GET" if body is None else "POST"
        async with session.request(method, f"{sim.control_url}/{path}", json=body) as response:
            assert response.status == 200, await response.text()
            return await response.json()


async def calls(sim: RunningSimulator) -> dict[str, Any]:
    result: dict[str, Any] = await control(sim, "calls")
    return result


@pytest_asyncio.fixture
async def client(simulator: RunningSimulator) -> AsyncIterator[KrakenClient]:
    async with KrakenClient(
        simulator.graphql_url, SecretStr(DEFAULT_API_KEY), read_timeout=5.0
    ) as instance:
        yield instance


async def test_login_and_account_discovery(
    simulator: RunningSimulator, client: KrakenClient
) -> None:
    assert await client.accounts() == [DEFAULT_ACCOUNT]
    assert await client.discover_account(None) == DEFAULT_ACCOUNT
    assert await client.discover_account(DEFAULT_ACCOUNT) == DEFAULT_ACCOUNT
    with pytest.raises(AccountError, match=DEFAULT_ACCOUNT):
        await client.discover_account(SECOND_ACCOUNT)
    counted = await calls(simulator)
    # One login serves every later request.
    assert counted["by_operation"]["obtainKrakenToken"] == 1
    assert counted["by_operation"]["viewer"] == 4


async def test_login_result_repr_hides_the_tokens(client: KrakenClient) -> None:
    result = await client.transport.execute(
        queries.OBTAIN_TOKEN, {"input": {"APIKey": DEFAULT_API_KEY}}, authenticated=False
    )
    payload = result.require("obtainKrakenToken")
    secrets = [payload["token"], payload["refreshToken"]]
    assert all(isinstance(secret, str) and len(secret) > 20 for secret in secrets)
    shown = [repr(result), str(result), f"{result!r}", repr([result]), repr({"r": result})]
    for text in shown:
        assert "obtainKrakenToken" in text
        for secret in secrets:
            assert secret not in text
        # A JWT's signature alone is secret too.
        assert payload["token"].rsplit(".", 1)[-1] not in text


async def test_discovery_with_a_key_that_sees_several_accounts(
    simulator: RunningSimulator, client: KrakenClient
) -> None:
    shared = await control(
        simulator, "accounts", {"number": SECOND_ACCOUNT, "api_key": DEFAULT_API_KEY}
    )
    assert shared["accounts"] == [DEFAULT_ACCOUNT, SECOND_ACCOUNT]
    assert await client.accounts() == [DEFAULT_ACCOUNT, SECOND_ACCOUNT]
    with pytest.raises(AccountError) as caught:
        await client.discover_account(None)
    message = str(caught.value)
    assert f"({DEFAULT_ACCOUNT}, {SECOND_ACCOUNT})" in message
    assert "octopus.account_number" in message
    assert DEFAULT_API_KEY not in message
    # Naming one of them works, and its devices are readable with the same key.
    assert await client.discover_account(SECOND_ACCOUNT) == SECOND_ACCOUNT
    assert [d.id for d in await client.devices(SECOND_ACCOUNT)] == [DEFAULT_CHARGER_ID]


async def test_bad_api_key_is_auth_failed(simulator: RunningSimulator) -> None:
    async with KrakenClient(simulator.graphql_url, SecretStr("sk_test_wrong_key_123")) as bad:
        with pytest.raises(AuthFailed) as caught:
            await bad.accounts()
    assert caught.value.code == "KT-CT-1139"
    assert "sk_test_wrong_key_123" not in str(caught.value)


async def test_devices_with_preferences_and_status(client: KrakenClient) -> None:
    devices = await client.devices(DEFAULT_ACCOUNT)
    assert [d.id for d in devices] == [DEFAULT_EV_ID]
    ev = devices[0]
    assert (ev.make, ev.model, ev.typename) == ("Tesla", "Model 3", "SmartFlexVehicle")
    assert ev.is_live
    assert ev.current_state == "SMART_CONTROL_CAPABLE"
    assert ev.is_suspended is False
    assert ev.preferences is not None
    assert ev.preferences.charging_duration_capped == "ENABLED"
    assert [(s.day_of_week, s.time, s.max) for s in ev.preferences.schedules] == [
        (day, time(7, 30), 80.0) for day in DAYS_OF_WEEK
    ]
    assert await client.preferences(DEFAULT_ACCOUNT, DEFAULT_EV_ID) == ev.preferences


async def test_planned_dispatches_with_odd_times(
    simulator: RunningSimulator, client: KrakenClient
) -> None:
    assert await client.planned_dispatches(DEFAULT_EV_ID) == []
    start = suite_now().replace(microsecond=0) + timedelta(hours=2, seconds=11)
    await control(
        simulator,
        "dispatches",
        {
            "device_id": DEFAULT_EV_ID,
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=1, seconds=16)).isoformat(),
            "type": "SMART",
            "kwh": 0.15,
        },
    )
    plan = await client.planned_dispatches(DEFAULT_EV_ID)
    assert len(plan) == 1
    assert plan[0].start == start
    assert plan[0].end == start + timedelta(minutes=1, seconds=16)
    assert (plan[0].type, plan[0].kwh, plan[0].device_id) == (SMART, 0.15, DEFAULT_EV_ID)


async def test_plug_in_creates_a_smart_plan(
    simulator: RunningSimulator, client: KrakenClient
) -> None:
    await control(simulator, "plug", {"device_id": DEFAULT_EV_ID, "plugged": True})
    plan = await client.planned_dispatches(DEFAULT_EV_ID)
    assert plan, "plugging in should make the simulator plan smart slots"
    assert {d.type for d in plan} == {SMART}
    assert all(a.start <= b.start for a, b in itertools.pairwise(plan))


async def test_completed_dispatches(simulator: RunningSimulator, client: KrakenClient) -> None:
    end = suite_now().replace(second=0, microsecond=0) - timedelta(hours=1)
    for offset, source in ((timedelta(hours=2), "smart-charge"), (timedelta(0), SOURCE_BUMP)):
        await control(
            simulator,
            "completed",
            {
                "account": DEFAULT_ACCOUNT,
                "start": (end - offset - timedelta(minutes=30)).isoformat(),
                "end": (end - offset).isoformat(),
                "kwh": 3.37,
                "source": source,
                "location": AT_HOME,
            },
        )
    completed = await client.completed_dispatches(DEFAULT_ACCOUNT)
    assert [(c.end, c.type, c.location, c.kwh) for c in completed] == [
        (end - timedelta(hours=2), SMART, AT_HOME, 3.37),
        (end, BOOST, AT_HOME, 3.37),
    ]


async def test_poll_is_one_request(simulator: RunningSimulator, client: KrakenClient) -> None:
    await client.login()
    await control(simulator, "plug", {"device_id": DEFAULT_EV_ID, "plugged": True})
    before = (await calls(simulator))["total"]
    result = await client.poll(DEFAULT_ACCOUNT, [DEFAULT_EV_ID])
    after = await calls(simulator)
    assert after["total"] == before + 1
    assert set(after["log"][-1]["operations"]) == {
        "devices",
        "flexPlannedDispatches",
        "completedDispatches",
    }
    assert result.complete and result.errors == {}
    assert result.devices is not None and [d.id for d in result.devices] == [DEFAULT_EV_ID]
    assert result.planned[DEFAULT_EV_ID] == await client.planned_dispatches(DEFAULT_EV_ID)
    assert result.completed == []


@pytest.mark.parametrize(
    ("kind", "code"), [("http_500", 500), ("http_502", 502), ("http_504", 504), ("html_403", 403)]
)
async def test_http_faults_are_transient(
    simulator: RunningSimulator, client: KrakenClient, kind: str, code: int
) -> None:
    await client.login()
    await control(simulator, "faults", {"kind": kind, "count": 1})
    with pytest.raises(TransientError) as caught:
        await client.poll(DEFAULT_ACCOUNT, [DEFAULT_EV_ID])
    assert caught.value.code == code
    # The fault was used up; the next request works.
    assert (await client.poll(DEFAULT_ACCOUNT, [DEFAULT_EV_ID])).complete


async def test_timeout_is_transient(simulator: RunningSimulator) -> None:
    async with KrakenClient(
        simulator.graphql_url, SecretStr(DEFAULT_API_KEY), read_timeout=0.3
    ) as impatient:
        await impatient.login()
        await control(simulator, "faults", {"kind": "timeout", "count": 1, "delay": 3})
        with pytest.raises(TransientError) as caught:
            await impatient.devices(DEFAULT_ACCOUNT)
    assert caught.value.code == "timeout"


async def test_rate_limit(simulator: RunningSimulator, client: KrakenClient) -> None:
    await client.login()
    await control(simulator, "faults", {"kind": "rate_limit", "count": 1})
    with pytest.raises(RateLimited) as caught:
        await client.poll(DEFAULT_ACCOUNT, [DEFAULT_EV_ID])
    assert caught.value.code == "KT-CT-1199"


async def test_real_rate_limit_on_planned_dispatches_keeps_other_parts(
    client: KrakenClient,
) -> None:
    for _ in range(5):
        await client.planned_dispatches(DEFAULT_EV_ID)
    result = await client.poll(DEFAULT_ACCOUNT, [DEFAULT_EV_ID])
    assert result.planned == {DEFAULT_EV_ID: None}
    assert isinstance(result.errors[planned_part(DEFAULT_EV_ID)], RateLimited)
    assert result.devices is not None and result.completed == []


@pytest.mark.parametrize(("kind", "code"), [("kt_4340", "KT-CT-4340"), ("partial", "KT-CT-7899")])
async def test_planned_field_error_keeps_the_rest(
    simulator: RunningSimulator, client: KrakenClient, kind: str, code: str
) -> None:
    await control(simulator, "faults", {"kind": kind, "count": 1})
    result = await client.poll(DEFAULT_ACCOUNT, [DEFAULT_EV_ID])
    assert result.planned == {DEFAULT_EV_ID: None}
    error = result.errors[planned_part(DEFAULT_EV_ID)]
    assert isinstance(error, TransientError) and error.code == code
    assert DEVICES_PART not in result.errors and COMPLETED_PART not in result.errors
    assert result.devices is not None and result.devices[0].id == DEFAULT_EV_ID
    assert result.completed == []


async def test_field_error_on_planned_dispatches_alone_raises(
    simulator: RunningSimulator, client: KrakenClient
) -> None:
    await control(simulator, "faults", {"kind": "kt_4340", "count": 1})
    with pytest.raises(TransientError) as caught:
        await client.planned_dispatches(DEFAULT_EV_ID)
    assert caught.value.code == "KT-CT-4340"


async def test_schema_400_is_api_changed(simulator: RunningSimulator, client: KrakenClient) -> None:
    await client.login()
    await control(simulator, "faults", {"kind": "schema_400", "count": 1})
    with pytest.raises(ApiChanged) as caught:
        await client.devices(DEFAULT_ACCOUNT)
    assert caught.value.code == 400
    assert caught.value.field is not None


async def test_removed_field_is_rejected_by_schema(client: KrakenClient) -> None:
    with pytest.raises(ApiChanged) as caught:
        await client.transport.execute(
            "query Old($account: String!) { plannedDispatches(accountNumber: $account) { start } }",
            {"account": DEFAULT_ACCOUNT},
        )
    assert caught.value.field == "plannedDispatches"
    assert "plannedDispatches" in str(caught.value)


async def test_auth_error_reauthenticates_once_and_retries(
    simulator: RunningSimulator, client: KrakenClient
) -> None:
    await client.login()
    await control(simulator, "faults", {"kind": "auth_error", "count": 1})
    devices = await client.devices(DEFAULT_ACCOUNT)
    assert [d.id for d in devices] == [DEFAULT_EV_ID]
    counted = await calls(simulator)
    assert counted["by_operation"]["obtainKrakenToken"] == 2
    assert counted["by_operation"]["devices"] == 2


async def test_auth_error_twice_gives_up_after_one_retry(
    simulator: RunningSimulator, client: KrakenClient
) -> None:
    await client.login()
    await control(simulator, "faults", {"kind": "auth_error", "count": 3})
    with pytest.raises(TransientError) as caught:
        await client.devices(DEFAULT_ACCOUNT)
    assert caught.value.code == "KT-CT-1124"
    assert (await calls(simulator))["by_operation"]["devices"] == 2


async def test_unknown_enum_value_from_the_api(
    simulator: RunningSimulator, client: KrakenClient
) -> None:
    state = f"LEVITATING_{uuid.uuid4().hex[:6].upper()}"
    simulator.state.devices[DEFAULT_EV_ID].current_state = state
    with capture_logs() as logs:
        result = await client.poll(DEFAULT_ACCOUNT, [DEFAULT_EV_ID])
    assert result.devices is not None and result.devices[0].current_state == state
    assert [e["value"] for e in logs if e["event"] == "kraken_unexpected_value"] == [state]


async def test_unreachable_api_is_transient() -> None:
    async with KrakenClient(
        "http://127.0.0.1:9/v1/graphql/", SecretStr(DEFAULT_API_KEY), connect_timeout=2.0
    ) as unreachable:
        with pytest.raises(TransientError) as caught:
            await unreachable.accounts()
    assert caught.value.code == "connection"


# --- commands ------------------------------------------------------------------------------


async def _sim_device(simulator: RunningSimulator) -> dict[str, Any]:
    state = await control(simulator, "state")
    return next(d for d in state["devices"] if d["id"] == DEFAULT_EV_ID)


# A distinct ready-by time and target on every day, so that a write copying one day's values to
# the others cannot pass.
WEEK = [
    SimSchedule(day, time(4 + index, 30 if index % 2 else 0), 50.0 + 5 * index)
    for index, day in enumerate(DAYS_OF_WEEK)
]


async def _distinct_week(simulator: RunningSimulator) -> list[dict[str, Any]]:
    """Give the car the WEEK schedules; returns them as the simulator reports them."""
    simulator.state.devices[DEFAULT_EV_ID].preferences.schedules = [replace(s) for s in WEEK]
    schedules: list[dict[str, Any]] = (await _sim_device(simulator))["preferences"]["schedules"]
    assert len({(s["time"], s["max"]) for s in schedules}) == 7
    return schedules


async def test_set_target_soc_writes_all_seven_days(
    simulator: RunningSimulator, client: KrakenClient
) -> None:
    before = await _distinct_week(simulator)
    await client.set_target_soc(DEFAULT_ACCOUNT, DEFAULT_EV_ID, 90)
    schedules = (await _sim_device(simulator))["preferences"]["schedules"]
    assert schedules == [{**day, "max": 90.0} for day in before]
    preferences = await client.preferences(DEFAULT_ACCOUNT, DEFAULT_EV_ID)
    assert [
        (preferences.ready_by_for(s.day_of_week), preferences.target_soc_for(s.day_of_week))
        for s in WEEK
    ] == [(s.time, 90.0) for s in WEEK]


async def test_set_ready_by_keeps_each_days_target(
    simulator: RunningSimulator, client: KrakenClient
) -> None:
    before = await _distinct_week(simulator)
    await client.set_ready_by(DEFAULT_ACCOUNT, DEFAULT_EV_ID, time(8, 30))
    schedules = (await _sim_device(simulator))["preferences"]["schedules"]
    assert schedules == [{**day, "time": "08:30:00"} for day in before]
    preferences = await client.preferences(DEFAULT_ACCOUNT, DEFAULT_EV_ID)
    assert [
        (preferences.ready_by_for(s.day_of_week), preferences.target_soc_for(s.day_of_week))
        for s in WEEK
    ] == [(time(8, 30), s.max) for s in WEEK]


async def test_invalid_target_is_refused(client: KrakenClient) -> None:
    with pytest.raises(CommandRefused) as caught:
        await client.set_target_soc(DEFAULT_ACCOUNT, DEFAULT_EV_ID, 5)
    assert caught.value.code == "KT-CT-4321"


async def test_boost_unplugged_is_refused_with_reasons(client: KrakenClient) -> None:
    with pytest.raises(CommandRefused) as caught:
        await client.boost(DEFAULT_EV_ID)
    assert caught.value.code == "KT-CT-4357"
    assert "BC_DEVICE_DISCONNECTED" in caught.value.reasons


async def test_boost_and_cancel(simulator: RunningSimulator, client: KrakenClient) -> None:
    await control(simulator, "plug", {"device_id": DEFAULT_EV_ID, "plugged": True})
    await client.boost(DEFAULT_EV_ID)
    device = await _sim_device(simulator)
    assert device["current_state"] == "BOOSTING"
    assert [p["type"] for p in device["planned"]] == [BOOST]
    await client.cancel_boost(DEFAULT_EV_ID)
    device = await _sim_device(simulator)
    assert device["current_state"] != "BOOSTING"
    assert BOOST not in {p["type"] for p in device["planned"]}


async def test_suspend_and_unsuspend(simulator: RunningSimulator, client: KrakenClient) -> None:
    await client.suspend(DEFAULT_EV_ID)
    device = await _sim_device(simulator)
    assert (device["is_suspended"], device["current_state"]) == (True, "SMART_CONTROL_OFF")
    with pytest.raises(CommandRefused) as caught:
        await client.boost(DEFAULT_EV_ID)
    assert "BC_DEVICE_SUSPENDED" in caught.value.reasons
    await client.unsuspend(DEFAULT_EV_ID)
    device = await _sim_device(simulator)
    assert (device["is_suspended"], device["current_state"]) == (False, "SMART_CONTROL_CAPABLE")


async def test_command_on_unknown_device_is_refused(client: KrakenClient) -> None:
    with pytest.raises(CommandRefused) as caught:
        await client.suspend("no-such-device")
    assert caught.value.code == "KT-CT-4313"
