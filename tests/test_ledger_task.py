"""The ledger's fetch loop against the simulator over real sockets: backfill within its own
budget and out of the quiet seconds, re-bills and unknown labels reported, payloads built.
Time is a fake clock that the task's sleeps advance, so hours of budget pass instantly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest_asyncio
from pydantic import SecretStr

from ioagent.budget import is_quiet_second
from ioagent.config import LedgerSettings
from ioagent.kraken.client import KrakenClient
from ioagent.ledger.parse import Bucket, SettledHalfHour
from ioagent.ledger.reconcile import reconcile
from ioagent.ledger.schedule import fetch_range
from ioagent.ledger.windows import fetch_chunks, fetch_windows, floor_half_hour
from ioagent.runtime import ledger_task
from ioagent.runtime.ledger_task import LedgerTask
from ioagent.simulator.ledger import mpan_for
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_API_KEY, SOURCE_SMART, SimulatorState
from ioagent.store.async_store import AsyncStore
from ioagent.store.ledger import CAR_SIGNAL, HOME_SIGNAL, record_transition, settled_between

LONDON = ZoneInfo("Europe/London")
START = datetime(2026, 11, 23, 10, 0, 5, tzinfo=UTC)
HALF = timedelta(minutes=30)
EVER = (
    datetime(2000, 1, 1, tzinfo=UTC),
    datetime(2100, 1, 1, tzinfo=UTC),
)  # inside the quiet seconds of 10:00


@dataclass
class FakeTime:
    now: datetime
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=max(seconds, 0.001))


@dataclass
class World:
    time: FakeTime
    sim: RunningSimulator
    store: AsyncStore
    http: aiohttp.ClientSession
    client: KrakenClient
    published: dict[str, str] = field(default_factory=dict)
    notices: list[str | None] = field(default_factory=list)

    def task(self, settings: LedgerSettings, mpan: str | None = "sim") -> LedgerTask:
        async def the_mpan() -> str | None:
            return mpan_for(self.sim.state, DEFAULT_ACCOUNT) if mpan == "sim" else mpan

        async def publish(suffix: str, payload: str) -> None:
            self.published[suffix] = payload

        async def notice(text: str | None) -> None:
            self.notices.append(text)

        return LedgerTask(
            self.client, self.store, DEFAULT_ACCOUNT, the_mpan, settings,
            clock=self.time, sleep=self.time.sleep, publish=publish, notice=notice,
        )  # fmt: skip

    async def control(self, path: str, body: dict[str, object]) -> None:
        async with self.http.post(self.sim.control_url + path, json=body) as resp:
            assert resp.status == 200, await resp.text()


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    fake = FakeTime(START)
    state = SimulatorState.with_default_account(clock=fake)
    evening = datetime(2026, 11, 19, 19, 30, tzinfo=UTC)
    state.add_completed(DEFAULT_ACCOUNT, evening, evening + timedelta(minutes=45), 5.25,
                        SOURCE_SMART, "AT_HOME")  # fmt: skip
    store = await AsyncStore.open(tmp_path / "ioagent.db")
    async with (
        run_simulator(state) as sim,
        aiohttp.ClientSession() as http,
        KrakenClient(sim.graphql_url, SecretStr(DEFAULT_API_KEY), clock=fake) as client,
    ):
        yield World(fake, sim, store, http, client)
    await store.close()


def _max_in_window(times: list[datetime], width: timedelta) -> int:
    return max(sum(1 for t in times if start <= t < start + width) for start in times)


async def test_backfill_keeps_its_own_budget_and_the_quiet_seconds(world: World) -> None:
    task = world.task(LedgerSettings(backfill_days=7, calls_per_hour=10))
    report = await task.fetch_once()
    # 7 days in windows of 12 half-hours; the newest 2 days are not settled yet
    assert report.requests == 7 * 4
    times = task.request_times
    # Each window holds what was settled (2 days back) when it was asked: the budget's waits
    # move the fake clock, so later windows see a little more.
    windows = fetch_windows(*fetch_range(START, None, backfill_days=7, refetch_days=3))
    expected = sum(
        max(0, int((min(end, floor_half_hour(at - timedelta(days=2))) - start) / HALF))
        for (start, end), at in zip(windows, times, strict=True)
    )
    assert expected >= 5 * 48
    assert report.added == expected
    assert report.unknown_labels == [] and report.rebilled == 0
    assert not any(is_quiet_second(t) for t in times)
    assert times[0] >= START + timedelta(seconds=15)  # waited out 10:00:00-10:00:20
    assert _max_in_window(times, timedelta(hours=1)) <= 10
    assert _max_in_window(times, timedelta(minutes=1)) <= 2
    assert set(world.published) == {"ledger/yesterday", "ledger/month", "ledger/agreement"}
    yesterday = json.loads(world.published["ledger/yesterday"])
    assert yesterday["day"] == "2026-11-20" and yesterday["complete"] is True
    agreement = json.loads(world.published["ledger/agreement"])
    assert agreement["half_hours"] == 0  # nothing published to compare with yet
    assert agreement["not_compared"]["no_signal"] == report.added


async def test_a_restart_keeps_the_ledgers_budget(world: World) -> None:
    task = world.task(LedgerSettings(backfill_days=7, calls_per_hour=10))
    await task.fetch_once()
    spent = task.budget.used_last_hour(world.time.now)
    assert spent == 10, "the backfill used the whole hour's budget"
    restarted = world.task(LedgerSettings(backfill_days=7, calls_per_hour=10))
    await restarted.restore()
    assert restarted.budget.used_last_hour(world.time.now) == spent
    assert not restarted.budget.allows(world.time.now)


async def test_a_later_fetch_asks_only_for_new_days_and_reports_a_rebill(world: World) -> None:
    task = world.task(LedgerSettings(backfill_days=7, refetch_days=1, calls_per_hour=60))
    await task.fetch_once()
    world.time.now += timedelta(hours=12)
    at = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    await world.control(
        "/ledger/rebill", {"account": DEFAULT_ACCOUNT, "start": at.isoformat(), "home": "low"}
    )
    report = await task.fetch_once()
    assert report.requests < 7 * 4
    assert report.rebilled == 1
    assert report.added == 24  # half a day more is settled


async def test_an_unknown_label_is_reported_once(world: World) -> None:
    at = datetime(2026, 11, 19, 19, 30, tzinfo=UTC)
    await world.control(
        "/ledger/unknown_label",
        {"account": DEFAULT_ACCOUNT, "start": at.isoformat(), "label": "HOME BONUS RATE"},
    )
    task = world.task(LedgerSettings(backfill_days=5, calls_per_hour=60))
    first = await task.fetch_once()
    second = await task.fetch_once()
    assert first.unknown_labels == second.unknown_labels == ["HOME BONUS RATE"]
    assert len(world.notices) == 1, "the api note is sent when it changes, not every fetch"
    note = world.notices[0]
    assert note is not None and "HOME BONUS RATE" in note and "1 settled half-hour" in note
    # Octopus re-bills it with a known label: the note goes (the half-hour is re-fetched)
    await world.control(
        "/ledger/unknown_label",
        {"account": DEFAULT_ACCOUNT, "start": at.isoformat(), "label": None},
    )
    task.settings = LedgerSettings(backfill_days=5, refetch_days=5, calls_per_hour=60)
    await task.fetch_once()
    assert world.notices[-1] is None


async def test_agreement_is_one_then_a_rule_change_shows_within_one_fetch(world: World) -> None:
    # ioagent's published signals for the settled days, under the rules the simulator bills by
    day0 = datetime(2026, 11, 16).date()
    for offset in range(6):
        day = day0 + timedelta(days=offset)
        for clock, value in ((time(5, 30), False), (time(23, 30), True)):
            at = datetime.combine(day, clock, tzinfo=LONDON).astimezone(UTC)
            await world.store._run(
                lambda s, at=at, v=value: record_transition(s, DEFAULT_ACCOUNT, HOME_SIGNAL, at, v),
                False,
            )
        await world.store._run(
            lambda s, d=day: record_transition(
                s, DEFAULT_ACCOUNT, CAR_SIGNAL,
                datetime.combine(d, time(0), tzinfo=LONDON).astimezone(UTC), False,
            ),
            False,
        )  # fmt: skip
    evening = datetime(2026, 11, 19, 19, 30, tzinfo=UTC)
    for at, value in ((evening, True), (evening + timedelta(hours=1), False)):
        for signal in (HOME_SIGNAL, CAR_SIGNAL):
            await world.store._run(
                lambda s, a=at, v=value, g=signal: record_transition(s, DEFAULT_ACCOUNT, g, a, v),
                False,
            )
    task = world.task(LedgerSettings(backfill_days=7, calls_per_hour=60))
    await task.fetch_once()
    agreement = json.loads(world.published["ledger/agreement"])
    assert agreement["ratio"] == 1.0
    assert agreement["half_hours"] > 200
    await world.control("/ledger", {"home_bonus": False})
    # settlement of the evening is re-served changed: the next fetch must look back far enough
    task.settings = LedgerSettings(backfill_days=7, refetch_days=5, calls_per_hour=60)
    report = await task.fetch_once()
    assert report.rebilled == 2
    agreement = json.loads(world.published["ledger/agreement"])
    assert [d["reason"] for d in agreement["disagreements"]] == [
        "signal offpeak, billed home standard: no home bonus",
        "signal offpeak, billed home standard: no home bonus",
    ]


async def test_without_an_mpan_nothing_is_asked(world: World) -> None:
    task = world.task(LedgerSettings(), mpan=None)
    report = await task.fetch_once()
    assert report.skipped == "no import MPAN known yet"
    assert task.request_times == []
    assert world.notices == [ledger_task.NO_MPAN_NOTE], "the api topic says why"


async def test_without_an_mpan_yet_it_looks_again_in_minutes_not_hours(world: World) -> None:
    known: list[str] = []

    async def the_mpan() -> str | None:
        return known[0] if known else None

    task = world.task(LedgerSettings(backfill_days=2, calls_per_hour=60))
    task.mpan = the_mpan
    stop = asyncio.Event()
    waits: list[float] = []
    real_sleep = world.time.sleep

    async def sleep(seconds: float) -> None:
        if seconds > 60:  # between fetches; the budget's own waits are short
            waits.append(seconds)
            known.append(mpan_for(world.sim.state, DEFAULT_ACCOUNT))  # the agreements were read
            if len(waits) == 2:
                stop.set()
        await real_sleep(seconds)

    task.sleep = sleep
    await task.run(stop)
    assert waits[0] <= ledger_task.RETRY_INITIAL + 30, "skipped for want of an MPAN: soon again"
    assert "ledger/agreement" in world.published, "the next try fetched"
    assert waits[1] > 3600, "then on schedule"


async def test_a_failed_fetch_is_retried_soon_with_backoff_then_on_schedule(world: World) -> None:
    task = world.task(LedgerSettings(backfill_days=2, calls_per_hour=60))
    await world.control("/faults", {"kind": "http_502", "count": 2})
    stop = asyncio.Event()
    waits: list[float] = []
    real_sleep = world.time.sleep

    async def sleep(seconds: float) -> None:
        # the waits between fetches are the long ones; the budget's gate waits are short
        if seconds > 60:
            waits.append(seconds)
            if len(waits) == 3:
                stop.set()
        await real_sleep(seconds)

    task.sleep = sleep
    await task.run(stop)
    first, second, third = waits
    # two failed fetches (a fetch's first request fails; the transport does not retry a 502
    # here), retried after about 5 then 10 minutes (jitter shortens by up to a quarter) ...
    assert 225 <= first <= 320
    assert 450 <= second <= 620
    # ... then a fetch that works, and the next one waits for its schedule (12 h apart)
    assert third > 3600
    assert "ledger/agreement" in world.published
    # the api topic said so while it failed, and ok (None) once a fetch worked
    failed = world.notices[0]
    assert failed is not None and failed.startswith("degraded: settled billing unreadable")
    assert world.notices[1:] == [None]


async def test_the_published_reasons_use_the_configured_window_like_the_command_line(
    world: World,
) -> None:
    # A product whose fixed window is 00:00-07:00 (configured in [tariff]); 06:00 is billed low
    # and ioagent said peak: inside that window the reason is "window", as `ioagent ledger` says.
    start = datetime(2026, 11, 19, 6, 0, tzinfo=UTC)  # 06:00 in London (GMT)
    bucket = Bucket("HOME LOW RATE", "home low", 0.2, 1.4, 7.0)
    row = SettledHalfHour(start, start + HALF, "low", "standard", (bucket,), 1.0)
    signal = [(start - timedelta(hours=1), False)]
    task = world.task(LedgerSettings())
    task.window = (time(0, 0), time(7, 0))
    published = json.loads(task.payloads([row], signal, signal, START)["ledger/agreement"])
    [home] = [d for d in published["disagreements"] if d["topic"] == "offpeak"]
    shown = reconcile([row], signal, signal, window=task.window, zone=LONDON)
    assert (
        home["reason"] == shown.disagreements()[0].reason == "signal peak, billed home low: window"
    )


async def test_a_long_backfill_is_stored_and_shown_day_by_day(world: World) -> None:
    # 7 days at 10 requests an hour take hours: the month and the agreement fill in as it goes,
    # each day is stored when fetched, and `yesterday` waits for the end (a backfill goes
    # oldest first, so its newest complete day so far is not the last settled day).
    task = world.task(LedgerSettings(backfill_days=7, calls_per_hour=10))
    shown: list[tuple[str, datetime, int]] = []
    inner = task.publish
    assert inner is not None

    async def publish(suffix: str, payload: str) -> None:
        stored = await world.store._run(
            lambda s: len(settled_between(s, DEFAULT_ACCOUNT, *EVER)), 0
        )
        shown.append((suffix, world.time.now, stored))
        await inner(suffix, payload)

    task.publish = publish
    await task.fetch_once()
    last_request = task.request_times[-1]
    months = [(at, stored) for suffix, at, stored in shown if suffix == "ledger/month"]
    chunks = fetch_chunks(*fetch_range(START, None, backfill_days=7, refetch_days=3))
    assert len(months) == len(chunks) == 7  # one per day-sized chunk of the range
    assert months[0][0] < last_request - timedelta(hours=1), "shown long before the end"
    assert [stored for _, stored in months] == sorted(stored for _, stored in months)
    assert months[0][1] > 0, "the first day was stored before the second was asked for"
    yesterdays = [at for suffix, at, _ in shown if suffix == "ledger/yesterday"]
    assert yesterdays == [yesterdays[0]] and yesterdays[0] >= last_request
