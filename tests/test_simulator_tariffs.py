"""The simulator's products: agreements over GraphQL, the products REST feeds, migrations,
and a car that charges only while a slot runs (real sockets, the real clients)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from pydantic import SecretStr

from ioagent.kraken.client import KrakenClient
from ioagent.kraken.errors import KrakenError
from ioagent.kraken.rest import ProductsClient
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_EV_ID,
    SECOND_ACCOUNT,
    SimulatorState,
)
from ioagent.tariff.product import classify, in_force
from tests.clocks import suite_now

FOUR_RATE = "IOG-SMB-VAR-24-10-29"
FOUR_RATE_TARIFF = "E-1R-IOG-SMB-VAR-24-10-29-H"
LEGACY = "INTELLI-VAR-24-10-29"
LEGACY_TARIFF = "E-1R-INTELLI-VAR-24-10-29-H"


@pytest_asyncio.fixture
async def client(simulator: RunningSimulator) -> AsyncIterator[KrakenClient]:
    async with KrakenClient(simulator.graphql_url, SecretStr(DEFAULT_API_KEY)) as kraken:
        yield kraken


async def control(sim: RunningSimulator, path: str, body: Any) -> Any:
    url = f"{sim.control_url}/{path}"
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_agreements_query_reads_the_product(
    simulator: RunningSimulator, client: KrakenClient
) -> None:
    agreements = await client.agreements(DEFAULT_ACCOUNT)
    assert [(a.product_code, a.tariff_code) for a in agreements] == [(LEGACY, LEGACY_TARIFF)]
    assert agreements[0].mpan and agreements[0].valid_to is None
    assert classify(agreements[0].product_code) == "legacy"


async def test_agreements_of_another_account_are_refused(client: KrakenClient) -> None:
    with pytest.raises(KrakenError):
        await client.agreements(SECOND_ACCOUNT)


async def test_a_migration_through_the_control_api(
    simulator: RunningSimulator, client: KrakenClient
) -> None:
    switch = (suite_now() + timedelta(hours=1)).replace(microsecond=0)
    await control(
        simulator,
        "agreements",
        {"account": DEFAULT_ACCOUNT, "product": "four_rate", "at": switch.isoformat()},
    )
    agreements = await client.agreements(DEFAULT_ACCOUNT)
    assert len(agreements) == 2, "the old one ends at the switch, the new one starts there"
    now = suite_now()
    assert in_force(agreements, now).product_code == LEGACY  # type: ignore[union-attr]
    assert in_force(agreements, switch).product_code == FOUR_RATE  # type: ignore[union-attr]


async def test_a_bad_migration_is_refused(simulator: RunningSimulator) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{simulator.control_url}/agreements",
            json={"account": DEFAULT_ACCOUNT, "product": "agile"},
        ) as response,
    ):
        assert response.status == 400


async def test_four_rate_feeds_have_the_live_shapes() -> None:
    state = SimulatorState.with_default_account(clock=suite_now, product="four_rate")
    async with run_simulator(state) as sim, ProductsClient(sim.rest_url) as rest:
        day = await rest.unit_rates(FOUR_RATE, FOUR_RATE_TARIFF, "day-unit-rates")
        assert [(r.value_inc_vat, r.valid_to) for r in day] == [(30.371355, None)]
        night = await rest.unit_rates(FOUR_RATE, FOUR_RATE_TARIFF, "night-unit-rates")
        assert night[0].value_inc_vat == 6.89997
        assert await rest.unit_rates(FOUR_RATE, FOUR_RATE_TARIFF, "standard-unit-rates") == []
        url = f"{sim.rest_url}/v1/products/{FOUR_RATE}/"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            product = await response.json()
        assert "four_rate_ev_electricity_tariffs" in product
        links = product["four_rate_ev_electricity_tariffs"]["_H"]["direct_debit_monthly"]["links"]
        assert {"day_unit_rates", "ev_device_off_peak_unit_rates"} <= {
            link["rel"] for link in links
        }


async def test_legacy_feed_has_windows_and_unknown_feeds_are_404(
    simulator: RunningSimulator,
) -> None:
    async with ProductsClient(simulator.rest_url) as rest:
        now = suite_now()
        rates = await rest.unit_rates(
            LEGACY,
            LEGACY_TARIFF,
            "standard-unit-rates",
            period_from=now,
            period_to=now + timedelta(days=1),
        )
        assert {r.value_inc_vat for r in rates} == {7.0, 27.5}
        assert all(r.valid_from is not None and r.valid_to is not None for r in rates)
        assert await rest.unit_rates(LEGACY, LEGACY_TARIFF, "day-unit-rates") == []


async def test_a_failing_feed_is_a_transient_error(simulator: RunningSimulator) -> None:
    await control(simulator, "rates", {"feed": "standard-unit-rates", "fail": True})
    async with ProductsClient(simulator.rest_url) as rest:
        with pytest.raises(KrakenError, match="HTTP 502"):
            await rest.unit_rates(LEGACY, LEGACY_TARIFF, "standard-unit-rates")


async def test_the_car_charges_only_while_a_slot_runs_and_draws(
    simulator: RunningSimulator, client: KrakenClient
) -> None:
    state = simulator.state
    device = state.device(DEFAULT_EV_ID)
    now = suite_now().replace(microsecond=0)
    state.add_dispatch(
        device, now - timedelta(minutes=5), now + timedelta(minutes=30), "SMART", 3.0
    )
    (ev,) = await client.devices(DEFAULT_ACCOUNT)
    assert ev.current_state == "SMART_CONTROL_IN_PROGRESS"
    await control(
        simulator,
        "dispatches/draws",
        {
            "device_id": DEFAULT_EV_ID,
            "start": (now - timedelta(minutes=5)).isoformat(),
            "draws": False,
        },
    )
    (ev,) = await client.devices(DEFAULT_ACCOUNT)
    assert ev.current_state == "SMART_CONTROL_CAPABLE", "planned, but the car draws nothing"


async def test_planned_never_charged_leaves_no_completed_record() -> None:
    start = datetime(2026, 1, 15, 19, 0, tzinfo=UTC)
    now = [start - timedelta(minutes=1)]
    state = SimulatorState.with_default_account(clock=lambda: now[0])
    device = state.device(DEFAULT_EV_ID)
    state.add_dispatch(device, start, start + timedelta(minutes=30), "SMART", 2.0)
    state.add_dispatch(device, start + timedelta(hours=1), start + timedelta(hours=2), "SMART", 4.0)
    state.set_draws(device, start, False)
    now[0] = start + timedelta(hours=3)
    state.advance()
    done = state.completed_for(DEFAULT_ACCOUNT)
    assert [(c.start, c.kwh) for c in done] == [(start + timedelta(hours=1), 4.0)]


async def test_a_full_car_draws_nothing() -> None:
    start = datetime(2026, 1, 15, 19, 0, tzinfo=UTC)
    now = [start + timedelta(minutes=1)]
    state = SimulatorState.with_default_account(clock=lambda: now[0])
    device = state.device(DEFAULT_EV_ID)
    device.soc_percent = 100.0
    state.add_dispatch(device, start, start + timedelta(minutes=30), "SMART", 2.0)
    state.advance()
    assert device.current_state == "SMART_CONTROL_CAPABLE"
    now[0] = start + timedelta(hours=1)
    state.advance()
    assert state.completed_for(DEFAULT_ACCOUNT) == []
