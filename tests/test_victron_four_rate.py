"""The Victron windows of a four-rate account, end to end: the daemon, the simulator's plan and
the fake GX (tests/gx_peer.py) over Mosquitto, on a simulated Wednesday (see
tests/test_four_rate_daemon.py for the shifted clock).

Two smart slots: 11:00-11:55, running when the daemon starts (the car charges, so the first
poll confirms it), and 12:00-16:00, longer than the car allowance of the period that starts at
noon (lowered to 2 h in ``[tariff]``). Both tariffs make whole half-hours of them, so the two
touch. The fixed night window is asked for (``include_fixed_window``). docs/victron.md says
what the GX then holds:

* four-rate, default ``offpeak_confidence = "auto"`` (= ``charging``): first the rest of the
  running slot (from the current minute to 12:00) and not the planned one; once the car is seen
  charging in it, the part within the allowance (to 14:00), from the current minute, not the
  whole slot;
* legacy, ``auto`` (= ``planned``): both slots as one window to 16:00, at once;
* four-rate with ``offpeak_confidence = "planned"``: both to the end of the allowance, at once.

All three get the night window. Each case's windows differ from the others', so the four-rate
assertions fail if the daemon read the plan by the legacy rule or took planned half-hours. The
planned slot is left out in the same write round that brings the running one, so its absence is
not a matter of looking too early.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ioagent.simulator.state import DEFAULT_EV_ID
from ioagent.simulator.tariffs import SimProduct
from tests.broker import Broker
from tests.clocks import ShiftedClock
from tests.gx_peer import USER_SLOTS, GxPeer, victron_section
from tests.harness import RunningDaemon, running_daemon
from tests.test_four_rate_daemon import at, simulated

# A Wednesday in January: London is on GMT, so local time is UTC and the GX's Day is 3.
START = at("2026-01-14 11:40:10")
RUNNING = (at("2026-01-14 11:00"), at("2026-01-14 11:55"))
"""Confirmed by the first poll; in the allowance period that ends at noon. It ends before the
next slot starts (Octopus sends touching slots as one), but its half-hours run to noon."""
NOON = at("2026-01-14 12:00")
LONG = (at("2026-01-14 12:00"), at("2026-01-14 16:00"))
"""Planned: its first 2 h are within the new period's allowance."""
ALLOWANCE_END = at("2026-01-14 14:00")
CONFIRMED = at("2026-01-14 12:20:40")
"""When a poll first sees the car charging in the long slot (the clock jumps there)."""
NIGHT = (at("2026-01-14 23:30"), at("2026-01-15 05:30"))
WEDNESDAY = 3


def minute(instant: datetime) -> datetime:
    return instant.replace(second=0)


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


def z(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def ordered(*slots: dict[str, Any]) -> list[dict[str, Any]]:
    """Slots in a fixed order: which owned slot gets which window is the connector's choice."""
    return sorted(slots, key=lambda fields: json.dumps(fields, sort_keys=True))


def owned(gx: GxPeer) -> list[dict[str, Any]]:
    return ordered(gx.slot(3), gx.slot(4))


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
    """Wait until the daemon reports every write made and the owned slots holding ``expected``."""
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


def carried(d: RunningDaemon) -> list[tuple[str, str]]:
    """The off-peak windows the owned slots carry, as the last status names them."""
    status = json.loads(d.watcher.last(d.topics.victron) or "{}")
    return sorted(
        (s["window_start"], s["window_end"]) for s in status["slots"].values() if s["enabled"]
    )


def starts_and_durations(gx: GxPeer) -> Counter[tuple[str, int]]:
    """Every ``Start`` and ``Duration`` written to the owned slots, whichever slot it went to
    (``Day`` is left out: enabling and disabling write only that)."""
    return Counter(
        (field, value)
        for n in (3, 4)
        for path, value in gx.writes_to(n)
        if (field := path.rsplit("/", 1)[1]) in ("Start", "Duration")
    )


def windows_written(*slots: dict[str, int]) -> Counter[tuple[str, int]]:
    return Counter((field, slot[field]) for slot in slots for field in ("Start", "Duration"))


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
    if product == "legacy":
        # One window: both slots, whole, as soon as they are planned.
        start_of_run = rest = gx_slot(minute(START), LONG[1])
        smart = (RUNNING[0], LONG[1])
    elif confidence == "planned":
        # Asked for: the planned half-hours too, still only those within the allowance. The
        # home's own rule ([tariff] smart_offpeak) stays auto = charging: the battery's choice
        # is its own.
        start_of_run = rest = gx_slot(minute(START), ALLOWANCE_END)
        smart = (RUNNING[0], ALLOWANCE_END)
    else:
        # The running slot only; then, once the car is seen charging in the long one, from
        # that minute to the end of the allowance. The slot carries the home's cheap stretch.
        start_of_run = gx_slot(minute(START), NOON)
        rest = gx_slot(minute(CONFIRMED), ALLOWANCE_END)
        smart = (RUNNING[0], ALLOWANCE_END)
    victron = victron_section(broker, include_fixed_window=True, offpeak_confidence=confidence)

    async with simulated(product) as sim:
        state = sim.state
        clock = ShiftedClock(START, state)
        device = state.device(DEFAULT_EV_ID)
        state.add_dispatch(device, *RUNNING, "SMART", 7.0)
        state.add_dispatch(device, *LONG, "SMART", 28.0)
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

            # 11:40: the first slot runs and the car charges; the long one is only planned.
            await gx_holds(d, ordered(night, start_of_run), timeout=20)
            assert owned(gx) == ordered(night, start_of_run)

            # 12:20:40: a poll sees the car charging in the long slot: it is confirmed. The same
            # poll brings the first slot's completed record, published as the plan is read
            # again, just before the windows are.
            mark = len(d.watcher.messages)
            clock.jump_to(CONFIRMED)
            assert (await d.command("refresh", "now"))["status"] == "ok"
            await d.watcher.wait_for(
                t.completed, lambda p: len(json.loads(p)) == 1, after=mark, timeout=20
            )
            # The tariff topics follow the plan's: a loaded soak run read confidence between the
            # two, while it still said "planned". Wait for the latest value to say "charging"
            # (it may already have said so before the jump, and then is not published again).
            async with asyncio.timeout(10):
                while d.watcher.last(t.offpeak_confidence) != "charging":
                    await asyncio.sleep(0.05)
            await gx_holds(d, ordered(night, rest), timeout=20)
            assert owned(gx) == ordered(night, rest)
            # The windows the slots carry: the whole stretches, not cut at the clock.
            assert carried(d) == sorted([(z(NIGHT[0]), z(NIGHT[1])), (z(smart[0]), z(smart[1]))])

    # Nothing else was ever written: never the planned slot, nor a running window again.
    steps = [night, start_of_run] if rest == start_of_run else [night, start_of_run, rest]
    assert starts_and_durations(gx) == windows_written(*steps)
    assert all(gx.slot(n) == USER_SLOTS[n] and not gx.writes_to(n) for n in USER_SLOTS)
    assert gx.retained_writes == []
