"""The real daemon drives the fake GX (tests/gx_peer.py) from the simulator's plan.

tests/test_victron.py drives ``VictronConnector`` directly; here the daemon's side is under
test: the plan is turned into off-peak windows by the tariff rules (smart slots widened to
half-hours, the fixed window only when asked) and the connector's status is published
retained at ``{base}/{acct}/victron``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_EV_ID
from ioagent.timeutil import Clock, utc_now
from tests.broker import Broker
from tests.gx_peer import FACTORY_SLOT, PORTAL_ID, USER_SLOTS, GxPeer
from tests.harness import running_daemon, watching

# A Wednesday in January: London is on GMT, so local time is UTC and the GX's Day is 3.
# Ten past the hour keeps the first poll clear of the quiet seconds around :00 and :30.
FAKE_NOW = datetime(2025, 1, 15, 17, 5, 10, tzinfo=UTC)
SMART_START = datetime(2025, 1, 15, 19, 40, tzinfo=UTC)
SMART_END = datetime(2025, 1, 15, 20, 10, tzinfo=UTC)


def z(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def shifted_clock(simulator: RunningSimulator, to: datetime) -> Clock:
    """A clock that runs from ``to``, with the simulator moved to the same time."""
    offset = to - utc_now()
    simulator.state.set_time_offset(offset.total_seconds())
    return lambda: utc_now() + offset


def slot_status(day: int, start: str, minutes: int, window: tuple[datetime, datetime]) -> Any:
    return {
        "day": day,
        "start": start,
        "duration_min": minutes,
        "soc": 100,
        "enabled": True,
        "window_start": z(window[0]),
        "window_end": z(window[1]),
    }


@pytest.mark.parametrize("include_fixed_window", [False, True], ids=["smart-only", "with-fixed"])
async def test_daemon_writes_the_rounded_smart_slot_and_publishes_the_status(
    broker: Broker,
    simulator: RunningSimulator,
    tmp_path: Path,
    gx: GxPeer,
    include_fixed_window: bool,
) -> None:
    clock = shifted_clock(simulator, FAKE_NOW)
    device = simulator.state.device(DEFAULT_EV_ID)
    simulator.state.add_dispatch(device, SMART_START, SMART_END, "SMART", 3.5)
    victron = {
        "enabled": True,
        "host": broker.host,
        "port": broker.port,
        "slots": [3, 4],
        "include_fixed_window": include_fixed_window,
    }
    rounded = (SMART_START - timedelta(minutes=10), SMART_END + timedelta(minutes=20))
    fixed = (datetime(2025, 1, 15, 23, 30, tzinfo=UTC), datetime(2025, 1, 16, 5, 30, tzinfo=UTC))
    expected_slots = {"3": slot_status(3, "19:30", 60, rounded)}
    if include_fixed_window:
        expected_slots["4"] = slot_status(3, "23:30", 360, fixed)
    else:
        expected_slots["4"] = {
            "day": -7,
            "start": "00:00",
            "duration_min": 0,
            "soc": 100,
            "enabled": False,
            "window_start": None,
            "window_end": None,
        }

    async with running_daemon(broker, simulator, tmp_path, clock=clock, victron=victron) as d:
        planned = await d.watcher.wait_for(d.topics.planned, lambda p: len(json.loads(p)) == 1)
        # Octopus's slot as it is: the rounding is the daemon's job, on the way to the GX.
        assert json.loads(planned.payload)[0]["start"] == z(SMART_START)

        def held(slots: dict[str, Any]) -> list[str]:
            # Which owned slot holds which window is the connector's choice: it keeps a window
            # in the slot it already has. With the fixed window, that one may be written before
            # the first poll has brought the smart slot, and so sit in slot 3.
            return sorted(json.dumps(value, sort_keys=True) for value in slots.values())

        def synced(payload: str) -> bool:
            status = json.loads(payload)
            return held(status["slots"]) == held(expected_slots) and status["pending_writes"] == []

        await d.watcher.wait_for(d.topics.victron, synced, timeout=15)

        # A late subscriber gets it retained, naming the GX and what its slots hold.
        async with watching(broker, d.topics.victron) as late:
            seen = await late.wait_for(d.topics.victron, synced, timeout=5)
        assert seen.retain
        status = json.loads(seen.payload)
        assert status["connected"] is True
        assert status["gx_silent"] is False
        assert status["portal_id"] == PORTAL_ID
        assert status["broker"] == gx.mode, "found out which GX MQTT service it talks to"
        assert status["error"] is None
        assert status["scheduled_charge_status"] == "OK: scheduled charging can run"

    common = {"Soc": 100, "AllowDischarge": 0}
    smart = {"Day": 3, "Start": 19 * 3600 + 1800, "Duration": 3600, **common}
    if include_fixed_window:
        fixed = {"Day": 3, "Start": 23 * 3600 + 1800, "Duration": 6 * 3600, **common}
        assert [gx.slot(3), gx.slot(4)] in ([smart, fixed], [fixed, smart])
    else:
        assert gx.slot(3) == smart
        assert gx.slot(4) == FACTORY_SLOT
        assert gx.writes_to(4) == []
    assert all(gx.slot(n) == USER_SLOTS[n] and not gx.writes_to(n) for n in USER_SLOTS)
    assert gx.retained_writes == []
    assert b"" not in gx.keepalives, "never a full republish"
