"""The simulator's GraphQL endpoint over real loopback sockets: schema, auth, rate limit, mutations."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ioagent.simulator.control import ControlError, SimulatorControl
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_CHARGER_ID,
    DEFAULT_EV_ID,
    MIXED_ACCOUNT,
    SECOND_ACCOUNT,
    SECOND_API_KEY,
    SimulatorState,
)

LOGIN = """mutation Login($key: String, $refresh: String) {
  obtainKrakenToken(input: {APIKey: $key, refreshToken: $refresh}) {
    token refreshToken refreshExpiresIn
  }
}"""
DEVICES = """query Devices($account: String!) {
  devices(accountNumber: $account) {
    __typename id provider deviceType
    status { current currentState isSuspended }
    ... on SmartFlexVehicle { make model }
    ... on SmartFlexChargePoint { make model }
    preferences {
      mode
      ... on SmartFlexDevicePreferences {
        targetType unit isChargingDurationCapped
        schedules { dayOfWeek time min max upperLimit }
      }
    }
  }
}"""
PLANNED = """query Planned($device: String!) {
  flexPlannedDispatches(deviceId: $device) { start end type energyAddedKwh }
}"""
WINTER_EVENING = datetime(2026, 1, 12, 18, 7, 31, tzinfo=UTC)


class ManualClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Harness:
    sim: RunningSimulator
    clock: ManualClock
    http: aiohttp.ClientSession

    async def post(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": token} if token else {}
        async with self.http.post(
            self.sim.graphql_url, json={"query": query, "variables": variables}, headers=headers
        ) as response:
            return response.status, await response.json()

    async def login(self, key: str = DEFAULT_API_KEY) -> dict[str, Any]:
        status, body = await self.post(LOGIN, {"key": key})
        assert status == 200, body
        grant: dict[str, Any] = body["data"]["obtainKrakenToken"]
        return grant

    async def token(self, key: str = DEFAULT_API_KEY) -> str:
        return str((await self.login(key))["token"])


@pytest_asyncio.fixture
async def harness() -> AsyncIterator[Harness]:
    clock = ManualClock(WINTER_EVENING)
    state = SimulatorState.with_default_account(
        clock=clock, jwt_lifetime=timedelta(minutes=60), refresh_lifetime=timedelta(days=7)
    )
    async with run_simulator(state) as sim, aiohttp.ClientSession() as http:
        yield Harness(sim, clock, http)


def error_codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["errorCode"] for error in body.get("errors", [])]


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ('{ plannedDispatches(accountNumber: "A-SIM00001") { start } }', "plannedDispatches"),
        (
            '{ registeredKrakenflexDevice(accountNumber: "A-SIM00001") { krakenflexDeviceId } }',
            "registeredKrakenflexDevice",
        ),
    ],
)
async def test_removed_fields_are_rejected_with_http_400(
    harness: Harness, query: str, field: str
) -> None:
    status, body = await harness.post(query, token=await harness.token())
    assert status == 400
    assert "data" not in body
    assert body["errors"][0]["message"].startswith(f"Cannot query field '{field}' on type 'Query'.")


async def test_login_with_key_returns_a_jwt_with_expiry_and_an_absolute_refresh_expiry(
    harness: Harness,
) -> None:
    grant = await harness.login()
    claims = jwt_claims(grant["token"])
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["iat"] == int(WINTER_EVENING.timestamp())
    assert grant["refreshExpiresIn"] == int((WINTER_EVENING + timedelta(days=7)).timestamp())
    status, body = await harness.post("{ viewer { accounts { number } } }", token=grant["token"])
    assert status == 200
    assert body == {"data": {"viewer": {"accounts": [{"number": DEFAULT_ACCOUNT}]}}}


async def test_jwt_prefix_is_accepted(harness: Harness) -> None:
    token = await harness.token()
    status, body = await harness.post("{ viewer { accounts { number } } }", token=f"JWT {token}")
    assert (status, body["data"]["viewer"]["accounts"]) == (200, [{"number": DEFAULT_ACCOUNT}])


async def test_bad_api_key_fails_with_kt_ct_1139(harness: Harness) -> None:
    status, body = await harness.post(LOGIN, {"key": "sk_live_wrong"})
    assert status == 200
    assert body["data"] == {"obtainKrakenToken": None}
    assert error_codes(body) == ["KT-CT-1139"]
    assert body["errors"][0]["path"] == ["obtainKrakenToken"]


async def test_missing_and_garbage_tokens_are_refused(harness: Harness) -> None:
    _status, missing = await harness.post("{ viewer { accounts { number } } }")
    _status, garbage = await harness.post("{ viewer { accounts { number } } }", token="not-a-jwt")
    assert error_codes(missing) == ["KT-CT-1111"]
    assert error_codes(garbage) == ["KT-CT-1143"]


async def test_jwt_exp_is_honoured(harness: Harness) -> None:
    token = await harness.token()
    harness.clock.advance(minutes=59, seconds=59)
    _status, still_valid = await harness.post("{ viewer { accounts { number } } }", token=token)
    assert "errors" not in still_valid
    harness.clock.advance(seconds=1)
    status, expired = await harness.post("{ viewer { accounts { number } } }", token=token)
    assert status == 200
    assert error_codes(expired) == ["KT-CT-1124"]
    assert expired["data"] == {"viewer": None}


async def test_refresh_token_does_not_extend_and_expires(harness: Harness) -> None:
    first = await harness.login()
    harness.clock.advance(days=3)
    status, body = await harness.post(LOGIN, {"refresh": first["refreshToken"]})
    refreshed = body["data"]["obtainKrakenToken"]
    assert status == 200 and "errors" not in body
    assert refreshed["refreshExpiresIn"] == first["refreshExpiresIn"]
    assert jwt_claims(refreshed["token"])["iat"] == int(harness.clock.now.timestamp())
    harness.clock.advance(days=4)
    _status, expired = await harness.post(LOGIN, {"refresh": refreshed["refreshToken"]})
    assert error_codes(expired) == ["KT-CT-1134"]  # "The refresh token has expired."
    _status, relogin = await harness.post(LOGIN, {"key": DEFAULT_API_KEY})
    assert "errors" not in relogin


async def test_control_expiry_of_tokens(harness: Harness) -> None:
    grant = await harness.login()
    async with harness.http.post(harness.sim.control_url + "/tokens/expire", json={}) as resp:
        assert resp.status == 200
    _status, body = await harness.post("{ viewer { accounts { number } } }", token=grant["token"])
    assert error_codes(body) == ["KT-CT-1124"]
    _status, refreshed = await harness.post(LOGIN, {"refresh": grant["refreshToken"]})
    assert "errors" not in refreshed
    async with harness.http.post(
        harness.sim.control_url + "/tokens/expire", json={"refresh": True}
    ) as resp:
        assert resp.status == 200
    _status, refused = await harness.post(LOGIN, {"refresh": grant["refreshToken"]})
    assert error_codes(refused) == ["KT-CT-1134"]


async def test_sixth_planned_dispatch_query_within_a_minute_is_rate_limited(
    harness: Harness,
) -> None:
    token = await harness.token()
    for _ in range(5):
        _status, body = await harness.post(PLANNED, {"device": DEFAULT_EV_ID}, token)
        assert "errors" not in body
        harness.clock.advance(seconds=10)
    status, limited = await harness.post(PLANNED, {"device": DEFAULT_EV_ID}, token)
    assert status == 200
    assert error_codes(limited) == ["KT-CT-1199"]
    assert limited["errors"][0]["path"] == ["flexPlannedDispatches"]
    harness.clock.advance(seconds=10.5)  # the first call has left the rolling minute
    _status, again = await harness.post(PLANNED, {"device": DEFAULT_EV_ID}, token)
    assert "errors" not in again


async def test_rate_limit_is_per_account(harness: Harness) -> None:
    token, other = await harness.token(), await harness.token(SECOND_API_KEY)
    for _ in range(5):
        await harness.post(PLANNED, {"device": DEFAULT_EV_ID}, token)
    _status, body = await harness.post(PLANNED, {"device": DEFAULT_CHARGER_ID}, other)
    assert "errors" not in body


async def test_devices_shape_for_both_accounts(harness: Harness) -> None:
    _status, body = await harness.post(DEVICES, {"account": DEFAULT_ACCOUNT}, await harness.token())
    [ev] = body["data"]["devices"]
    assert ev["__typename"] == "SmartFlexVehicle"
    assert (ev["id"], ev["make"], ev["model"]) == (DEFAULT_EV_ID, "Tesla", "Model 3")
    assert ev["status"] == {
        "current": "LIVE",
        "currentState": "SMART_CONTROL_CAPABLE",
        "isSuspended": False,
    }
    prefs = ev["preferences"]
    assert (prefs["mode"], prefs["unit"], prefs["isChargingDurationCapped"]) == (
        "CHARGE",
        "PERCENTAGE",
        "ENABLED",
    )
    assert len(prefs["schedules"]) == 7
    assert prefs["schedules"][0] == {
        "dayOfWeek": "MONDAY",
        "time": "07:30:00",
        "min": None,
        "max": 80.0,
        "upperLimit": 100.0,
    }
    _status, other = await harness.post(
        DEVICES, {"account": SECOND_ACCOUNT}, await harness.token(SECOND_API_KEY)
    )
    assert [d["__typename"] for d in other["data"]["devices"]] == ["SmartFlexChargePoint"]


async def test_another_accounts_data_is_unauthorized(harness: Harness) -> None:
    token = await harness.token()
    _status, devices = await harness.post(DEVICES, {"account": SECOND_ACCOUNT}, token)
    _status, planned = await harness.post(PLANNED, {"device": DEFAULT_CHARGER_ID}, token)
    assert error_codes(devices) == ["KT-CT-1111"]
    assert error_codes(planned) == ["KT-CT-4313"]


VIEWER = "{ viewer { accounts { number } } }"


async def test_a_key_can_see_several_accounts(harness: Harness) -> None:
    before = await harness.token()
    async with SimulatorControl(harness.sim.control_url) as control:
        seen = await control.add_account(SECOND_ACCOUNT, DEFAULT_API_KEY)
    assert seen == [DEFAULT_ACCOUNT, SECOND_ACCOUNT]
    token = await harness.token()
    assert jwt_claims(token)["accounts"] == [DEFAULT_ACCOUNT, SECOND_ACCOUNT]
    _status, viewer = await harness.post(VIEWER, token=token)
    assert viewer["data"]["viewer"]["accounts"] == [
        {"number": DEFAULT_ACCOUNT},
        {"number": SECOND_ACCOUNT},
    ]
    for account, device in ((DEFAULT_ACCOUNT, DEFAULT_EV_ID), (SECOND_ACCOUNT, DEFAULT_CHARGER_ID)):
        _status, devices = await harness.post(DEVICES, {"account": account}, token)
        assert [d["id"] for d in devices["data"]["devices"]] == [device]
        _status, planned = await harness.post(PLANNED, {"device": device}, token)
        assert planned == {"data": {"flexPlannedDispatches": []}}
    # A token keeps the accounts its key saw at login; the other key is unchanged.
    _status, old = await harness.post(VIEWER, token=before)
    assert old["data"]["viewer"]["accounts"] == [{"number": DEFAULT_ACCOUNT}]
    _status, other = await harness.post(VIEWER, token=await harness.token(SECOND_API_KEY))
    assert other["data"]["viewer"]["accounts"] == [{"number": SECOND_ACCOUNT}]


async def test_control_adds_an_account_with_a_new_key(harness: Harness) -> None:
    new_key = "sk_test_ioagent_simulator_family"
    async with SimulatorControl(harness.sim.control_url) as control:
        assert await control.add_account("A-SIM00003", new_key) == ["A-SIM00003"]
        assert await control.add_account(DEFAULT_ACCOUNT, new_key) == [
            DEFAULT_ACCOUNT,
            "A-SIM00003",
        ]
        with pytest.raises(ControlError) as caught:
            await control.add_account(DEFAULT_ACCOUNT, "")
        assert caught.value.status == 400
        snapshot = await control.state()
    assert new_key not in json.dumps(snapshot)
    assert [a["number"] for a in snapshot["accounts"]] == [
        DEFAULT_ACCOUNT,
        SECOND_ACCOUNT,
        MIXED_ACCOUNT,
        "A-SIM00003",
    ]
    _status, viewer = await harness.post(VIEWER, token=await harness.token(new_key))
    assert viewer["data"]["viewer"]["accounts"] == [
        {"number": DEFAULT_ACCOUNT},
        {"number": "A-SIM00003"},
    ]
    _status, devices = await harness.post(
        DEVICES, {"account": "A-SIM00003"}, await harness.token(new_key)
    )
    assert devices == {"data": {"devices": []}}


async def test_plug_in_produces_a_smart_plan_on_the_wire(harness: Harness) -> None:
    async with harness.http.post(
        harness.sim.control_url + "/plug", json={"device_id": DEFAULT_EV_ID, "plugged": True}
    ) as resp:
        assert resp.status == 200
    _status, body = await harness.post(PLANNED, {"device": DEFAULT_EV_ID}, await harness.token())
    plan = body["data"]["flexPlannedDispatches"]
    assert plan[0]["start"] == "2026-01-12T18:08:00+00:00"
    assert {slot["type"] for slot in plan} == {"SMART"}
    starts = [datetime.fromisoformat(slot["start"]) for slot in plan]
    assert starts == sorted(starts)
    # 30 % -> 80 % of 60 kWh, as decimal strings
    assert sum(float(slot["energyAddedKwh"]) for slot in plan) == pytest.approx(30.0, abs=0.01)
    assert all(isinstance(slot["energyAddedKwh"], str) for slot in plan)


SET_PREFS = """mutation Prefs($input: SmartFlexDevicePreferencesInput!) {
  setDevicePreferences(input: $input) { id }
}"""


def week(time_text: str = "06:00", target: float = 90) -> list[dict[str, Any]]:
    days = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")
    return [{"dayOfWeek": day, "time": time_text, "max": target} for day in days]


async def test_set_device_preferences_changes_schedules_and_replans(harness: Harness) -> None:
    token = await harness.token()
    device = harness.sim.state.devices[DEFAULT_EV_ID]
    harness.sim.state.plug(device, True)
    before = list(device.planned)
    variables = {
        "input": {
            "deviceId": DEFAULT_EV_ID,
            "mode": "CHARGE",
            "unit": "PERCENTAGE",
            "schedules": week(),
        }
    }
    status, body = await harness.post(SET_PREFS, variables, token)
    assert (status, body) == (200, {"data": {"setDevicePreferences": {"id": DEFAULT_EV_ID}}})
    _status, devices = await harness.post(DEVICES, {"account": DEFAULT_ACCOUNT}, token)
    schedules = devices["data"]["devices"][0]["preferences"]["schedules"]
    assert {(s["time"], s["max"]) for s in schedules} == {("06:00:00", 90.0)}
    assert device.planned != before
    assert sum(d.kwh or 0 for d in device.planned) == pytest.approx(36.0, abs=0.01)
    assert max(d.end for d in device.planned) <= datetime(2026, 1, 13, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedules", "bad_path"),
    [
        (week()[:6], ["input", "schedules"]),
        (week(target=5), ["input", "schedules", 0, "max"]),
        (week(time_text="12:00"), ["input", "schedules", 0, "time"]),
        (week(time_text="03:30"), ["input", "schedules", 0, "time"]),
    ],
)
async def test_set_device_preferences_validation(
    harness: Harness, schedules: list[dict[str, Any]], bad_path: list[Any]
) -> None:
    variables = {
        "input": {
            "deviceId": DEFAULT_EV_ID,
            "mode": "CHARGE",
            "unit": "PERCENTAGE",
            "schedules": schedules,
        }
    }
    _status, body = await harness.post(SET_PREFS, variables, await harness.token())
    assert error_codes(body) == ["KT-CT-4321"]
    assert body["errors"][0]["extensions"]["validationErrors"][0]["inputPath"] == bad_path
    prefs = harness.sim.state.devices[DEFAULT_EV_ID].preferences
    assert {s.max for s in prefs.schedules} == {80.0}


BOOST = """mutation Boost($device: String!, $action: UpdateBoostChargeAction!) {
  updateBoostCharge(input: {deviceId: $device, action: $action}) { id status { currentState } }
}"""
SMART_CONTROL = """mutation Smart($device: ID!, $action: SmartControlAction!) {
  updateDeviceSmartControl(input: {deviceId: $device, action: $action}) {
    id status { currentState isSuspended }
  }
}"""


async def test_boost_refused_while_unplugged(harness: Harness) -> None:
    _status, body = await harness.post(
        BOOST, {"device": DEFAULT_EV_ID, "action": "BOOST"}, await harness.token()
    )
    assert error_codes(body) == ["KT-CT-4357"]
    assert body["errors"][0]["extensions"]["boostChargeRefusalReasons"] == [
        "BC_DEVICE_DISCONNECTED"
    ]


async def test_boost_and_cancel(harness: Harness) -> None:
    token = await harness.token()
    state = harness.sim.state
    state.plug(state.devices[DEFAULT_EV_ID], True)
    _status, body = await harness.post(BOOST, {"device": DEFAULT_EV_ID, "action": "BOOST"}, token)
    assert body["data"]["updateBoostCharge"]["status"]["currentState"] == "BOOSTING"
    _status, planned = await harness.post(PLANNED, {"device": DEFAULT_EV_ID}, token)
    [boost] = planned["data"]["flexPlannedDispatches"]
    assert boost["type"] == "BOOST"
    assert datetime.fromisoformat(boost["start"]) == WINTER_EVENING
    assert boost["start"] == "2026-01-12T18:07:31+00:00"
    _status, again = await harness.post(BOOST, {"device": DEFAULT_EV_ID, "action": "BOOST"}, token)
    assert again["errors"][0]["extensions"]["boostChargeRefusalReasons"] == [
        "BC_BOOST_CHARGE_IN_PROGRESS"
    ]
    harness.clock.advance(minutes=20)
    _status, cancelled = await harness.post(
        BOOST, {"device": DEFAULT_EV_ID, "action": "CANCEL"}, token
    )
    assert (
        cancelled["data"]["updateBoostCharge"]["status"]["currentState"] == "SMART_CONTROL_CAPABLE"
    )
    types = {d.type for d in state.devices[DEFAULT_EV_ID].planned}
    assert types == {"SMART"}  # re-planned after the cancelled boost
    [bump] = state.completed
    # Completed records carry no source on the live API, a cancelled boost's included.
    assert (bump.source, bump.kwh) == (None, pytest.approx(7.0 * 20 / 60, abs=0.01))


async def test_suspend_and_unsuspend(harness: Harness) -> None:
    token = await harness.token()
    state = harness.sim.state
    device = state.devices[DEFAULT_EV_ID]
    state.plug(device, True)
    assert device.planned
    _status, body = await harness.post(
        SMART_CONTROL, {"device": DEFAULT_EV_ID, "action": "SUSPEND"}, token
    )
    assert body["data"]["updateDeviceSmartControl"]["status"] == {
        "currentState": "SMART_CONTROL_OFF",
        "isSuspended": True,
    }
    assert device.planned == []
    _status, refused = await harness.post(
        BOOST, {"device": DEFAULT_EV_ID, "action": "BOOST"}, token
    )
    assert refused["errors"][0]["extensions"]["boostChargeRefusalReasons"] == [
        "BC_DEVICE_SUSPENDED"
    ]
    _status, body = await harness.post(
        SMART_CONTROL, {"device": DEFAULT_EV_ID, "action": "UNSUSPEND"}, token
    )
    assert body["data"]["updateDeviceSmartControl"]["status"] == {
        "currentState": "SMART_CONTROL_CAPABLE",
        "isSuspended": False,
    }
    assert {d.type for d in device.planned} == {"SMART"}


async def test_calls_are_counted_per_top_level_field(harness: Harness) -> None:
    token = await harness.token()
    query = """query Both($account: String!, $device: String!) {
      devices(accountNumber: $account) { id }
      flexPlannedDispatches(deviceId: $device) { start }
      completedDispatches(accountNumber: $account) { start }
    }"""
    await harness.post(query, {"account": DEFAULT_ACCOUNT, "device": DEFAULT_EV_ID}, token)
    async with harness.http.get(harness.sim.control_url + "/calls") as resp:
        calls = await resp.json()
    assert calls["total"] == 2
    assert calls["by_operation"] == {
        "obtainKrakenToken": 1,
        "devices": 1,
        "flexPlannedDispatches": 1,
        "completedDispatches": 1,
    }
    assert calls["by_account"] == {DEFAULT_ACCOUNT: 2}
    assert calls["log"][-1]["operations"] == [
        "devices",
        "flexPlannedDispatches",
        "completedDispatches",
    ]
    assert calls["log"][-1]["status"] == 200
    async with harness.http.post(harness.sim.control_url + "/calls/reset") as resp:
        assert resp.status == 200
    async with harness.http.get(harness.sim.control_url + "/calls") as resp:
        assert (await resp.json())["total"] == 0
