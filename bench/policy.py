"""P2 and P3 on a simulated clock: the daemon's real poll policy, driven through whole days.

Nothing about *when* to poll is re-implemented here. The real :class:`ioagent.runtime.poller.Poller`
(with its :class:`ioagent.budget.CallBudget`, ``avoid_boundary``, ``REGULAR_RESERVE`` and the
``PollingSettings`` defaults) and the real :class:`ioagent.runtime.command_runner.CommandRunner` run
on an asyncio loop; only three things are replaced:

* the clock, which jumps from one due job to the next;
* APScheduler, by :class:`SimulatedScheduler`, which asks the very same ``CronTrigger`` and
  ``DateTrigger`` objects the Poller built for their next fire time;
* the network: :class:`SimulatedAgent` is an ``AccountAgent`` whose ``poll`` reads the
  scenario's plan at the simulated instant and folds it in with the real ``apply``; the
  Kraken client only counts requests.

Token refreshes are counted too: the real :class:`ioagent.kraken.tokens.TokenSource` hands out
JWTs that live :data:`JWT_LIFETIME`, every request asks it for one (as the transport does), and
a job copies the timing of the daemon's ``Daemon._token_refresh`` loop (sleep until the refresh
is due, at most 300 s at a time, then ``refresh_if_due``).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import jwt
from apscheduler.triggers.date import DateTrigger
from pydantic import SecretStr

from bench.stats import summary
from ioagent.budget import HOUR, REGULAR_RESERVE, is_quiet_second
from ioagent.config import PollingSettings, TariffSettings
from ioagent.kraken.client import PollResult
from ioagent.kraken.tokens import TokenSource
from ioagent.kraken.types import Device, Dispatch, Preferences, Schedule
from ioagent.logs import configure_logging
from ioagent.mqtt.commands import Command, CommandRejection, parse_command
from ioagent.mqtt.topics import Topics
from ioagent.runtime.agent import AccountAgent, PollOutcome
from ioagent.runtime.command_runner import CommandRunner
from ioagent.runtime.poller import Poller
from ioagent.simulator import planner
from ioagent.simulator.state import SimulatorState
from ioagent.timeutil import utc_now

LONDON = ZoneInfo("Europe/London")
DEVICE_ID = "00000000-5117-4e0a-9c1d-0000000000b1"
ACCOUNT = "A-SIM00001"
POLL_SECONDS = 0.3
"""Simulated duration of one poll request (the simulator answers in a few ms; Octopus in ~0.3 s)."""
JWT_LIFETIME = SimulatorState(utc_now).jwt_lifetime
"""How long a JWT lives: the simulator's default, which is Kraken's (one hour)."""
TOKEN_LOOP_MAX_SLEEP = 300.0
"""``Daemon._token_refresh`` sleeps at most this long before checking again."""
_JWT_KEY = "bench-policy-jwt-signing-key-0123456789"
CHARGING = "SMART_CONTROL_IN_PROGRESS"
IDLE = "SMART_CONTROL_CAPABLE"


# --- a scheduler with a simulated clock ------------------------------------------------------


@dataclass
class SimulatedJob:
    id: str
    func: Callable[..., Any]
    trigger: Any
    args: list[Any]
    next_run_time: datetime | None


class SimulatedScheduler:
    """The part of APScheduler's interface the Poller uses, with fire times from its triggers."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.jobs: dict[str, SimulatedJob] = {}

    def add_job(
        self,
        func: Callable[..., Any],
        trigger: Any,
        args: Sequence[Any] | None = None,
        id: str | None = None,
        replace_existing: bool = False,
        **_options: Any,
    ) -> SimulatedJob:
        job_id = id or f"job{len(self.jobs)}"
        if job_id in self.jobs and not replace_existing:
            raise ValueError(f"job {job_id} exists")
        job = SimulatedJob(
            job_id, func, trigger, list(args or []), trigger.get_next_fire_time(None, self.clock())
        )
        self.jobs[job_id] = job
        return job

    def get_job(self, job_id: str) -> SimulatedJob | None:
        return self.jobs.get(job_id)

    def get_jobs(self) -> list[SimulatedJob]:
        return list(self.jobs.values())

    def remove_job(self, job_id: str) -> None:
        del self.jobs[job_id]

    def next_due(self) -> datetime | None:
        times = [job.next_run_time for job in self.jobs.values() if job.next_run_time is not None]
        return min(times, default=None)

    async def run_due(self, now: datetime) -> None:
        """Fire every job due at or before ``now``, as APScheduler's coalescing loop does."""
        for job in sorted(self.jobs.values(), key=lambda j: j.next_run_time or now):
            if job.next_run_time is None or job.next_run_time > now:
                continue
            fired_at = job.next_run_time
            job.next_run_time = job.trigger.get_next_fire_time(fired_at, now)
            if job.next_run_time is not None and job.next_run_time <= fired_at:
                job.next_run_time = job.trigger.get_next_fire_time(
                    fired_at, fired_at + timedelta(microseconds=1)
                )
            if job.next_run_time is None and self.jobs.get(job.id) is job:
                del self.jobs[job.id]
            await job.func(*job.args)


# --- the scenario ----------------------------------------------------------------------------


@dataclass
class Scenario:
    """One simulated day (or window): what Kraken would answer at each instant, and the user."""

    name: str
    start: datetime
    end: datetime
    plans: list[tuple[datetime, tuple[Dispatch, ...]]] = field(default_factory=list)
    """(from this instant, the plan) in time order; before the first entry the plan is empty."""
    plugged: list[tuple[datetime, datetime]] = field(default_factory=list)
    commands: list[tuple[datetime, str, str]] = field(default_factory=list)
    """(instant, command name, value) sent over MQTT, e.g. ``refresh`` or ``target_soc``."""
    charging_state_while_plugged: bool = False
    """Report SMART_CONTROL_IN_PROGRESS for the whole plug-in, not only during slots."""

    def plan_at(self, at: datetime) -> tuple[Dispatch, ...]:
        current: tuple[Dispatch, ...] = ()
        for since, plan in self.plans:
            if since <= at:
                current = plan
        return current

    def device_state_at(self, at: datetime) -> str:
        if any(start <= at < end for start, end in self.plugged):
            if self.charging_state_while_plugged:
                return CHARGING
            if any(slot.start <= at < slot.end for slot in self.plan_at(at)):
                return CHARGING
        return IDLE

    def device_at(self, at: datetime) -> Device:
        return Device(
            id=DEVICE_ID,
            provider="TESLA",
            device_type="ELECTRIC_VEHICLES",
            typename="SmartFlexVehicle",
            make="Tesla",
            model="Model 3",
            status_current="LIVE",
            current_state=self.device_state_at(at),
            is_suspended=False,
            preferences=Preferences(
                "CHARGE",
                "RELATIVE_STATE_OF_CHARGE",
                "PERCENTAGE",
                "ENABLED",
                tuple(Schedule(day, time(7, 30), None, 80.0) for day in planner.DAYS_OF_WEEK),
            ),
        )


class CountingClient:
    """Stands in for KrakenClient in the command path: counts the requests each call makes."""

    def __init__(self, scenario: Scenario, clock: Callable[[], datetime]) -> None:
        self.scenario = scenario
        self.clock = clock
        self.requests: list[tuple[datetime, str]] = []
        """Requests of the command path (what a command costs besides its re-read polls)."""
        self.token_requests: list[datetime] = []
        """``obtainKrakenToken`` calls: the first login and every refresh."""
        self.tokens = TokenSource(self._obtain, SecretStr("sk_bench_policy"), clock=clock)

    async def _obtain(self, token_input: dict[str, str]) -> dict[str, Any]:
        now = self.clock()
        self.token_requests.append(now)
        expires = now + JWT_LIFETIME
        return {
            "token": jwt.encode({"exp": int(expires.timestamp())}, _JWT_KEY, algorithm="HS256"),
            "refreshToken": f"refresh-{len(self.token_requests)}",
            "refreshExpiresIn": int((now + timedelta(days=7)).timestamp()),
        }

    async def _count(self, *operations: str) -> None:
        for operation in operations:
            await self.tokens.token()  # as the transport does before every request
            self.requests.append((self.clock(), operation))

    async def devices(self, account: str) -> list[Device]:
        await self._count("devices")
        return [self.scenario.device_at(self.clock())]

    # KrakenClient.set_target_soc / set_ready_by read the preferences, then write them.
    async def set_target_soc(self, account: str, device_id: str, soc: int) -> None:
        await self._count("devices", "setDevicePreferences")

    async def set_ready_by(self, account: str, device_id: str, ready_by: time) -> None:
        await self._count("devices", "setDevicePreferences")

    async def boost(self, device_id: str) -> None:
        await self._count("updateBoostCharge")

    async def cancel_boost(self, device_id: str) -> None:
        await self._count("updateBoostCharge")

    async def suspend(self, device_id: str) -> None:
        await self._count("updateDeviceSmartControl")

    async def unsuspend(self, device_id: str) -> None:
        await self._count("updateDeviceSmartControl")

    def install_token_refresh(self, scheduler: SimulatedScheduler) -> None:
        """The daemon's ``_token_refresh`` loop as a chain of one-shot jobs on the sim clock."""

        def arm() -> None:
            due = self.tokens.refresh_due_at
            wait = 60.0 if due is None else max(1.0, (due - self.clock()).total_seconds())
            at = self.clock() + timedelta(seconds=min(wait, TOKEN_LOOP_MAX_SLEEP))
            scheduler.add_job(
                tick, DateTrigger(run_date=at, timezone=UTC), id="token", replace_existing=True
            )

        async def tick() -> None:
            await self.tokens.refresh_if_due()
            arm()

        arm()


class NullPublisher:
    def __init__(self) -> None:
        self.published = 0

    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        self.published += 1


class SimulatedAgent(AccountAgent):
    """The real AccountAgent; ``poll`` takes simulated time and answers from the scenario."""

    def __init__(self, scenario: Scenario, clock: SimClock, poll_seconds: float) -> None:
        client = CountingClient(scenario, clock)
        super().__init__(
            account=ACCOUNT,
            client=client,  # type: ignore[arg-type]  # only the command path uses it
            publisher=NullPublisher(),
            store=None,
            topics=Topics("bench", ACCOUNT),
            tariff=TariffSettings(),
            clock=clock,
        )
        self.counting_client = client
        self.scenario = scenario
        self.sim_clock = clock
        self.poll_seconds = poll_seconds
        self.poll_starts: list[datetime] = []

    async def poll(self, may_retry: Callable[[], bool] | None = None) -> PollOutcome:
        await self.counting_client.tokens.token()  # one poll request, with a valid JWT
        started = self.sim_clock()
        self.poll_starts.append(started)
        self.sim_clock.advance(timedelta(seconds=self.poll_seconds))
        fresh = self.scenario.plan_at(started)
        result = PollResult(
            devices=[self.scenario.device_at(started)],
            planned={DEVICE_ID: list(fresh)},
            completed=[],
        )
        return await self.apply(result, self.sim_clock())


class SimClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def move_to(self, instant: datetime) -> None:
        self.now = max(self.now, instant)


@dataclass
class Decision:
    """One run of ``Poller._poll_for``: what asked for a poll, and what came of it."""

    at: datetime
    reasons: tuple[str, ...]
    outcome: str
    """``polled``, or why not: ``quiet`` (around :00/:30), ``backoff`` or ``budget``."""
    active_before: bool
    """The agent's ``is_active`` at that instant, from what the previous poll had seen."""
    active_after: bool | None
    """``is_active`` right after this poll (None: no poll)."""


class TracingPoller(Poller):
    """The real Poller; each decision is recorded, nothing about it is changed."""

    def __init__(self, agent: SimulatedAgent, *args: Any, **kwargs: Any) -> None:
        super().__init__(agent, *args, **kwargs)
        self.sim_agent = agent
        self.decisions: list[Decision] = []

    async def _poll_for(self, reasons: set[Any]) -> None:
        now = self.clock()
        polls_before = len(self.sim_agent.poll_starts)
        quiet, backing_off = is_quiet_second(now), self._backing_off(now)
        active_before = self.agent.is_active(now)
        await super()._poll_for(reasons)
        polled = len(self.sim_agent.poll_starts) > polls_before
        # Poller._poll_for either polls or returns on one of these three conditions.
        outcome = (
            "polled" if polled else "quiet" if quiet else "backoff" if backing_off else "budget"
        )
        after = self.agent.is_active(self.clock()) if polled else None
        self.decisions.append(Decision(now, tuple(sorted(reasons)), outcome, active_before, after))


@dataclass
class SimulationTrace:
    scenario: str
    polls: list[datetime]
    other_requests: list[tuple[datetime, str]]
    token_requests: list[datetime]
    refresh_accepted: int
    refresh_refused: int
    commands: int
    decisions: list[Decision] = field(default_factory=list)


async def _settle(
    poller: Poller, runner: CommandRunner, tasks: Sequence[asyncio.Task[None]]
) -> None:
    """Let the poller and command tasks run until nothing is queued (no real time passes)."""
    for _ in range(10_000):
        for _ in range(20):
            await asyncio.sleep(0)
        for task in tasks:
            if task.done():
                task.result()  # re-raises what ended it
                raise RuntimeError(f"{task.get_name()} ended")
        if poller._requests.empty() and runner._queue.empty():
            return
    raise RuntimeError("simulated poller did not settle")


async def simulate(
    scenario: Scenario,
    settings: PollingSettings | None = None,
    *,
    poll_seconds: float = POLL_SECONDS,
    seed: int = 1,
    warmup: timedelta = timedelta(hours=2),
) -> SimulationTrace:
    """Run the Poller (and CommandRunner) from ``warmup`` before ``scenario.start`` to
    ``scenario.end``; only what happens from ``scenario.start`` on is counted, so the start-up
    poll does not count towards the day."""
    settings = settings or PollingSettings()
    clock = SimClock(scenario.start - warmup)
    agent = SimulatedAgent(scenario, clock, poll_seconds)
    scheduler = SimulatedScheduler(clock)
    poller = TracingPoller(agent, settings, clock=clock, rng=random.Random(seed))
    replies: list[str] = []

    async def reply(command: Command | CommandRejection, status: str, error: str | None) -> None:
        replies.append(status)

    runner = CommandRunner(agent, poller, reply, clock=clock)
    poller.install(scheduler)  # type: ignore[arg-type]  # the simulated scheduler
    agent.counting_client.install_token_refresh(scheduler)
    poller.request("start")
    tasks = [asyncio.create_task(poller.run()), asyncio.create_task(runner.run())]
    refresh_accepted = refresh_refused = commands = 0
    pending = sorted(scenario.commands)
    try:
        await _settle(poller, runner, tasks)
        while True:
            due = scheduler.next_due()
            command_at = pending[0][0] if pending else None
            candidates = [t for t in (due, command_at) if t is not None]
            if not candidates:
                break
            instant = min(candidates)
            if instant >= scenario.end:
                break
            clock.move_to(instant)
            if command_at is not None and command_at <= clock():
                _, name, value = pending.pop(0)
                before = len(replies)
                command = parse_command(
                    name,
                    json.dumps({"value": value}).encode(),
                    retained=False,
                    now=clock(),
                    message_age=0.0,
                    max_age=60.0,
                    device_ids=agent.device_ids,
                )
                await runner.submit(command)
                await _settle(poller, runner, tasks)
                if name == "refresh":
                    accepted = replies[before:] == ["ok"]
                    refresh_accepted += accepted
                    refresh_refused += not accepted
                else:
                    commands += 1
            else:
                await scheduler.run_due(clock())
            await _settle(poller, runner, tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    polls = [t for t in agent.poll_starts if scenario.start <= t < scenario.end]
    return SimulationTrace(
        scenario.name,
        polls,
        [(at, op) for at, op in agent.counting_client.requests if at >= scenario.start],
        [at for at in agent.counting_client.token_requests if scenario.start <= at < scenario.end],
        refresh_accepted,
        refresh_refused,
        commands,
        [d for d in poller.decisions if scenario.start <= d.at < scenario.end],
    )


# --- scenarios -------------------------------------------------------------------------------


def local(day: datetime, hhmm: str, days: int = 0) -> datetime:
    hours, minutes = (int(part) for part in hhmm.split(":"))
    moment = datetime.combine(
        day.date() + timedelta(days=days), time(hours, minutes), tzinfo=LONDON
    )
    return moment.astimezone(UTC)


def smart_plan(plug_in: datetime, ready_by: datetime, seed: str) -> tuple[Dispatch, ...]:
    """What the simulator's planner (Kraken-like) dispatches for a 30 % -> 80 % charge."""
    slots = planner.plan_smart_charge(
        planner.PlanRequest(
            now=plug_in,
            soc_percent=30.0,
            target_percent=80.0,
            battery_kwh=60.0,
            charger_kw=7.0,
            ready_by=ready_by,
            seed=seed,
        )
    )
    return tuple(
        Dispatch(slot.start, slot.end, "SMART", round(slot.kwh, 2), device_id=DEVICE_ID)
        for slot in slots
    )


DAY = datetime(2025, 1, 15, tzinfo=UTC)
"""A winter weekday, so London time is UTC and the simulated day has 24 hours."""


def idle_day(day: datetime = DAY) -> Scenario:
    return Scenario("idle", local(day, "00:00"), local(day, "00:00", days=1))


def evening_session_day(day: datetime = DAY) -> Scenario:
    """Plugged in at 18:00, ready by 07:30: one plan, never changed, no commands."""
    plug_in, ready_by = local(day, "18:00"), local(day, "07:30", days=1)
    return Scenario(
        "one evening session",
        local(day, "00:00"),
        local(day, "00:00", days=1),
        plans=[(plug_in, smart_plan(plug_in, ready_by, "evening"))],
        plugged=[(plug_in, ready_by)],
    )


def heavy_replanning_day(day: datetime = DAY) -> Scenario:
    """Plugged in from 16:00 (and the night before until 07:30); Octopus re-plans every 20
    minutes while plugged in; the user changes the target or ready-by time every 30 minutes
    from 16:00 to 23:00; an automation asks for a refresh every 5 minutes, all day."""
    start, end = local(day, "00:00"), local(day, "00:00", days=1)
    morning_ready = local(day, "07:30")
    evening_plug, night_ready = local(day, "16:00"), local(day, "07:30", days=1)
    plans: list[tuple[datetime, tuple[Dispatch, ...]]] = []
    at = start
    index = 0
    while at < end:
        plugged_in = at < morning_ready or at >= evening_plug
        if plugged_in:
            ready = morning_ready if at < morning_ready else night_ready
            plans.append((at, smart_plan(at, ready, f"heavy{index}")))
        elif plans and plans[-1][1]:
            plans.append((at, ()))
        at += timedelta(minutes=20)
        index += 1
    commands: list[tuple[datetime, str, str]] = []
    at = evening_plug
    flip = 0
    while at <= local(day, "23:00"):
        if flip % 2:
            commands.append((at, "ready_by", "07:00" if flip % 4 == 1 else "07:30"))
        else:
            commands.append((at, "target_soc", "90" if flip % 4 == 0 else "80"))
        at += timedelta(minutes=30)
        flip += 1
    at = start + timedelta(minutes=2, seconds=13)
    while at < end:
        commands.append((at, "refresh", "now"))
        at += timedelta(minutes=5)
    return Scenario(
        "heavy re-planning",
        start,
        end,
        plans=plans,
        plugged=[(start, morning_ready), (evening_plug, end)],
        commands=commands,
    )


# --- figures ---------------------------------------------------------------------------------


def max_in_rolling_hour(instants: Sequence[datetime]) -> int:
    ordered = sorted(instants)
    best = 0
    low = 0
    for high, instant in enumerate(ordered):
        while ordered[low] <= instant - HOUR:
            low += 1
        best = max(best, high - low + 1)
    return best


def day_figures(trace: SimulationTrace) -> dict[str, Any]:
    """Counts for one day. A poll is one request (devices, plans and completed dispatches in
    one GraphQL document); ``total_requests`` adds the commands' requests and the tokens'."""
    other = [at for at, _ in trace.other_requests]
    return {
        "scenario": trace.scenario,
        "planned_dispatch_queries": len(trace.polls),
        "other_requests": len(other),
        "token_requests": len(trace.token_requests),
        "total_requests": len(trace.polls) + len(other) + len(trace.token_requests),
        "max_planned_in_rolling_hour": max_in_rolling_hour(trace.polls),
        "max_requests_in_rolling_hour": max_in_rolling_hour(
            trace.polls + other + trace.token_requests
        ),
        "refresh_accepted": trace.refresh_accepted,
        "refresh_refused": trace.refresh_refused,
        "commands": trace.commands,
    }


def _hms(at: datetime) -> str:
    return at.astimezone(LONDON).strftime("%H:%M:%S")


def poll_pattern(trace: SimulationTrace, within: float = 10.0) -> dict[str, Any]:
    """What the Poller did on one day, from its recorded decisions (times are London)."""
    polls = [d for d in trace.decisions if d.outcome == "polled"]
    after_active = [
        (polls[i], (polls[i + 1].at - polls[i].at).total_seconds())
        for i in range(len(polls) - 1)
        if polls[i].active_after
    ]
    refusals = []
    for decision in trace.decisions:
        if decision.outcome != "budget":
            continue
        following = next((p for p in polls if p.at > decision.at), None)
        refusals.append(
            {
                "at": _hms(decision.at),
                "reasons": list(decision.reasons),
                "next_poll_after_s": None
                if following is None
                else round((following.at - decision.at).total_seconds()),
                "next_poll_reasons": None if following is None else list(following.reasons),
            }
        )
    doubles = [
        {
            "at": _hms(polls[i].at),
            "after_s": round((polls[i].at - polls[i - 1].at).total_seconds(), 1),
            "reasons": list(polls[i].reasons),
            "active_before": polls[i].active_before,
            "previous_at": _hms(polls[i - 1].at),
            "previous_reasons": list(polls[i - 1].reasons),
            "previous_active_after": polls[i - 1].active_after,
        }
        for i in range(1, len(polls))
        if (polls[i].at - polls[i - 1].at).total_seconds() < within
    ]
    longest = max(after_active, key=lambda pair: pair[1], default=None)
    return {
        "polls": len(polls),
        "budget_refusals": refusals,
        "gap_after_active_poll_s": summary([gap for _, gap in after_active], digits=0),
        "longest_gap_after_active_poll": None
        if longest is None
        else {"after": _hms(longest[0].at), "seconds": round(longest[1])},
        "reasons_of_polls_while_not_active": sorted(
            {r for p in polls if not p.active_before for r in p.reasons}
        ),
        "back_to_back": doubles,
    }


def detection_delays(polls: Sequence[datetime], changes: Sequence[datetime]) -> list[float | None]:
    """Seconds from each change to the first poll that starts at or after it (None: none)."""
    ordered = sorted(polls)
    delays: list[float | None] = []
    for change in changes:
        seen = next((p for p in ordered if p >= change), None)
        delays.append(None if seen is None else (seen - change).total_seconds())
    return delays


def active_instants(
    scenario: Scenario, samples: int, rng: random.Random, *, active: bool = True
) -> list[datetime]:
    """Random instants while plugged in at which the agent's own ``is_active`` says ``active``."""
    probe = AccountAgent(
        account=ACCOUNT,
        client=None,  # type: ignore[arg-type]  # is_active reads only devices and plans
        publisher=NullPublisher(),
        store=None,
        topics=Topics("bench", ACCOUNT),
        tariff=TariffSettings(),
        clock=lambda: scenario.start,
    )
    found: list[datetime] = []
    spans = [
        (max(start, scenario.start), min(end, scenario.end))
        for start, end in scenario.plugged
        if end > scenario.start and start < scenario.end
    ]
    total = sum((end - start).total_seconds() for start, end in spans)
    for _ in range(samples * 50):
        if len(found) >= samples:
            break
        offset = rng.uniform(0, total)
        for start, end in spans:
            length = (end - start).total_seconds()
            if offset < length:
                at = start + timedelta(seconds=offset)
                break
            offset -= length
        probe.devices = [scenario.device_at(at)]
        probe.plans = {DEVICE_ID: scenario.plan_at(at)}
        if probe.is_active(at) == active:
            found.append(at)
    return found


async def policy_figures(*, samples: int = 2000, seed: int = 7) -> dict[str, Any]:
    """P3 for the three days and P2 for plan changes at random instants of the session day."""
    settings = PollingSettings()
    days = [idle_day(), evening_session_day(), heavy_replanning_day()]
    traces = [await simulate(day, settings) for day in days]
    session, session_trace = days[1], traces[1]
    rng = random.Random(seed)
    active_delays = [
        d
        for d in detection_delays(session_trace.polls, active_instants(session, samples, rng))
        if d is not None
    ]
    quiet_delays = [
        d
        for d in detection_delays(
            session_trace.polls, active_instants(session, samples, rng, active=False)
        )
        if d is not None
    ]
    # The same day if the device reported SMART_CONTROL_IN_PROGRESS for the whole plug-in.
    whole = evening_session_day()
    whole.charging_state_while_plugged = True
    whole.name = "one evening session (in progress while plugged)"
    whole_trace = await simulate(whole, settings)
    sensitivity = []
    for interval in (120, 180, 300):
        changed = PollingSettings(active_interval=interval)
        trace = await simulate(evening_session_day(), changed)
        delays = detection_delays(
            trace.polls, active_instants(session, samples, random.Random(seed))
        )
        sensitivity.append(
            {
                "active_interval": interval,
                "planned_dispatch_queries": len(trace.polls),
                "max_planned_in_rolling_hour": max_in_rolling_hour(trace.polls),
                "p2_active_seconds": summary([d for d in delays if d is not None], digits=0),
                "pattern": poll_pattern(trace),
            }
        )
    return {
        "p2_by_active_interval": sensitivity,
        "settings": {
            "planned_per_hour": settings.planned_per_hour,
            "planned_per_minute": settings.planned_per_minute,
            "active_interval": settings.active_interval,
            "command_rechecks": settings.command_rechecks,
            "jwt_lifetime_s": JWT_LIFETIME.total_seconds(),
            "offset_seconds": Poller(
                SimulatedAgent(idle_day(), SimClock(DAY), POLL_SECONDS),
                settings,
                clock=SimClock(DAY),
            ).offset,
        },
        "days": [day_figures(trace) for trace in [*traces, whole_trace]],
        "p2_active_seconds": summary(active_delays, digits=0),
        "p2_plugged_not_active_seconds": summary(quiet_delays, digits=0),
        "session_polls": [_hms(p) for p in session_trace.polls],
        "session_pattern": poll_pattern(session_trace),
        "extra_poll_budget": settings.planned_per_hour - REGULAR_RESERVE,
    }


def main() -> None:
    configure_logging("warning", "console", stream=sys.stderr)
    print(json.dumps(asyncio.run(policy_figures()), indent=2))


if __name__ == "__main__":
    main()
