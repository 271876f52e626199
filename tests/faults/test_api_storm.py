"""API fault storm: every simulator fault kind, in a seeded random order, across many polls.

The real :class:`AccountAgent` and :class:`Poller` run against the simulator over loopback, but
on a fake clock shared with the simulator, so hours of polling pass in seconds. APScheduler is
replaced by :class:`FakeTimeScheduler`, which fires the poller's own jobs (regular cron polls,
active polls, back-off retries, budget deferrals) when the fake clock passes them: every timing
rule of the poller runs unchanged. A user who keeps asking for ``refresh`` is simulated by
calling :meth:`Poller.try_refresh`, the refresh command's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from ioagent.config import PollingSettings, TariffSettings
from ioagent.kraken.client import KrakenClient
from ioagent.mqtt.topics import Topics
from ioagent.runtime.agent import AccountAgent, PollOutcome
from ioagent.runtime.poller import Poller, PollReason
from ioagent.simulator.server import run_simulator
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_EV_ID,
    FAULT_KINDS,
    SimulatorState,
)
from ioagent.timeutil import iso_z, parse_iso

SEED = int(os.environ.get("IOAGENT_STORM_SEED", "20260114"))
START = datetime(2026, 1, 14, 9, 3, 41, tzinfo=UTC)
TIMEOUT_FAULT_DELAY = 0.5
"""Real seconds the simulator stalls for a ``timeout`` fault; the client gives up after 0.25."""
MAX_PER_MINUTE = 4
MAX_PER_HOUR = 20


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeJob:
    id: str
    func: Callable[..., Awaitable[None]]
    trigger: Any
    args: tuple[Any, ...]
    next_run_time: datetime | None


class FakeTimeScheduler:
    """The part of APScheduler's interface the poller uses, firing jobs on a fake clock."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.jobs: dict[str, FakeJob] = {}

    def add_job(
        self,
        func: Callable[..., Awaitable[None]],
        trigger: Any,
        args: list[Any] | tuple[Any, ...] = (),
        id: str | None = None,
        **_options: Any,
    ) -> FakeJob:
        job_id = id or f"job{len(self.jobs)}"
        first = trigger.get_next_fire_time(None, self.clock())
        job = FakeJob(job_id, func, trigger, tuple(args), first)
        self.jobs[job_id] = job  # replace_existing=True is what the poller always asks for
        return job

    def get_job(self, job_id: str) -> FakeJob | None:
        return self.jobs.get(job_id)

    def get_jobs(self) -> list[FakeJob]:
        return list(self.jobs.values())

    def remove_job(self, job_id: str) -> None:
        del self.jobs[job_id]  # APScheduler raises JobLookupError for an unknown id

    async def fire_due(self) -> int:
        """Run every job that is due (once, as with coalesce=True); return how many ran."""
        now = self.clock()
        due = sorted(
            (j for j in self.jobs.values() if j.next_run_time and j.next_run_time <= now),
            key=lambda j: j.next_run_time or now,
        )
        for job in due:
            fired = job.next_run_time
            await job.func(*job.args)
            upcoming = job.trigger.get_next_fire_time(fired, now)
            while upcoming is not None and upcoming <= now:
                upcoming = job.trigger.get_next_fire_time(upcoming, now)
            if upcoming is None:
                if self.jobs.get(job.id) is job:
                    del self.jobs[job.id]
            else:
                job.next_run_time = upcoming
        return len(due)


@dataclass
class RecordingPublisher:
    retained: dict[str, str] = field(default_factory=dict)
    count: int = 0

    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        self.count += 1
        if retain:
            self.retained[topic] = payload


@dataclass
class PlannedQuery:
    at: datetime
    account: str | None
    """None when the simulator could not tie the request to a user (refused token, HTTP error)."""


@dataclass
class StormLog:
    outcomes: list[tuple[datetime, PollOutcome]] = field(default_factory=list)
    planned_queries: list[PlannedQuery] = field(default_factory=list)
    refresh_asked: int = 0
    refresh_accepted: int = 0
    injected: list[str] = field(default_factory=list)

    def sent(self) -> list[datetime]:
        return [query.at for query in self.planned_queries]

    def counted_for_the_account(self) -> list[datetime]:
        return [query.at for query in self.planned_queries if query.account == DEFAULT_ACCOUNT]


def rolling_maximum(instants: list[datetime], window: timedelta) -> int:
    ordered = sorted(instants)
    worst = 0
    low = 0
    for high, at in enumerate(ordered):
        while ordered[low] <= at - window:
            low += 1
        worst = max(worst, high - low + 1)
    return worst


def test_rolling_maximum_counts_half_open_windows() -> None:
    t = START
    calls = [t + timedelta(seconds=61), t, t + timedelta(seconds=60)]
    # A call exactly one window earlier has left it, as in the simulator's own rate limit.
    assert rolling_maximum(calls, timedelta(seconds=60)) == 2
    assert rolling_maximum(calls, timedelta(seconds=62)) == 3
    assert rolling_maximum([], timedelta(seconds=60)) == 0


def collect_planned_calls(state: SimulatorState, log: StormLog) -> None:
    calls = state.calls()
    assert calls["total"] < 500, "the simulator's call log (500 entries) must not have wrapped"
    log.planned_queries += [
        PlannedQuery(parse_iso(entry["at"]), entry["account"])
        for entry in calls["log"]
        if "flexPlannedDispatches" in entry["operations"]
    ]
    state.reset_calls()


def fault_order(rng: random.Random, rounds: int) -> list[str]:
    order: list[str] = []
    for _ in range(rounds):
        kinds = list(FAULT_KINDS)
        rng.shuffle(kinds)
        order += kinds
    return order


@dataclass
class Rig:
    """The real agent and poller on a fake clock, polling the simulator over loopback."""

    clock: FakeClock
    state: SimulatorState
    agent: AccountAgent
    poller: Poller
    scheduler: FakeTimeScheduler
    publisher: RecordingPublisher
    topics: Topics
    log: StormLog
    worker: asyncio.Task[None]
    in_flight: list[int]

    async def settle(self) -> None:
        """Until the poller has taken every request and no poll is running."""
        async with asyncio.timeout(30):
            while True:
                for _ in range(3):
                    await asyncio.sleep(0)
                # The queue is the poller's own; it is read only to know when it is idle.
                if self.poller._requests.empty() and not self.in_flight[0]:
                    break
                await asyncio.sleep(0.001)
        assert not self.worker.done(), "the poller task must never end"

    async def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.scheduler.fire_due()
        await self.settle()

    async def refresh(self) -> bool:
        self.log.refresh_asked += 1
        accepted = self.poller.try_refresh().accepted
        self.log.refresh_accepted += accepted
        await self.settle()
        return accepted


@contextlib.asynccontextmanager
async def rig(
    state: SimulatorState, clock: FakeClock, settings: PollingSettings | None = None
) -> AsyncIterator[Rig]:
    topics = Topics("ioagent", DEFAULT_ACCOUNT)
    publisher = RecordingPublisher()
    log = StormLog()
    async with run_simulator(state) as sim:
        client = KrakenClient(
            sim.graphql_url,
            SecretStr(DEFAULT_API_KEY),
            connect_timeout=2.0,
            read_timeout=TIMEOUT_FAULT_DELAY / 2,
            clock=clock,
        )
        async with client:
            agent = AccountAgent(
                account=DEFAULT_ACCOUNT,
                client=client,
                publisher=publisher,
                store=None,
                topics=topics,
                tariff=TariffSettings(),
                clock=clock,
            )

            async def on_polled(outcome: PollOutcome) -> None:
                log.outcomes.append((clock(), outcome))

            poller = Poller(
                agent,
                settings or PollingSettings(),
                clock=clock,
                on_polled=on_polled,
                rng=random.Random(SEED),
            )
            in_flight = [0]
            original_poll_for = poller._poll_for

            async def counted_poll_for(reasons: set[PollReason]) -> None:
                in_flight[0] += 1
                try:
                    await original_poll_for(reasons)
                finally:
                    in_flight[0] -= 1

            # Instrumentation: counts poll requests being worked on (a poll may first list the
            # devices, then query the plans).
            poller._poll_for = counted_poll_for
            scheduler = FakeTimeScheduler(clock)
            poller.install(scheduler)  # duck-typed: add_job/get_job/get_jobs/remove_job
            worker = asyncio.create_task(poller.run(), name="storm-poller")
            the_rig = Rig(
                clock, state, agent, poller, scheduler, publisher, topics, log, worker, in_flight
            )
            try:
                poller.request("start")
                await the_rig.settle()
                assert log.outcomes and log.outcomes[0][1].ok, "the first poll must succeed"
                yield the_rig
                collect_planned_calls(state, log)
            finally:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker


class HealthCheck:
    """After every poll: the plan is kept, and a failure shows as a growing staleness."""

    def __init__(self, rig: Rig, kept: datetime) -> None:
        self.rig = rig
        self.kept = kept
        self.checked = 0
        self.last_success: datetime | None = None
        self.stale_before: int | None = None

    def after_poll(self, now: datetime, outcome: PollOutcome) -> None:
        self.checked += 1
        retained = self.rig.publisher.retained
        planned = json.loads(retained[self.rig.topics.planned])
        assert iso_z(self.kept) in [slot["start"] for slot in planned], (
            "the last known plan must be kept whatever the API does"
        )
        api = json.loads(retained[self.rig.topics.api])
        if outcome.ok:
            assert api["state"] == "ok"
            self.last_success, self.stale_before = now, None
            return
        assert api["state"] != "ok", api
        assert self.last_success is not None
        assert api["last_success"] == iso_z(self.last_success)
        assert api["stale_seconds"] == int((now - self.last_success).total_seconds())
        if self.stale_before is not None:
            assert api["stale_seconds"] > self.stale_before, "stale_seconds must grow"
        self.stale_before = api["stale_seconds"]


async def run_storm(hours: float, rounds: int) -> StormLog:
    rng = random.Random(SEED)
    clock = FakeClock(START)
    state = SimulatorState.with_default_account(clock=clock, seed=SEED)
    device = state.device(DEFAULT_EV_ID)
    # A slot running across the whole storm keeps the poller in "active" mode (extra polls),
    # and one far ahead is the plan that must survive every failure.
    running = state.add_dispatch(
        device, START + timedelta(minutes=20), START + timedelta(hours=3 * hours), "SMART", 30.0
    )
    kept = state.add_dispatch(
        device,
        START + timedelta(hours=3 * hours + 1),
        START + timedelta(hours=3 * hours + 2),
        "SMART",
        7.0,
    )
    faults = fault_order(rng, rounds)
    async with rig(state, clock) as r:
        health = HealthCheck(r, kept.start)
        health.after_poll(*r.log.outcomes[0])
        end = START + timedelta(hours=hours)
        give_up = end + timedelta(hours=hours)
        ticks = 0
        # At least ``hours``, and on until every fault has been met by a poll.
        while clock() < end or faults or state.faults:
            assert clock() < give_up, f"faults left unmet: {faults} {state.faults}"
            recovered = r.log.outcomes[-1][1].ok
            if faults and recovered and not state.faults and rng.random() < 0.2:
                kind = faults.pop(0)
                state.add_fault(kind, rng.randint(1, 3), delay=TIMEOUT_FAULT_DELAY)
                r.log.injected.append(kind)
            seen = len(r.log.outcomes)
            await r.tick(rng.uniform(2.0, 20.0))
            if rng.random() < 0.35:
                await r.refresh()
            for at, outcome in r.log.outcomes[seen:]:
                health.after_poll(at, outcome)
            ticks += 1
            if ticks % 100 == 0:
                collect_planned_calls(state, r.log)
        assert health.checked == len(r.log.outcomes)
        plan_starts = [slot.start for slot in r.agent.plan]
        assert kept.start in plan_starts and running.start in plan_starts
        return r.log


def assert_storm(log: StormLog, rounds: int) -> None:
    assert sorted(log.injected) == sorted(FAULT_KINDS * rounds)
    failures = [outcome for _, outcome in log.outcomes if not outcome.ok]
    assert len(failures) >= rounds * 5, "the storm must actually make polls fail"
    assert any(outcome.ok for _, outcome in log.outcomes[1:]), "polls recover between faults"
    assert log.refresh_asked > log.refresh_accepted > 0, "refresh spam must hit the budget"
    counted = log.counted_for_the_account()
    minute = rolling_maximum(counted, timedelta(minutes=1))
    hour = rolling_maximum(counted, timedelta(hours=1))
    print(
        f"\nstorm: seed={SEED} polls={len(log.outcomes)} failed={len(failures)} "
        f"flexPlannedDispatches sent={len(log.sent())} counted for the account={len(counted)} "
        f"refresh asked={log.refresh_asked} accepted={log.refresh_accepted} "
        f"worst minute={minute} worst hour={hour} "
        f"(all sent: minute={rolling_maximum(log.sent(), timedelta(minutes=1))} "
        f"hour={rolling_maximum(log.sent(), timedelta(hours=1))})"
    )
    assert minute <= MAX_PER_MINUTE, f"{minute} flexPlannedDispatches in one rolling minute"
    assert hour <= MAX_PER_HOUR, f"{hour} flexPlannedDispatches in one rolling hour"
    # Failed requests (HTTP errors, refused tokens) count against Octopus's limits too.
    sent = log.sent()
    sent_minute = rolling_maximum(sent, timedelta(minutes=1))
    sent_hour = rolling_maximum(sent, timedelta(hours=1))
    assert sent_minute <= MAX_PER_MINUTE, f"{sent_minute} sent in one rolling minute, all told"
    assert sent_hour <= MAX_PER_HOUR, f"{sent_hour} sent in one rolling hour, all told"


async def test_fault_storm_keeps_the_plan_marks_it_stale_and_keeps_the_budget() -> None:
    rounds = 2
    log = await run_storm(hours=12, rounds=rounds)
    assert len(log.outcomes) >= 100
    assert_storm(log, rounds)


@pytest.mark.soak
async def test_fault_storm_soak() -> None:
    rounds = 12
    log = await run_storm(hours=72, rounds=rounds)
    assert_storm(log, rounds)


async def test_a_token_refused_mid_poll_does_not_push_queries_past_the_minute_cap() -> None:
    clock = FakeClock(START)
    state = SimulatorState.with_default_account(clock=clock, seed=SEED)
    async with rig(state, clock) as r:
        await r.tick(61)  # the start poll has left the minute window
        state.add_fault("auth_error", 1)
        accepted = 0
        for _ in range(6):
            accepted += await r.refresh()
            await r.tick(5)
        # The retry after the refused token is a query too, and is paid from the same budget.
        assert accepted == MAX_PER_MINUTE - 1, "3 polls plus the retry make the 4 allowed"
    sent = rolling_maximum(r.log.sent(), timedelta(minutes=1))
    assert sent <= MAX_PER_MINUTE, f"{sent} flexPlannedDispatches queries sent in one minute"
