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
from ioagent.timeutil import Clock
from tests.broker import Broker
from tests.clocks import ShiftedClock, suite_now
from tests.gx_peer import FACTORY_SLOT, PORTAL_ID, USER_SLOTS, GxPeer, victron_section
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
    offset = to - suite_now()
    simulator.state.set_time_offset(offset.total_seconds())
    return lambda: suite_now() + offset


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
    victron = victron_section(broker, include_fixed_window=include_fixed_window)
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


async def test_a_running_window_is_written_from_the_current_minute_and_then_left_alone(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path, gx: GxPeer
) -> None:
    # The daemon starts inside the night window (Wednesday 23:30-05:30). The GX gets the rest
    # of it from the current minute, and keeps it while the plan changes around it: the GX
    # stores its settings in flash, and a running window is the same window a minute later.
    night = (datetime(2025, 1, 15, 23, 30, tzinfo=UTC), datetime(2025, 1, 16, 5, 30, tzinfo=UTC))
    next_night = (night[0] + timedelta(days=1), night[1] + timedelta(days=1))
    later = datetime(2025, 1, 15, 23, 43, 5, tzinfo=UTC)
    tomorrow = (datetime(2025, 1, 16, 10, 0, tzinfo=UTC), datetime(2025, 1, 16, 10, 30, tzinfo=UTC))
    clock = ShiftedClock(datetime(2025, 1, 15, 23, 40, 5, tzinfo=UTC), simulator.state)
    victron = victron_section(broker, include_fixed_window=True)
    rest_of_night = {"Day": 3, "Start": 23 * 3600 + 40 * 60, "Duration": 350 * 60}
    common = {"Soc": 100, "AllowDischarge": 0}

    def holds(slots: dict[str, Any]) -> Any:
        def synced(payload: str) -> bool:
            status = json.loads(payload)
            return status["slots"] == slots and status["pending_writes"] == []

        return synced

    async with running_daemon(broker, simulator, tmp_path, clock=clock, victron=victron) as d:
        # Tomorrow's night starts within the 24 h: the whole of it, not the minutes up to 24 h.
        first = holds(
            {
                "3": slot_status(3, "23:40", 350, night),
                "4": slot_status(4, "23:30", 360, next_night),
            }
        )
        await d.watcher.wait_for(d.topics.victron, first, timeout=15)
        assert gx.slot(3) == {**rest_of_night, **common}
        assert gx.slot(4) == {"Day": 4, "Start": 23 * 3600 + 1800, "Duration": 6 * 3600, **common}
        written = len(gx.writes_to(3))

        # Three minutes on, a slot is planned for tomorrow morning: it takes slot 4 from the
        # later night (the earliest windows get the slots), and slot 3 is not written at all.
        clock.jump_to(later)
        device = simulator.state.device(DEFAULT_EV_ID)
        simulator.state.add_dispatch(device, *tomorrow, "SMART", 3.5)
        assert (await d.command("refresh", "now"))["status"] == "ok"
        both = holds(
            {
                "3": slot_status(3, "23:40", 350, night),
                "4": slot_status(4, "10:00", 30, tomorrow),
            }
        )
        await d.watcher.wait_for(d.topics.victron, both, timeout=15)

    assert gx.slot(3) == {**rest_of_night, **common}
    assert gx.writes_to(3)[written:] == [], "the running window was rewritten"
    assert gx.slot(4) == {"Day": 4, "Start": 10 * 3600, "Duration": 1800, **common}
