"""The poll policy on a fake clock: the real Poller and AccountAgent against the simulator.

The rig is the fault storm's (:func:`tests.faults.test_api_storm.rig`): APScheduler is replaced
by a scheduler that fires the poller's own jobs when the fake clock reaches them, so each test
walks through an hour or more of polling in well under a second.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ioagent.budget import REGULAR_RESERVE, avoid_boundary
from ioagent.config import PollingSettings
from ioagent.mqtt.commands import Command, CommandRejection, parse_command
from ioagent.runtime.command_runner import CommandRunner
from ioagent.runtime.poller import Poller
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_EV_ID,
    SimDevice,
    SimPreferences,
    SimulatorState,
    default_schedules,
)
from ioagent.timeutil import parse_iso
from tests.faults.test_api_storm import SEED, FakeClock, Rig, rig, rolling_maximum

START = datetime(2026, 1, 14, 9, 3, 41, tzinfo=UTC)
"""The simulated account polls regularly 80 s after :00 and :30 (09:31:20, 10:01:20, ...)."""


def sim_state(clock: FakeClock) -> SimulatorState:
    return SimulatorState.with_default_account(clock=clock, seed=SEED)


def poll_times(r: Rig) -> list[datetime]:
    return [at for at, _ in r.log.outcomes]


async def run_until(r: Rig, end: datetime) -> None:
    """Jump the clock from one due job to the next, firing each at its own instant, up to ``end``."""
    while True:
        due = [job.next_run_time for job in r.scheduler.jobs.values() if job.next_run_time]
        upcoming = min(due, default=None)
        if upcoming is None or upcoming > end:
            r.clock.now = max(r.clock.now, end)
            return
        r.clock.now = max(r.clock.now, upcoming)
        await r.scheduler.fire_due()
        await r.settle()


def planned_fields(state: SimulatorState) -> list[datetime]:
    """One instant per flexPlannedDispatches query the simulator answered (several per request)."""
    return [
        parse_iso(entry["at"])
        for entry in state.calls()["log"]
        for operation in entry["operations"]
        if operation == "flexPlannedDispatches"
    ]


async def test_extra_polls_go_on_between_regular_polls_once_the_budget_refuses_one() -> None:
    clock = FakeClock(START)
    state = sim_state(clock)
    device = state.device(DEFAULT_EV_ID)
    state.add_dispatch(
        device, START + timedelta(minutes=20), START + timedelta(hours=3), "SMART", 30
    )
    # Every 2 minutes is more than the hour's budget (less the regular polls' reserve) allows.
    settings = PollingSettings(active_interval=120)
    async with rig(state, clock, settings) as r:
        await run_until(r, START + timedelta(hours=2))
        polls = poll_times(r)
    between_regular_polls = [
        at
        for at in polls
        if datetime(2026, 1, 14, 10, 1, 20, tzinfo=UTC)
        < at
        < datetime(2026, 1, 14, 10, 31, 20, tzinfo=UTC)
    ]
    assert between_regular_polls, "extra polls must go on while the session is active"
    assert rolling_maximum(r.log.sent(), timedelta(hours=1)) <= 20
    assert rolling_maximum(r.log.sent(), timedelta(minutes=1)) <= 4


async def test_a_refused_extra_poll_comes_back_at_the_budgets_next_allowed_instant() -> None:
    clock = FakeClock(START)
    state = sim_state(clock)
    device = state.device(DEFAULT_EV_ID)
    state.add_dispatch(
        device, START + timedelta(minutes=20), START + timedelta(hours=3), "SMART", 30
    )
    active = f"active:{DEFAULT_ACCOUNT}"
    refused = 0
    async with rig(state, clock, PollingSettings(active_interval=120)) as r:
        while clock() < START + timedelta(hours=2):
            assert r.scheduler.get_job(active) is not None, "active polls stopped"
            job = min(r.scheduler.jobs.values(), key=lambda j: j.next_run_time or clock())
            fires_at = job.next_run_time
            assert fires_at is not None
            before = len(r.log.outcomes)
            await run_until(r, fires_at)
            if job.id == active and len(r.log.outcomes) == before:
                # Refused: back at the first instant the budget (less the reserve) allows it.
                refused += 1
                expected = r.poller.budget.next_allowed(fires_at, 1, reserve=REGULAR_RESERVE)
                job = r.scheduler.get_job(active)
                assert job is not None and job.next_run_time == avoid_boundary(expected)
    assert refused >= 2
    assert rolling_maximum(r.log.sent(), timedelta(hours=1)) <= 20


async def test_the_pending_active_poll_is_withdrawn_when_a_poll_finds_the_session_over() -> None:
    clock = FakeClock(START)
    state = sim_state(clock)
    device = state.device(DEFAULT_EV_ID)
    slot = state.add_dispatch(
        device, START + timedelta(minutes=20), START + timedelta(minutes=50), "SMART", 3
    )
    async with rig(state, clock) as r:
        assert r.scheduler.get_job(f"active:{DEFAULT_ACCOUNT}") is not None
        await r.tick(100)
        state.remove_dispatch(device, slot.start)  # Octopus dropped the plan
        assert await r.refresh()
        await run_until(r, START + timedelta(minutes=20))
        assert poll_times(r) == [START, START + timedelta(seconds=100)]


async def test_a_poll_deferred_out_of_the_quiet_seconds_keeps_every_reason() -> None:
    start = datetime(2026, 1, 14, 9, 23, 52, tzinfo=UTC)
    clock = FakeClock(start)
    state = sim_state(clock)
    device = state.device(DEFAULT_EV_ID)
    state.add_dispatch(
        device, start + timedelta(minutes=20), start + timedelta(hours=2), "SMART", 9
    )
    # 4 an hour: with 2 spent, an extra poll (2 kept for the regular ones) no longer fits,
    # while a refresh, which may use them, does.
    async with rig(state, clock, PollingSettings(planned_per_hour=4)) as r:
        await r.tick(60)
        assert await r.refresh()  # 09:24:52; the next active poll is due at 09:29:52
        clock.now = datetime(2026, 1, 14, 9, 30, 3, tzinfo=UTC)  # the scheduler fires it late
        assert r.poller.try_refresh().accepted  # the user asks at the same moment
        await r.scheduler.fire_due()
        await r.settle()
        await run_until(r, datetime(2026, 1, 14, 9, 31, 0, tzinfo=UTC))
        assert poll_times(r)[-1] == datetime(2026, 1, 14, 9, 30, 20, tzinfo=UTC)


def add_device(state: SimulatorState, index: int) -> None:
    state.add_device(
        SimDevice(
            id=f"00000000-5117-4e0a-9c1d-00000000010{index}",
            account=DEFAULT_ACCOUNT,
            typename="SmartFlexVehicle",
            provider="TESLA",
            device_type="ELECTRIC_VEHICLES",
            make="Tesla",
            model=f"Model {index}",
            preferences=SimPreferences(default_schedules()),
        )
    )


async def test_the_first_poll_of_a_multi_device_account_is_charged_per_device() -> None:
    clock = FakeClock(START)
    state = sim_state(clock)
    add_device(state, 1)
    add_device(state, 2)
    async with rig(state, clock) as r:
        assert len(r.agent.devices) == 3
        first = planned_fields(state)
        assert len(first) == 3
        assert r.poller.budget.used_last_hour(clock()) == len(first)
        # Had the first poll been counted as 1, this refresh would fit the minute and send 3 more.
        await r.tick(5)
        assert not await r.refresh()
        assert rolling_maximum(planned_fields(state), timedelta(minutes=1)) <= 4


async def test_a_refused_refresh_names_the_instant_its_poll_really_runs() -> None:
    clock = FakeClock(START)
    state = sim_state(clock)
    replies: list[tuple[str, str | None]] = []

    async def reply(command: Command | CommandRejection, status: str, error: str | None) -> None:
        replies.append((status, error))

    def refresh_command() -> Command | CommandRejection:
        return parse_command(
            "refresh",
            b"now",
            retained=False,
            now=clock(),
            message_age=0.0,
            max_age=60.0,
            device_ids=[DEFAULT_EV_ID],
        )

    async with rig(state, clock) as r:
        runner = CommandRunner(r.agent, r.poller, reply, clock=clock)
        await r.tick(61)
        for _ in range(4):  # the minute's 4 planned-dispatch queries
            await runner.submit(refresh_command())
            await r.settle()
            await r.tick(2)
        assert [status for status, _ in replies] == ["ok"] * 4
        await runner.submit(refresh_command())
        status, error = replies[-1]
        assert status == "error" and error is not None
        promised = parse_iso(error.rsplit(" ", 1)[1])
        assert "budget" in error and promised > clock()
        polls_before = len(r.log.outcomes)
        await run_until(r, promised + timedelta(minutes=5))
        assert poll_times(r)[polls_before:][:1] == [promised]


async def test_a_poll_scheduled_on_a_shifted_clock_runs_when_the_wall_clock_says() -> None:
    """The demo runs the daemon on an evening clock; APScheduler still fires by the wall clock."""
    shift = timedelta(hours=10, minutes=17, seconds=3)

    def evening() -> datetime:
        return datetime.now(UTC) + shift

    state = SimulatorState.with_default_account(clock=evening, seed=SEED)
    async with rig(state, FakeClock(START)) as r:
        poller = Poller(
            r.agent, PollingSettings(), clock=evening, scheduler_clock=lambda: datetime.now(UTC)
        )
        scheduler = AsyncIOScheduler(timezone=UTC)
        poller.install(scheduler)
        scheduler.start()
        try:
            at = poller.schedule(evening() + timedelta(seconds=0.3), "recheck", key="soon")
            estimate = poller.next_poll_estimate()
            assert estimate is not None and abs(estimate - at) < timedelta(seconds=1)
            async with asyncio.timeout(5):
                reason = await poller._requests.get()
            assert reason == "recheck"
        finally:
            scheduler.shutdown(wait=False)
