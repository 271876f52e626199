"""The simulator's settled billing over real sockets, fetched with the client's ledger
functions: windows of 12 half-hours, cursor pages, both vocabularies, the lag, stripped
statistics for long windows, re-bills and unknown labels from control calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import pytest_asyncio
from pydantic import SecretStr

from ioagent.kraken import queries
from ioagent.kraken.client import KrakenClient, measurements_page, settled_half_hours
from ioagent.ledger.parse import SettledHalfHour
from ioagent.ledger.reconcile import reconcile
from ioagent.simulator.ledger import mpan_for
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    SOURCE_BUMP,
    SOURCE_SMART,
    SimulatorState,
)
from ioagent.store.database import Store
from ioagent.store.ledger import save_settled

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2026, 11, 23, 10, 7, tzinfo=UTC)
DAY = datetime(2026, 11, 19).date()  # four days back: settled


def local(day_offset: int, clock: time) -> datetime:
    return datetime.combine(DAY + timedelta(days=day_offset), clock, tzinfo=LONDON).astimezone(UTC)


@dataclass
class Sim:
    running: RunningSimulator
    client: KrakenClient
    http: aiohttp.ClientSession

    @property
    def mpan(self) -> str:
        return mpan_for(self.running.state, DEFAULT_ACCOUNT)

    async def control(self, path: str, body: dict[str, Any]) -> None:
        async with self.http.post(self.running.control_url + path, json=body) as resp:
            assert resp.status == 200, await resp.text()

    async def day(self, offset: int = 0) -> list[SettledHalfHour]:
        start = local(offset, time(0))
        end = local(offset + 1, time(0))
        page = await settled_half_hours(self.client, DEFAULT_ACCOUNT, self.mpan, start, end)
        return page.half_hours


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Sim]:
    state = SimulatorState.with_default_account(clock=lambda: NOW)
    # the scenarios of octopus-tariffs-2026.md, on the 19th/20th:
    state.add_completed(DEFAULT_ACCOUNT, local(0, time(19, 30)), local(0, time(20, 15)),
                        5.25, SOURCE_SMART, "AT_HOME")  # fmt: skip
    state.add_completed(DEFAULT_ACCOUNT, local(1, time(0, 0)), local(1, time(5, 0)),
                        35.0, SOURCE_SMART, "AT_HOME")  # fmt: skip
    state.add_completed(DEFAULT_ACCOUNT, local(1, time(11, 0)), local(1, time(12, 0)),
                        7.0, SOURCE_SMART, "AT_HOME")  # fmt: skip
    state.add_completed(DEFAULT_ACCOUNT, local(1, time(12, 0)), local(1, time(13, 0)),
                        7.0, SOURCE_SMART, "AT_HOME")  # fmt: skip
    state.add_completed(DEFAULT_ACCOUNT, local(1, time(17, 0)), local(1, time(17, 30)),
                        3.5, SOURCE_BUMP, "AT_HOME")  # fmt: skip
    async with (
        run_simulator(state) as running,
        KrakenClient(running.graphql_url, SecretStr(DEFAULT_API_KEY), clock=lambda: NOW) as client,
        aiohttp.ClientSession() as http,
    ):
        yield Sim(running, client, http)


def bands(rows: list[SettledHalfHour], at: datetime) -> tuple[str, str]:
    (found,) = [r for r in rows if r.start == at]
    return found.home_band, found.car_band


async def test_a_day_is_billed_by_the_four_rate_rules(sim: Sim) -> None:
    day = await sim.day(0)
    assert len(day) == 48
    assert bands(day, local(0, time(19, 30))) == ("low", "low")
    assert bands(day, local(0, time(20, 0))) == ("low", "low")
    assert bands(day, local(0, time(20, 30))) == ("standard", "none")
    assert bands(day, local(0, time(23, 30))) == ("low", "none")
    assert bands(day, local(0, time(12, 0))) == ("standard", "none")
    next_day = await sim.day(1)
    # the allowance (12 half-hours, noon to noon) is used by 19:30, 20:00 and 00:00-05:00
    assert bands(next_day, local(1, time(11, 0))) == ("standard", "standard")
    assert bands(next_day, local(1, time(11, 30))) == ("standard", "standard")
    # a new period at noon
    assert bands(next_day, local(1, time(12, 0))) == ("low", "low")
    # boost: standard for the car (and the home, outside the window)
    assert bands(next_day, local(1, time(17, 0))) == ("standard", "standard")
    evening = next(r for r in day if r.start == local(0, time(19, 30)))
    assert evening.car_kwh == pytest.approx(3.5)  # 5.25 kWh over 45 min: 30 of them here
    assert evening.cost_pence == pytest.approx((0.45 + 3.5) * 7.0, abs=0.01)
    assert sum(r.standing_pence for r in day) == pytest.approx(50.0, abs=0.01)


async def test_a_backfill_sees_the_charges_of_its_whole_range(sim: Sim) -> None:
    # Billing is built from the completed history: a charge three weeks back (inside the
    # default 30-day backfill) is still billed as one after the simulator has moved on,
    # never as a half-hour in which the car drew nothing (that would be a phantom re-bill).
    old = local(-16, time(19, 30))
    sim.running.state.add_completed(DEFAULT_ACCOUNT, old, old + timedelta(hours=1),
                                    7.0, SOURCE_SMART, "AT_HOME")  # fmt: skip
    day = await sim.day(-16)  # the request moves the simulator's time on first
    assert bands(day, old) == ("low", "low")
    assert sum(r.car_kwh for r in day) == pytest.approx(7.0)


async def test_both_vocabularies_bill_the_same(sim: Sim) -> None:
    v2 = await sim.day(0)
    await sim.control("/ledger", {"vocabulary": "v1", "region": "B"})
    v1 = await sim.day(0)
    assert [(r.home_band, r.car_band, r.cost_pence) for r in v1] == [
        (r.home_band, r.car_band, r.cost_pence) for r in v2
    ]
    assert v1[0].buckets[0].label.startswith("CONSUMPTION_CHARGE_ECO7_DAY_B")
    await sim.control("/ledger", {"vocabulary": "legacy"})
    legacy = await sim.day(0)
    assert bands(legacy, local(0, time(19, 30))) == ("low", "none")
    assert bands(legacy, local(0, time(20, 30))) == ("standard", "none")


async def test_settlement_lags_two_days(sim: Sim) -> None:
    start = NOW - timedelta(days=3)
    page = await settled_half_hours(sim.client, DEFAULT_ACCOUNT, sim.mpan, start, NOW)
    assert page.half_hours[-1].end <= NOW - timedelta(days=2)
    assert len(page.half_hours) == 48


async def test_windows_longer_than_twelve_half_hours_lose_their_statistics(sim: Sim) -> None:
    start = local(0, time(12, 0))
    long = await measurements_page(
        sim.client, DEFAULT_ACCOUNT, sim.mpan, start, start + timedelta(hours=12)
    )
    assert long.half_hours == []
    assert len(long.without_statistics) == 24
    short = await measurements_page(
        sim.client, DEFAULT_ACCOUNT, sim.mpan, start, start + timedelta(hours=6)
    )
    assert len(short.half_hours) == 12


async def test_cursor_pages_are_followed(sim: Sim) -> None:
    start = local(0, time(12, 0))
    first = await measurements_page(
        sim.client, DEFAULT_ACCOUNT, sim.mpan, start, start + timedelta(hours=6), first=5
    )
    assert first.has_next_page
    assert len(first.half_hours) == 5
    second = await measurements_page(
        sim.client,
        DEFAULT_ACCOUNT,
        sim.mpan,
        start,
        start + timedelta(hours=6),
        first=5,
        after=first.end_cursor,
    )
    assert second.half_hours[0].start == start + timedelta(minutes=150)


async def test_another_mpan_has_no_readings(sim: Sim) -> None:
    start = local(0, time(12, 0))
    page = await measurements_page(
        sim.client, DEFAULT_ACCOUNT, "1099999999999", start, start + timedelta(hours=6)
    )
    assert page.half_hours == []


async def test_a_rebill_is_served_and_the_store_reports_it(sim: Sim) -> None:
    store = Store.open_memory()
    save_settled(store, DEFAULT_ACCOUNT, await sim.day(0), NOW)
    at = local(0, time(19, 30))
    await sim.control(
        "/ledger/rebill",
        {"account": DEFAULT_ACCOUNT, "start": at.isoformat(), "home": "standard"},
    )
    again = await sim.day(0)
    assert bands(again, at) == ("standard", "low")
    result = save_settled(store, DEFAULT_ACCOUNT, again, NOW + timedelta(hours=12))
    assert [r.after.start for r in result.rebilled] == [at]
    assert result.unchanged == 47


async def test_an_unknown_label_is_served_and_reported(sim: Sim) -> None:
    at = local(0, time(19, 30))
    await sim.control(
        "/ledger/unknown_label",
        {"account": DEFAULT_ACCOUNT, "start": at.isoformat(), "label": "HOME BONUS RATE"},
    )
    start, end = local(0, time(0)), local(1, time(0))
    page = await settled_half_hours(sim.client, DEFAULT_ACCOUNT, sim.mpan, start, end)
    assert page.unknown_labels == ["HOME BONUS RATE"]
    assert bands(page.half_hours, at) == ("unknown", "unknown")


async def test_a_rule_change_shows_as_disagreements_with_their_reason(sim: Sim) -> None:
    # ioagent's signal under the rules the simulator used until now: cheap 19:30-20:30
    home = [
        (local(-1, time(23, 30)), True),
        (local(0, time(5, 30)), False),
        (local(0, time(19, 30)), True),
        (local(0, time(20, 30)), False),
        (local(0, time(23, 30)), True),
    ]
    car = [(local(0, time(19, 30)), True), (local(0, time(20, 30)), False)]
    before = reconcile(await sim.day(0), home, car)
    assert before.ratio == 1.0
    await sim.control("/ledger", {"home_bonus": False})
    after = reconcile(await sim.day(0), home, car)
    assert [d.reason for d in after.disagreements()] == [
        "signal offpeak, billed home standard: no home bonus",
        "signal offpeak, billed home standard: no home bonus",
    ]


async def test_control_validates_its_input(sim: Sim) -> None:
    for path, body in [
        ("/ledger", {"vocabulary": "v3"}),
        ("/ledger", {"region": "I"}),
        (
            "/ledger/rebill",
            {"account": DEFAULT_ACCOUNT, "start": "2026-11-19T19:31:00Z", "home": "low"},
        ),
        ("/ledger/rebill", {"account": DEFAULT_ACCOUNT, "start": "2026-11-19T19:30:00Z"}),
    ]:
        async with sim.http.post(sim.running.control_url + path, json=body) as resp:
            assert resp.status == 400, (path, body)
    async with sim.http.post(
        sim.running.control_url + "/ledger/unknown_label",
        json={"account": "A-NOPE", "start": "2026-11-19T19:30:00Z", "label": "X"},
    ) as resp:
        assert resp.status == 404


def test_the_query_asks_for_half_hours_of_one_mpan_in_london_time() -> None:
    variables = queries.measurements_variables("A-1", "123", "s", "e", None, 500)
    (filters,) = variables["utilityFilters"]  # type: ignore[misc]
    assert filters["electricityFilters"] == {
        "readingFrequencyType": "THIRTY_MIN_INTERVAL",
        "marketSupplyPointId": "123",
        "readingDirection": "CONSUMPTION",
    }
    assert variables["timezone"] == "Europe/London"
