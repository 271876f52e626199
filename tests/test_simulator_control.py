"""The control API (through SimulatorControl), dispatch lifecycle, completed ordering and the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from ioagent.simulator.cli import serve
from ioagent.simulator.control import ControlError, SimulatorControl
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_EV_ID,
    SECOND_API_KEY,
    SimulatorState,
)

NOW = datetime(2026, 7, 14, 16, 0, tzinfo=UTC)  # summer: London is UTC+1
PLANNED = (
    "query($d: String!) { flexPlannedDispatches(deviceId: $d) { start end type energyAddedKwh } }"
)
COMPLETED = """query($a: String!) {
  completedDispatches(accountNumber: $a) { start end delta meta { source location } }
}"""


class ManualClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Harness:
    sim: RunningSimulator
    clock: ManualClock
    control: SimulatorControl
    http: aiohttp.ClientSession
    token: str

    async def query(self, query: str, variables: dict[str, Any]) -> Any:
        async with self.http.post(
            self.sim.graphql_url,
            json={"query": query, "variables": variables},
            headers={"Authorization": self.token},
        ) as response:
            body = await response.json()
        assert "errors" not in body, body
        return next(iter(body["data"].values()))

    async def planned(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.query(PLANNED, {"d": DEFAULT_EV_ID})
        return result

    async def completed(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.query(COMPLETED, {"a": DEFAULT_ACCOUNT})
        return result


@pytest_asyncio.fixture
async def harness() -> AsyncIterator[Harness]:
    clock = ManualClock(NOW)
    state = SimulatorState.with_default_account(clock=clock, jwt_lifetime=timedelta(days=30))
    async with (
        run_simulator(state) as sim,
        aiohttp.ClientSession() as http,
        SimulatorControl(sim.control_url) as control,
    ):
        login = "mutation($k: String) { obtainKrakenToken(input: {APIKey: $k}) { token } }"
        async with http.post(
            sim.graphql_url, json={"query": login, "variables": {"k": DEFAULT_API_KEY}}
        ) as response:
            token = (await response.json())["data"]["obtainKrakenToken"]["token"]
        yield Harness(sim, clock, control, http, token)


def at(hours: float) -> datetime:
    return NOW + timedelta(hours=hours)


async def test_state_snapshot_lists_everything_but_secrets(harness: Harness) -> None:
    snapshot = await harness.control.state()
    assert [a["number"] for a in snapshot["accounts"]] == ["A-SIM00001", "A-SIM00002", "A-SIM00009"]
    ev = next(d for d in snapshot["devices"] if d["id"] == DEFAULT_EV_ID)
    assert (ev["plugged"], ev["current_state"], ev["planned"]) == (
        False,
        "SMART_CONTROL_CAPABLE",
        [],
    )
    assert snapshot["tokens"]["jwt_issued"] == 1
    text = json.dumps(snapshot)
    assert DEFAULT_API_KEY not in text and SECOND_API_KEY not in text
    assert harness.token not in text
    assert DEFAULT_API_KEY not in repr(harness.sim.state.accounts)


async def test_add_remove_shift_and_clear_dispatches(harness: Harness) -> None:
    await harness.control.add_dispatch(DEFAULT_EV_ID, at(3), at(3.5), "SMART", 3.5)
    await harness.control.add_dispatch(DEFAULT_EV_ID, at(1), at(1.25), "BOOST", None)
    planned = await harness.planned()
    assert [(p["start"], p["type"], p["energyAddedKwh"]) for p in planned] == [
        ("2026-07-14T17:00:00+00:00", "BOOST", None),
        ("2026-07-14T19:00:00+00:00", "SMART", "3.5000"),
    ]
    await harness.control.shift_dispatch(DEFAULT_EV_ID, at(3), at(0.5), at(0.75))
    planned = await harness.planned()
    assert (planned[0]["start"], planned[0]["end"]) == (
        "2026-07-14T16:30:00+00:00",
        "2026-07-14T16:45:00+00:00",
    )
    await harness.control.remove_dispatch(DEFAULT_EV_ID, at(1))
    assert [p["type"] for p in await harness.planned()] == ["SMART"]
    await harness.control.clear_dispatches(DEFAULT_EV_ID)
    assert await harness.planned() == []


async def test_control_errors_are_400_or_404(harness: Harness) -> None:
    with pytest.raises(ControlError) as unknown_device:
        await harness.control.plug("no-such-device", True)
    with pytest.raises(ControlError) as no_dispatch:
        await harness.control.remove_dispatch(DEFAULT_EV_ID, at(9))
    with pytest.raises(ControlError) as bad_time:
        await harness.control.add_dispatch(DEFAULT_EV_ID, "tomorrow", at(1))
    with pytest.raises(ControlError) as bad_state:
        await harness.control.set_device_state(DEFAULT_EV_ID, "ASLEEP")
    assert (unknown_device.value.status, no_dispatch.value.status) == (404, 404)
    assert (bad_time.value.status, bad_state.value.status) == (400, 400)


async def test_completed_dispatches_are_recent_and_newest_first(harness: Harness) -> None:
    await harness.control.add_completed(
        DEFAULT_ACCOUNT, at(-3), at(-2.5), 3.37, source="smart-charge"
    )
    await harness.control.add_completed(DEFAULT_ACCOUNT, at(-20), at(-19), 7.0)  # too old
    await harness.control.add_completed(
        DEFAULT_ACCOUNT, at(-1), at(-0.75), 1.75, source="bump-charge", location="AWAY"
    )
    # The default source is null, as Octopus sends completed records.
    await harness.control.add_completed(
        DEFAULT_ACCOUNT, at(-8), at(-7), 6.5, location="UNABLE_TO_IDENTIFY"
    )
    completed = await harness.completed()
    assert completed == [
        {
            "start": "2026-07-14T16:00:00+01:00",
            "end": "2026-07-14T16:15:00+01:00",
            "delta": "-1.75",
            "meta": {"source": "bump-charge", "location": "AWAY"},
        },
        {
            "start": "2026-07-14T14:00:00+01:00",
            "end": "2026-07-14T14:30:00+01:00",
            "delta": "-3.37",
            "meta": {"source": "smart-charge", "location": "AT_HOME"},
        },
        {
            "start": "2026-07-14T09:00:00+01:00",
            "end": "2026-07-14T10:00:00+01:00",
            "delta": "-6.50",
            "meta": {"source": None, "location": "UNABLE_TO_IDENTIFY"},
        },
    ]


async def test_finished_dispatches_move_to_completed(harness: Harness) -> None:
    await harness.control.add_dispatch(DEFAULT_EV_ID, at(0.25), at(0.75), "SMART", 3.5)
    await harness.control.add_dispatch(DEFAULT_EV_ID, at(1), at(1.5), "BOOST", None)
    harness.clock.now = at(0.75)
    assert [p["type"] for p in await harness.planned()] == ["BOOST"]
    harness.clock.now = at(2)
    assert await harness.planned() == []
    completed = await harness.completed()
    # As Kraken sends them: meta.source is null on completed records, boosts included.
    assert [(c["delta"], c["meta"]["source"]) for c in completed] == [
        ("-3.50", None),  # BOOST without kWh: 7 kW for 30 minutes
        ("-3.50", None),
    ]
    assert all(c["meta"]["location"] == "AT_HOME" for c in completed)
    ev = next(d for d in (await harness.control.state())["devices"] if d["id"] == DEFAULT_EV_ID)
    assert ev["soc_percent"] == pytest.approx(30 + 7 / 60 * 100, abs=0.01)


async def test_plug_plans_and_unplug_clears_smart_slots(harness: Harness) -> None:
    await harness.control.add_dispatch(DEFAULT_EV_ID, at(1), at(1.5), "TEST", None)
    answer = await harness.control.plug(DEFAULT_EV_ID, True)
    planned = await harness.planned()
    assert answer["planned"] == len(planned)
    assert planned[0]["start"] == "2026-07-14T16:00:00+00:00"  # the plug-in minute
    assert {p["type"] for p in planned} == {"SMART", "TEST"}
    await harness.control.plug(DEFAULT_EV_ID, False)
    assert [p["type"] for p in await harness.planned()] == ["TEST"]


async def test_soc_change_replans_while_plugged(harness: Harness) -> None:
    await harness.control.plug(DEFAULT_EV_ID, True)
    await harness.control.set_soc(DEFAULT_EV_ID, 75.0)
    planned = await harness.planned()
    assert sum(float(p["energyAddedKwh"]) for p in planned) == pytest.approx(3.0, abs=0.01)
    await harness.control.set_soc(DEFAULT_EV_ID, 95.0)
    assert await harness.planned() == []


async def test_device_state_and_time_offset(harness: Harness) -> None:
    await harness.control.set_device_state(DEFAULT_EV_ID, "LOST_CONNECTION")
    assert harness.sim.state.devices[DEFAULT_EV_ID].current_state == "LOST_CONNECTION"
    await harness.control.add_dispatch(DEFAULT_EV_ID, at(0.5), at(1), "SMART", 3.5)
    now = await harness.control.set_time_offset(7200)
    assert now == at(2)
    assert await harness.planned() == []
    assert [c["delta"] for c in await harness.completed()] == ["-3.50"]


async def test_cli_serve_prints_connection_details_and_stops() -> None:
    out, stop, ready = io.StringIO(), asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve("127.0.0.1", 0, out, stop, ready))
    async with asyncio.timeout(10):
        await ready.wait()
    banner = out.getvalue()
    url = next(line.split()[-1] for line in banner.splitlines() if "GraphQL URL" in line)
    async with aiohttp.ClientSession() as http, http.post(url, json={"query": "{ x }"}) as resp:
        assert resp.status == 400
    assert DEFAULT_API_KEY in banner and DEFAULT_ACCOUNT in banner
    stop.set()
    async with asyncio.timeout(10):
        await task
    assert out.getvalue().endswith("Kraken simulator stopped.\n")


async def test_cli_stops_cleanly_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ioagent",
        "simulator",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(20):
            lines = []
            while not lines or "Account number" not in lines[-1]:
                line = await process.stdout.readline()
                assert line, "".join(lines)
                lines.append(line.decode())
            process.send_signal(signal.SIGTERM)
            rest = (await process.stdout.read()).decode()
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert "Kraken simulator stopped." in rest
    assert "Traceback" not in rest


@pytest.mark.parametrize("seconds", [1, 30, 59])
def test_plug_in_within_the_last_minute_before_ready_by_plans_for_the_next_one(
    seconds: int,
) -> None:
    # 07:29:xx in London: plans start at the next whole minute, which is the ready-by time.
    clock = ManualClock(datetime(2026, 7, 14, 6, 29, seconds, tzinfo=UTC))
    state = SimulatorState.with_default_account(clock=clock)
    ev = state.device(DEFAULT_EV_ID)
    state.plug(ev, True)
    assert ev.planned, "the car should charge for tomorrow's 07:30"
    assert min(item.start for item in ev.planned) == datetime(2026, 7, 14, 6, 30, tzinfo=UTC)
    assert max(item.end for item in ev.planned) <= datetime(2026, 7, 15, 6, 30, tzinfo=UTC)
    assert sum(item.kwh or 0 for item in ev.planned) == pytest.approx(30.0, abs=0.05)


def test_plug_in_a_minute_before_ready_by_still_charges_for_it() -> None:
    clock = ManualClock(datetime(2026, 7, 14, 6, 29, tzinfo=UTC))
    state = SimulatorState.with_default_account(clock=clock)
    ev = state.device(DEFAULT_EV_ID)
    state.plug(ev, True)
    assert [(item.start, item.end) for item in ev.planned] == [
        (datetime(2026, 7, 14, 6, 29, tzinfo=UTC), datetime(2026, 7, 14, 6, 30, tzinfo=UTC))
    ]
