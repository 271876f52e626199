"""The Victron windows of a four-rate account, end to end: the daemon, the simulator's plan and
the fake GX (tests/gx_peer.py) over Mosquitto, on a simulated afternoon (see
tests/test_four_rate_daemon.py for the shifted clock).

One smart slot, 13:00-17:00, longer than the car allowance (lowered to 2 h in ``[tariff]``), and
the fixed night window (``include_fixed_window``), with the default ``[victron]
offpeak_confidence = "auto"``. docs/victron.md says what the GX then holds:

* four-rate (``auto`` means ``charging``): while the slot is only planned, nothing of it; once
  the car is seen charging, the slot from the current minute up to the end of the allowance
  (15:00), not the whole slot;
* legacy (``auto`` means ``planned``): the whole slot, as soon as it is planned;
* four-rate with ``offpeak_confidence = "planned"``: the part within the allowance, as soon as
  it is planned.

Both accounts get the night window. The legacy case is the same scenario under the old rule:
its windows differ, so the four-rate assertions fail if the daemon read the plan as legacy.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ioagent.simulator.state import DEFAULT_EV_ID
from ioagent.simulator.tariffs import SimProduct
from tests.broker import Broker
from tests.gx_peer import FACTORY_SLOT, USER_SLOTS, GxPeer
from tests.harness import RunningDaemon, running_daemon
from tests.test_four_rate_daemon import ShiftedClock, at, simulated

# A Wednesday in January: London is on GMT, so local time is UTC and the GX's Day is 3.
START = at("2026-01-14 12:58:40")
SLOT_START, SLOT_END = at("2026-01-14 13:00"), at("2026-01-14 17:00")
CONFIRMED = at("2026-01-14 13:20:40")
"""When a poll first sees the car charging (the clock jumps there)."""
ALLOWANCE_END = at("2026-01-14 15:00")  # 13:00 + the 2 h allowance
NIGHT = (at("2026-01-14 23:30"), at("2026-01-15 05:30"))
WEDNESDAY = 3


def gx_slot(start: datetime, end: datetime) -> dict[str, int]:
    """The fields of an enabled slot for ``[start, end)`` (local = UTC in January)."""
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "Day": WEDNESDAY,
        "Start": int((start - midnight).total_seconds()),
        "Duration": int((end - start).total_seconds()),
        "Soc": 100,
        "AllowDischarge": 0,
    }


def shown(fields: dict[str, int]) -> tuple[int, str, int, int, bool]:
    """A slot as the status topic shows it."""
    start = fields["Start"]
    return (
        fields["Day"],
        f"{start // 3600:02d}:{start % 3600 // 60:02d}",
        fields["Duration"] // 60,
        fields["Soc"],
        fields["Day"] >= 0,
    )


async def gx_holds(d: RunningDaemon, expected: list[dict[str, int]], timeout: float) -> None:
    """Wait until the daemon reports every write made and the owned slots holding ``expected``
    (in either order: which owned slot gets which window is the connector's choice)."""
    want = sorted((shown(fields) for fields in expected), key=repr)

    def synced(payload: str) -> bool:
        status = json.loads(payload)
        slots: dict[str, Any] = status["slots"]
        held = sorted(
            (
                (s["day"], s["start"], s["duration_min"], s["soc"], s["enabled"])
                for s in slots.values()
            ),
            key=repr,  # fields the GX has not answered yet are None
        )
        return status["pending_writes"] == [] and status["error"] is None and held == want

    await d.watcher.wait_for(d.topics.victron, synced, timeout=timeout)


def z(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def carried(d: RunningDaemon) -> list[tuple[str, str]]:
    """The off-peak windows the owned slots carry, as the last status names them."""
    status = json.loads(d.watcher.last(d.topics.victron) or "{}")
    return sorted(
        (s["window_start"], s["window_end"]) for s in status["slots"].values() if s["enabled"]
    )


def owned(gx: GxPeer) -> list[dict[str, Any]]:
    return sorted((gx.slot(3), gx.slot(4)), key=lambda fields: json.dumps(fields, sort_keys=True))


def ordered(*slots: dict[str, int]) -> list[dict[str, int]]:
    return sorted(slots, key=lambda fields: json.dumps(fields, sort_keys=True))


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("product", "confidence"),
    [("four_rate", "auto"), ("legacy", "auto"), ("four_rate", "planned")],
    ids=["four_rate", "legacy", "four_rate-planned"],
)
async def test_victron_windows_follow_the_four_rate_home_rules(
    broker: Broker, tmp_path: Path, gx: GxPeer, product: SimProduct, confidence: str
) -> None:
    night = gx_slot(*NIGHT)
    whole_slot = gx_slot(SLOT_START, SLOT_END)
    # From the minute the car is seen charging to the end of the allowance.
    within_allowance = gx_slot(CONFIRMED.replace(second=0), ALLOWANCE_END)
    if confidence == "planned":
        # Asked for: the planned half-hours too, still only those within the allowance, so
        # 13:00-15:00 from the start (the home's own rule, [tariff] smart_offpeak, is left
        # at auto = charging: the battery's choice is its own).
        planned_phase = charging_phase = ordered(night, gx_slot(SLOT_START, ALLOWANCE_END))
        windows = sorted([NIGHT, (SLOT_START, ALLOWANCE_END)])
    elif product == "four_rate":
        planned_phase = ordered(night, FACTORY_SLOT)
        charging_phase = ordered(night, within_allowance)
        # The slot carries the home's cheap stretch, 13:00-15:00, written from 13:20.
        windows = sorted([NIGHT, (SLOT_START, ALLOWANCE_END)])
    else:
        planned_phase = charging_phase = ordered(night, whole_slot)
        windows = sorted([NIGHT, (SLOT_START, SLOT_END)])
    victron = {
        "enabled": True,
        "host": broker.host,
        "port": broker.port,
        "slots": [3, 4],
        "include_fixed_window": True,
        "offpeak_confidence": confidence,
    }

    async with simulated(product) as sim:
        state = sim.state
        clock = ShiftedClock(START, state)
        device = state.device(DEFAULT_EV_ID)
        state.add_dispatch(device, SLOT_START, SLOT_END, "SMART", 28.0)
        async with running_daemon(
            broker,
            sim,
            tmp_path,
            clock=clock,
            tariff={"allowance_hours": 2.0},
            victron=victron,
        ) as d:
            t = d.topics
            family = await d.watcher.wait_for(t.tariff, lambda p: '"account"' in p)
            assert json.loads(family.payload)["family"] == product
            await d.watcher.wait_for(t.planned, lambda p: len(json.loads(p)) == 1)

            # 12:58: the slot is planned, the car cannot have been seen charging yet.
            await gx_holds(d, planned_phase, timeout=20)
            assert owned(gx) == planned_phase

            # 13:20:40: a poll sees the car charging (the simulator's car charges while a smart
            # slot runs): the slot is confirmed.
            mark = len(d.watcher.messages)
            clock.jump_to(CONFIRMED)
            assert (await d.command("refresh", "now"))["status"] == "ok"
            await d.watcher.wait_for(
                t.offpeak_confidence, lambda p: p == "charging", after=mark, timeout=20
            )
            await gx_holds(d, charging_phase, timeout=20)
            assert owned(gx) == charging_phase
            assert carried(d) == [(z(start), z(end)) for start, end in windows]

    if (product, confidence) == ("four_rate", "auto"):
        # Never the slot as planned: not its 13:00 start, not its four hours.
        writes = [
            (path.rsplit("/", 1)[1], value) for n in (3, 4) for path, value in gx.writes_to(n)
        ]
        assert ("Start", whole_slot["Start"]) not in writes
        assert ("Duration", whole_slot["Duration"]) not in writes
    assert all(gx.slot(n) == USER_SLOTS[n] and not gx.writes_to(n) for n in USER_SLOTS)
    assert gx.retained_writes == []
