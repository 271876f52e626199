"""Each queued fault kind's wire shape, as a client sees it over a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ioagent.simulator.control import ControlError, SimulatorControl
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_API_KEY, DEFAULT_EV_ID

LOGIN = "mutation($key: String) { obtainKrakenToken(input: {APIKey: $key}) { token } }"
BOTH = """query($account: String!, $device: String!) {
  devices(accountNumber: $account) { id }
  flexPlannedDispatches(deviceId: $device) { start end type energyAddedKwh }
}"""
ALL_THREE = """query($account: String!, $device: String!) {
  devices(accountNumber: $account) { id }
  flexPlannedDispatches(deviceId: $device) { start }
  completedDispatches(accountNumber: $account) { start delta }
}"""
VARIABLES = {"account": DEFAULT_ACCOUNT, "device": DEFAULT_EV_ID}


@dataclass
class Client:
    sim: RunningSimulator
    http: aiohttp.ClientSession
    control: SimulatorControl
    token: str

    async def raw(
        self, query: str, variables: dict[str, Any] | None = None
    ) -> tuple[int, str, str]:
        async with self.http.post(
            self.sim.graphql_url,
            json={"query": query, "variables": variables},
            headers={"Authorization": self.token},
        ) as response:
            return response.status, response.content_type, await response.text()

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        async with self.http.post(
            self.sim.graphql_url,
            json={"query": query, "variables": variables},
            headers={"Authorization": self.token},
        ) as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
            return body


@pytest_asyncio.fixture
async def client(simulator: RunningSimulator) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as http, SimulatorControl(simulator.control_url) as control:
        async with http.post(
            simulator.graphql_url, json={"query": LOGIN, "variables": {"key": DEFAULT_API_KEY}}
        ) as response:
            token = (await response.json())["data"]["obtainKrakenToken"]["token"]
        yield Client(simulator, http, control, token)


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["errorCode"] for error in body.get("errors", [])]


@pytest.mark.parametrize("status", [500, 502, 504])
async def test_http_status_faults(client: Client, status: int) -> None:
    await client.control.add_fault(f"http_{status}")
    got, content_type, text = await client.raw(BOTH, VARIABLES)
    assert (got, content_type) == (status, "text/html")
    assert str(status) in text
    body = await client.post(BOTH, VARIABLES)
    assert "errors" not in body  # one request only


async def test_html_403_is_an_html_page(client: Client) -> None:
    await client.control.add_fault("html_403")
    status, content_type, text = await client.raw(BOTH, VARIABLES)
    assert (status, content_type) == (403, "text/html")
    assert text.startswith("<!DOCTYPE html>")


async def test_schema_400_looks_like_a_removed_field(client: Client) -> None:
    await client.control.add_fault("schema_400")
    async with client.http.post(
        client.sim.graphql_url,
        json={"query": BOTH, "variables": VARIABLES},
        headers={"Authorization": client.token},
    ) as response:
        assert response.status == 400
        body = await response.json()
    assert body["errors"][0]["message"].startswith("Cannot query field ")


async def test_rate_limit_fault_errors_every_field_with_http_200(client: Client) -> None:
    await client.control.add_fault("rate_limit")
    body = await client.post(BOTH, VARIABLES)
    assert body["data"] == {"devices": None, "flexPlannedDispatches": None}
    assert codes(body) == ["KT-CT-1199", "KT-CT-1199"]
    assert sorted(e["path"][0] for e in body["errors"]) == ["devices", "flexPlannedDispatches"]


async def test_kt_4340_keeps_other_fields(client: Client) -> None:
    await client.control.add_fault("kt_4340", count=2)
    for _ in range(2):
        body = await client.post(BOTH, VARIABLES)
        assert body["data"] == {"devices": [{"id": DEFAULT_EV_ID}], "flexPlannedDispatches": None}
        assert codes(body) == ["KT-CT-4340"]
        assert body["errors"][0]["path"] == ["flexPlannedDispatches"]
    assert "errors" not in await client.post(BOTH, VARIABLES)


async def test_field_faults_wait_for_a_request_with_their_field(client: Client) -> None:
    await client.control.add_fault("kt_4340")
    devices_only = await client.post(
        "query($a: String!) { devices(accountNumber: $a) { id } }", {"a": DEFAULT_ACCOUNT}
    )
    assert "errors" not in devices_only
    assert codes(await client.post(BOTH, VARIABLES)) == ["KT-CT-4340"]


async def test_partial_fails_one_field_with_an_internal_error(client: Client) -> None:
    await client.control.add_fault("partial", field="completedDispatches")
    body = await client.post(ALL_THREE, VARIABLES)
    assert codes(body) == ["KT-CT-7899"]
    assert body["errors"][0]["path"] == ["completedDispatches"]
    assert body["data"]["devices"] == [{"id": DEFAULT_EV_ID}]
    assert body["data"]["flexPlannedDispatches"] == []
    assert body["data"]["completedDispatches"] is None


async def test_auth_error_fault_is_an_expired_signature(client: Client) -> None:
    await client.control.add_fault("auth_error")
    body = await client.post(BOTH, VARIABLES)
    assert codes(body) == ["KT-CT-1124", "KT-CT-1124"]


async def test_faults_spare_login_unless_include_auth(client: Client) -> None:
    await client.control.add_fault("http_502")
    status, _type, _text = await client.raw(LOGIN, {"key": DEFAULT_API_KEY})
    assert status == 200
    status, _type, _text = await client.raw(BOTH, VARIABLES)
    assert status == 502
    await client.control.add_fault("rate_limit", include_auth=True)
    login = await client.post(LOGIN, {"key": DEFAULT_API_KEY})
    assert codes(login) == ["KT-CT-1199"]


async def test_timeout_delays_the_answer(client: Client) -> None:
    await client.control.add_fault("timeout", delay=0.5)
    with pytest.raises(asyncio.TimeoutError):
        async with client.http.post(
            client.sim.graphql_url,
            json={"query": BOTH, "variables": VARIABLES},
            headers={"Authorization": client.token},
            timeout=aiohttp.ClientTimeout(total=0.1),
        ) as response:
            await response.read()
    assert "errors" not in await client.post(BOTH, VARIABLES)


async def test_clear_faults_and_bad_kinds(client: Client) -> None:
    await client.control.add_fault("http_500", count=3)
    assert [f["kind"] for f in (await client.control.state())["faults"]] == ["http_500"]
    await client.control.clear_faults()
    assert "errors" not in await client.post(BOTH, VARIABLES)
    with pytest.raises(ControlError) as refused:
        await client.control.add_fault("gremlins")
    assert refused.value.status == 400


async def test_disabled_field_fault_has_krakens_shape(client: Client) -> None:
    await client.control.add_fault("disabled_field", field="completedDispatches")
    body = await client.post(ALL_THREE, VARIABLES)
    [error] = body["errors"]
    # Octopus's documented KT-CT-1113 answer: a code and a message, no description.
    assert error["message"] == "Disabled GraphQL field requested."
    assert error["extensions"]["errorCode"] == "KT-CT-1113"
    assert "errorDescription" not in error["extensions"]
    assert error["path"] == ["completedDispatches"]
    assert body["data"]["devices"] == [{"id": DEFAULT_EV_ID}]


async def test_field_faults_carry_an_error_description(client: Client) -> None:
    await client.control.add_fault("kt_4340")
    body = await client.post(BOTH, VARIABLES)
    [error] = body["errors"]
    assert error["extensions"]["errorDescription"] == "Unable to fetch planned dispatches."


async def test_a_bad_api_key_is_answered_as_kraken_words_it(client: Client) -> None:
    async with client.http.post(
        client.sim.graphql_url, json={"query": LOGIN, "variables": {"key": "sk_live_wrong"}}
    ) as response:
        body = await response.json()
    [error] = body["errors"]
    assert error["message"] == "Invalid data."
    assert error["extensions"]["errorCode"] == "KT-CT-1139"
    assert error["extensions"]["errorDescription"] == "Authentication failed."
    assert error["extensions"]["validationErrors"][0]["inputPath"] == ["input", "apiKey"]
