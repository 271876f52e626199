"""Captured-response tests: answers in the shapes the live Kraken API sends (tests/fixtures/kraken/).

Each fixture is replayed by a small HTTP server over a real socket to ioagent's transport, then
parsed as the client parses it, so the whole path from bytes to typed values is covered. The
fixtures are built from the reference shapes, never from a real account's data.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from structlog.testing import capture_logs

from ioagent.kraken import errors, queries
from ioagent.kraken.transport import GraphQLResult, Transport
from ioagent.kraken.types import (
    Dispatch,
    parse_completed_list,
    parse_devices,
    parse_dispatches,
)
from ioagent.tariff.plan import classify_completed
from ioagent.timeutil import iso_z, parse_iso

FIXTURES = Path(__file__).parent / "fixtures" / "kraken"
Replay = Callable[[str], Awaitable[Transport]]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


@pytest_asyncio.fixture
async def replay() -> AsyncIterator[Replay]:
    """``await replay(name)``: a transport whose endpoint answers with fixture ``name``."""
    answer: dict[str, Any] = {}

    async def handle(request: web.Request) -> web.Response:
        await request.json()
        return web.json_response(answer["body"], status=answer["status"])

    app = web.Application()
    app.router.add_post("/v1/graphql/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    transports: list[Transport] = []

    async def start(name: str) -> Transport:
        answer.update(load(name))
        transport = Transport(f"http://127.0.0.1:{port}/v1/graphql/")
        transports.append(transport)
        return transport

    try:
        yield start
    finally:
        for transport in transports:
            await transport.close()
        await runner.cleanup()


def test_every_fixture_is_tested_and_says_where_its_shape_comes_from() -> None:
    names = sorted(p.name for p in FIXTURES.glob("*.json"))
    tested = {
        "completed_source_null_unable_to_identify.json",
        "planned_negative_energy_microseconds.json",
        "devices_schedule_time_microseconds.json",
        "error_with_description.json",
        "error_disabled_field.json",
        "error_boost_refused_other_code.json",
    }
    assert set(names) == tested
    for name in names:
        assert load(name)["_about"].strip(), name


async def _execute(transport: Transport, query: str) -> GraphQLResult:
    return await transport.execute(query, {"account": "A-00000000"}, authenticated=False)


async def test_completed_with_source_null_and_unable_to_identify(replay: Replay) -> None:
    fixture = load("completed_source_null_unable_to_identify.json")
    transport = await replay("completed_source_null_unable_to_identify.json")
    with capture_logs() as logs:
        result = await _execute(transport, queries.COMPLETED_DISPATCHES)
        parsed = parse_completed_list(result.require("completedDispatches"))
    # UNABLE_TO_IDENTIFY is a known location and null a known source: no warning about either.
    assert [e for e in logs if e["event"] == "kraken_unexpected_value"] == []
    assert [e for e in logs if e["event"] == "kraken_item_skipped"] == []
    planned = [
        Dispatch(parse_iso(p["start"]), parse_iso(p["end"]), p["type"], None)
        for p in fixture["expect"]["planned_seen"]
    ]
    classified = classify_completed(parsed, planned)
    assert [
        {"start": iso_z(c.start), "kwh": c.kwh, "location": c.location, "type": c.type}
        for c in classified
    ] == fixture["expect"]["completed"]


async def test_planned_with_negative_energy_and_microseconds(replay: Replay) -> None:
    fixture = load("planned_negative_energy_microseconds.json")
    transport = await replay("planned_negative_energy_microseconds.json")
    result = await transport.execute(
        queries.PLANNED_DISPATCHES, {"deviceId": "d"}, authenticated=False
    )
    plan = parse_dispatches(result.require("flexPlannedDispatches"), "d")
    assert [
        {
            "start": d.start.isoformat().replace("+00:00", "Z"),
            "end": d.end.isoformat().replace("+00:00", "Z"),
            "type": d.type,
            "kwh": d.kwh,
        }
        for d in plan
    ] == fixture["expect"]["planned"]


async def test_devices_with_a_schedule_time_with_microseconds(replay: Replay) -> None:
    fixture = load("devices_schedule_time_microseconds.json")
    transport = await replay("devices_schedule_time_microseconds.json")
    with capture_logs() as logs:
        result = await _execute(transport, queries.DEVICES)
        devices = parse_devices(result.require("devices"))
    assert [e for e in logs if e["event"] == "kraken_preferences_skipped"] == []
    seen = []
    for device in devices:
        assert device.preferences is not None
        monday = device.preferences.schedule_for("MONDAY")
        assert monday is not None
        seen.append(
            {
                "id": device.id,
                "smart_chargeable": device.is_smart_chargeable,
                "monday_time": monday.time.strftime("%H:%M"),
                "monday_max": monday.max,
            }
        )
    assert seen == fixture["expect"]["devices"]


@pytest.mark.parametrize(
    "name",
    [
        "error_with_description.json",
        "error_disabled_field.json",
        "error_boost_refused_other_code.json",
    ],
)
async def test_errors_carry_kraken_description(replay: Replay, name: str) -> None:
    expect = load(name)["expect"]
    transport = await replay(name)
    with capture_logs() as logs:
        if name == "error_disabled_field.json":
            # A partial answer: the transport returns it, the failed part names its error.
            result = await transport.execute(
                queries.poll_query(1), {"account": "A", "device_0": "d"}, authenticated=False
            )
            error = result.error_for(queries.planned_key(0), "flexPlannedDispatches")
        else:
            with pytest.raises(errors.KrakenError) as caught:
                await _execute(transport, queries.OBTAIN_TOKEN)
            error = caught.value
    assert error is not None
    assert type(error).__name__ == expect["kind"]
    assert error.code == expect["code"]
    assert expect["text"] in str(error)
    if "reasons" in expect:
        assert isinstance(error, errors.CommandRefused)
        assert list(error.reasons) == expect["reasons"]
    # The log line of the answer carries the description too.
    graphql_errors = [e for e in logs if e["event"] == "kraken_graphql_errors"]
    assert graphql_errors
    description = load(name)["body"]["errors"][0]["extensions"].get("errorDescription")
    assert graphql_errors[0]["errors"][0]["description"] == description
