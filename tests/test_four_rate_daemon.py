"""A four-rate account end to end: the daemon, the simulator and Mosquitto, over a simulated
evening, night and noon (the clocks of both are shifted to them; the flips are still timed on
the real clock).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest

from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_EV_ID, SimulatorState
from ioagent.simulator.tariffs import SimProduct
from ioagent.timeutil import utc_now
from tests.broker import Broker
from tests.clocks import ShiftedClock
from tests.harness import RunningDaemon, Seen, running_daemon


@asynccontextmanager
async def simulated(product: SimProduct) -> AsyncIterator[RunningSimulator]:
    async with run_simulator(
        SimulatorState.with_default_account(clock=utc_now, product=product)
    ) as running:
        yield running


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)  # winter: London is UTC


async def flip(
    d: RunningDaemon, topic: str, predicate: Callable[[str], bool], after: int, timeout: float = 40
) -> Seen:
    return await d.watcher.wait_for(topic, predicate, after=after, timeout=timeout)


async def jump_and_refresh(d: RunningDaemon, clock: ShiftedClock, instant: datetime) -> int:
    """Move both clocks to ``instant`` and ask for a poll (which re-arms the boundary timer);
    returns the watcher's mark to look for the next flips after."""
    clock.jump_to(instant)
    assert (await d.command("refresh", "now"))["status"] == "ok"
    return len(d.watcher.messages)


def assert_on_time(seen: Seen, clock: ShiftedClock, boundary: datetime) -> None:
    lateness = seen.at - clock.real(boundary)
    assert 0 <= lateness < 1.0, f"{seen.topic}={seen.payload} {lateness:+.3f}s"


async def test_four_rate_evening_flips_exactly(broker: Broker, tmp_path: object) -> None:
    async with simulated("four_rate") as sim:
        state = sim.state
        clock = ShiftedClock(at("2026-01-15 19:29:42"), state)
        device = state.device(DEFAULT_EV_ID)
        state.add_dispatch(device, at("2026-01-15 19:30"), at("2026-01-15 21:00"), "SMART", 10.5)
        async with running_daemon(
            broker,
            sim,
            tmp_path,
            clock=clock,
            tariff={"allowance_hours": 1.0},  # type: ignore[arg-type]
        ) as d:
            t = d.topics
            seen = await d.watcher.wait_for(t.tariff, lambda p: '"account"' in p)
            tariff = json.loads(seen.payload)
            assert tariff["family"] == "four_rate"
            assert tariff["product"] == "IOG-SMB-VAR-24-10-29"
            await d.watcher.wait_for(t.planned, lambda p: len(json.loads(p)) == 1)
            # The tariff topics follow the first poll (published by the boundary task once it
            # has landed), so wait for them rather than read them at once.
            for topic, value in (
                (t.offpeak, "false"),
                (t.allowance_remaining, "1.00"),
                (t.allowance_resets_at, "2026-01-16T12:00:00Z"),
                (t.allowance_exhausted_at, "2026-01-15T20:30:00Z"),
            ):
                await d.watcher.wait_for(topic, timeout=10)
                assert d.watcher.last(topic) == value, topic
            # The rates come from the products REST feeds: home day rate, car peak rate now.
            await d.watcher.wait_for(t.rate_home, lambda p: p == "30.371355")
            await d.watcher.wait_for(t.rate_ev, lambda p: p == "27.4785")
            rows = json.loads((await d.watcher.wait_for(t.rates)).payload)
            assert len(rows) == 48 and rows[0]["start"] == "2026-01-15T19:00:00Z"
            assert rows[1] == {
                "start": "2026-01-15T19:30:00Z",
                "home": 30.371355,
                "ev": 6.89997,
                "home_offpeak": False,
                "ev_offpeak": True,
            }
            mark = len(d.watcher.messages)

            # 19:30: the car's low rate and the allowance start at once; the home bonus waits
            # for the car to be seen charging (smart_offpeak = charging on four-rate).
            ev_on = await flip(d, t.ev_offpeak, lambda p: p == "true", mark)
            remaining = await flip(d, t.allowance_remaining, lambda p: p == "0.50", mark)
            planned = await flip(d, t.offpeak_confidence, lambda p: p == "planned", mark)
            for seen in (ev_on, remaining, planned):
                assert_on_time(seen, clock, at("2026-01-15 19:30"))
            assert d.watcher.last(t.offpeak) == "false"

            # A poll after the quiet seconds sees the car charging: the home bonus starts.
            clock.jump_to(at("2026-01-15 19:30:40"))
            assert (await d.command("refresh", "now"))["status"] == "ok"
            await flip(d, t.offpeak_confidence, lambda p: p == "charging", mark, timeout=20)
            await flip(d, t.offpeak, lambda p: p == "true", mark, timeout=5)
            await flip(d, t.rate_home, lambda p: p == "6.89997", mark, timeout=5)

            # 20:00: the second half-hour uses the rest of the allowance.
            mark = await jump_and_refresh(d, clock, at("2026-01-15 19:59:44"))
            used_up = await flip(d, t.allowance_remaining, lambda p: p == "0.00", mark)
            assert_on_time(used_up, clock, at("2026-01-15 20:00"))
            assert d.watcher.last(t.offpeak) == "true"

            # 20:30: beyond the allowance. The car still charges, at its standard rate.
            mark = await jump_and_refresh(d, clock, at("2026-01-15 20:29:44"))
            home_off = await flip(d, t.offpeak, lambda p: p == "false", mark)
            ev_off = await flip(d, t.ev_offpeak, lambda p: p == "false", mark)
            none = await flip(d, t.offpeak_confidence, lambda p: p == "none", mark)
            for seen in (home_off, ev_off, none):
                assert_on_time(seen, clock, at("2026-01-15 20:30"))
            assert d.watcher.last(t.dispatching) == "true"
            upcoming = json.loads(d.watcher.last(t.transitions) or "[]")
            assert {"ev_offpeak", "confidence"} <= set(upcoming[0])


async def test_a_migration_from_legacy_changes_the_rules_without_a_restart(
    broker: Broker, tmp_path: object
) -> None:
    async with simulated("legacy") as sim:
        state = sim.state
        clock = ShiftedClock(at("2026-01-15 19:10:00"), state)
        device = state.device(DEFAULT_EV_ID)
        state.add_dispatch(device, at("2026-01-15 19:00"), at("2026-01-15 20:00"), "SMART", 7.0)
        # Planned, and the car never draws: legacy bills it low, four-rate gives no bonus.
        state.set_draws(device, at("2026-01-15 19:00"), False)
        switch = at("2026-01-15 19:10:20")
        state.migrate(DEFAULT_ACCOUNT, "four_rate", switch)  # announced: it starts at 19:10:20
        async with running_daemon(broker, sim, tmp_path, clock=clock) as d:
            t = d.topics
            await d.watcher.wait_for(t.tariff, lambda p: json.loads(p)["family"] == "legacy")
            await d.watcher.wait_for(t.offpeak, lambda p: p == "true")
            # One publish writes offpeak, then confidence, allowance and dispatching: wait for
            # its last topic, so the reads below see that publish and not a half of it.
            await d.watcher.wait_for(t.dispatching, lambda p: p in ("true", "false"))
            assert d.watcher.last(t.offpeak_confidence) == "planned"
            assert d.watcher.last(t.allowance_remaining) is None, "legacy has no allowance"
            mark = len(d.watcher.messages)
            family = await flip(d, t.tariff, lambda p: json.loads(p)["family"] == "four_rate", mark)
            home_off = await flip(d, t.offpeak, lambda p: p == "false", mark)
            remaining = await flip(d, t.allowance_remaining, lambda p: p == "5.50", mark)
            for seen in (family, home_off, remaining):
                assert_on_time(seen, clock, switch)
            assert d.watcher.last(t.ev_offpeak) == "true"
            assert d.watcher.last(t.offpeak_confidence) == "planned"
            assert json.loads(family.payload)["product"] == "IOG-SMB-VAR-24-10-29"


@pytest.mark.timeout(240)  # four simulated stretches, each waited out on the real clock
async def test_four_rate_night_and_noon_reset_flip_exactly(
    broker: Broker, tmp_path: object
) -> None:
    # The same evening's night: a smart charge inside the window counts towards the allowance,
    # the window ends at 05:30 whatever the car does, and the allowance resets at local noon.
    async with simulated("four_rate") as sim:
        state = sim.state
        clock = ShiftedClock(at("2026-01-15 23:29:42"), state)
        device = state.device(DEFAULT_EV_ID)
        state.add_dispatch(device, at("2026-01-15 23:30"), at("2026-01-16 01:30"), "SMART", 14.0)
        async with running_daemon(broker, sim, tmp_path, clock=clock) as d:
            t = d.topics
            await d.watcher.wait_for(t.tariff, lambda p: '"four_rate"' in p and '"account"' in p)
            await d.watcher.wait_for(t.planned, lambda p: len(json.loads(p)) == 1)
            for topic, value in (
                (t.offpeak, "false"),
                (t.offpeak_confidence, "none"),
                (t.ev_offpeak, "false"),
                (t.allowance_remaining, "6.00"),
                (t.allowance_exhausted_at, "none"),  # 2 h of 6: the plan does not use it up
            ):
                await d.watcher.wait_for(topic, lambda p, v=value: p == v, timeout=10)
            mark = len(d.watcher.messages)

            # 23:30: the window (guaranteed, whether or not the car draws) and the car's low
            # rate start together; the night's half-hours use the allowance as they start.
            home_on = await flip(d, t.offpeak, lambda p: p == "true", mark)
            sure = await flip(d, t.offpeak_confidence, lambda p: p == "guaranteed", mark)
            ev_on = await flip(d, t.ev_offpeak, lambda p: p == "true", mark)
            used = await flip(d, t.allowance_remaining, lambda p: p == "5.50", mark)
            for seen in (home_on, sure, ev_on, used):
                assert_on_time(seen, clock, at("2026-01-15 23:30"))

            # 01:30: the slot ends; the home stays low (the window), the car's rate goes up.
            mark = await jump_and_refresh(d, clock, at("2026-01-16 01:29:44"))
            ev_off = await flip(d, t.ev_offpeak, lambda p: p == "false", mark)
            assert_on_time(ev_off, clock, at("2026-01-16 01:30"))
            assert d.watcher.last(t.offpeak) == "true"
            assert d.watcher.last(t.allowance_remaining) == "4.00"

            # 05:30: the window ends.
            mark = await jump_and_refresh(d, clock, at("2026-01-16 05:29:44"))
            home_off = await flip(d, t.offpeak, lambda p: p == "false", mark)
            peak = await flip(d, t.offpeak_confidence, lambda p: p == "none", mark)
            for seen in (home_off, peak):
                assert_on_time(seen, clock, at("2026-01-16 05:30"))

            # 12:00: a new noon-to-noon period, with the whole allowance again.
            mark = await jump_and_refresh(d, clock, at("2026-01-16 11:59:44"))
            reset = await flip(d, t.allowance_remaining, lambda p: p == "6.00", mark)
            resets_at = await flip(
                d, t.allowance_resets_at, lambda p: p == "2026-01-17T12:00:00Z", mark
            )
            for seen in (reset, resets_at):
                assert_on_time(seen, clock, at("2026-01-16 12:00"))
            assert d.watcher.last(t.offpeak) == "false"
