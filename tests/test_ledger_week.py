"""A simulated week of a four-rate account, settled, fetched and held against ioagent's signal.

The daemon cannot live through a week, so the week is put in place beforehand, on both sides:

* the simulator gets the week's completed charges (nightly smart charges, daytime smart slots
  within the 6-hour allowance, smart slots beyond it and a boost), from which it bills;
* the daemon's store gets the home and car signals ioagent would have published through that
  week, computed by ioagent's own tariff engine from the same charges, as the daemon saw them
  (the planned slots, and the completed records Octopus sends without a source) and stored as
  its ``SignalRecorder`` stores them.

Neither side is computed from the other, so the agreement can fail. The week (the autumn clock
change is in it) runs from local noon on 20 Oct 2026 to local noon on the 27th; the shifted
clock puts "now" on the 29th, so the whole week is settled. Then the simulated Octopus drops
the home bonus, and the next ledger fetch (the restarted daemon's first) shows it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from ioagent.cli import main
from ioagent.kraken.types import BOOST, SMART, CompletedDispatch, Dispatch
from ioagent.ledger.windows import floor_half_hour
from ioagent.runtime.ledger_task import LEDGER_BUDGET_META, LedgerPace
from ioagent.simulator.ledger import SETTLEMENT_LAG, mpan_for
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_EV_ID, SOURCE_BUMP, SOURCE_SMART
from ioagent.store.database import Store
from ioagent.store.ledger import CAR_SIGNAL, HOME_SIGNAL, rebilled_since, record_transition
from ioagent.tariff.evidence import evidence_from
from ioagent.tariff.plan import classify_completed
from ioagent.tariff.signals import ProductRules, evaluate, transitions
from tests.broker import Broker
from tests.clocks import ShiftedClock
from tests.harness import RunningDaemon, Seen, daemon_settings, running_daemon
from tests.test_four_rate_daemon import simulated

LONDON = ZoneInfo("Europe/London")
HALF = timedelta(minutes=30)
NOW = datetime(2026, 10, 29, 12, 10, tzinfo=UTC)
"""Ten minutes into a half-hour: the ledger's requests are out of the quiet seconds."""


def local(day: int, hour: int, minute: int = 0) -> datetime:
    """A wall-clock time in October 2026 (25 Oct 01:00-02:00 is ambiguous: not used)."""
    return datetime(2026, 10, day, hour, minute, tzinfo=LONDON).astimezone(UTC)


WEEK = (local(20, 12), local(27, 12))
"""Seven allowance periods, noon to noon; the one from 24 Oct is 25 hours long."""


@dataclass(frozen=True)
class Charge:
    start: datetime
    end: datetime
    type: str
    kwh: float
    kind: str
    """What the scenario means it to be: night, bonus (daytime, within the allowance),
    beyond (smart, beyond the allowance) or boost."""

    def half_hours(self) -> list[datetime]:
        cursor, found = floor_half_hour(self.start), []
        while cursor < self.end:
            found.append(cursor)
            cursor += HALF
        return found


CHARGES = [
    Charge(local(21, 0, 30), local(21, 4, 30), SMART, 28.0, "night"),
    Charge(local(21, 13), local(21, 14, 30), SMART, 10.5, "bonus"),
    Charge(local(22, 0), local(22, 4), SMART, 28.0, "night"),  # 11 half-hours used
    Charge(local(22, 23, 30), local(23, 5, 30), SMART, 42.0, "night"),  # the whole allowance
    Charge(local(23, 7), local(23, 8), SMART, 7.0, "beyond"),
    Charge(local(23, 14), local(23, 16), SMART, 14.0, "bonus"),
    Charge(local(24, 1), local(24, 5), SMART, 28.0, "night"),  # 12 used
    Charge(local(24, 9), local(24, 9, 30), SMART, 3.5, "beyond"),
    Charge(local(24, 18), local(24, 19), BOOST, 7.0, "boost"),
    # 00:00 BST to 05:00 GMT is six hours, twelve half-hours: the allowance is used up, so
    # 10:00 is beyond it (counting the night in wall-clock hours would say ten and be wrong).
    Charge(local(25, 0), local(25, 5), SMART, 42.0, "night"),
    Charge(local(25, 10), local(25, 10, 30), SMART, 3.5, "beyond"),
    Charge(local(25, 12, 40), local(25, 13, 20), SMART, 4.0, "bonus"),  # touches two
    Charge(local(26, 2), local(26, 5), SMART, 21.0, "night"),
    Charge(local(26, 19), local(26, 20), SMART, 7.0, "bonus"),
    Charge(local(27, 0, 30), local(27, 4, 30), SMART, 28.0, "night"),
]
BONUS_HALF_HOURS = sorted(hh for c in CHARGES if c.kind == "bonus" for hh in c.half_hours())


def seed_simulator(sim: RunningSimulator) -> None:
    """The completed charges, as the simulator bills them (a boost by its source)."""
    for c in CHARGES:
        source = SOURCE_BUMP if c.type == BOOST else None
        sim.state.add_completed(DEFAULT_ACCOUNT, c.start, c.end, c.kwh, source, "AT_HOME")


def seed_signals(db: Path, rules: ProductRules, until: datetime) -> dict[str, int]:
    """What the daemon's SignalRecorder would have stored through the week, by ioagent's own
    engine: the slots as they were planned (with their source, as Kraken sends planned ones)
    and the completed records as Kraken sends them (no source), classified as the agent does.
    Returns how many changes of each signal were stored."""
    planned = [
        Dispatch(c.start, c.end, c.type, c.kwh, "AT_HOME",
                 SOURCE_BUMP if c.type == BOOST else SOURCE_SMART)
        for c in CHARGES
    ]  # fmt: skip
    completed = classify_completed(
        [CompletedDispatch(c.start, c.end, c.kwh, None, "AT_HOME") for c in CHARGES], planned
    )
    evidence = evidence_from(completed, [])
    start = WEEK[0]
    first = evaluate(rules, planned, evidence, start)
    changes = [(start, first.offpeak, first.ev_offpeak)]
    changes += [
        (t.at, t.offpeak, t.ev_offpeak)
        for t in transitions(rules, planned, evidence, start, until - start)
    ]
    stored = {HOME_SIGNAL: 0, CAR_SIGNAL: 0}
    store = Store.open(db)
    try:
        for at, home_offpeak, ev_offpeak in changes:
            for signal, value in ((HOME_SIGNAL, home_offpeak), (CAR_SIGNAL, ev_offpeak)):
                stored[signal] += record_transition(store, DEFAULT_ACCOUNT, signal, at, value)
    finally:
        store.close()
    return stored


async def fresh(
    d: RunningDaemon,
    suffix: str,
    wanted: Callable[[dict[str, Any]], bool] = lambda _: True,
    timeout: float = 60,
) -> Seen:
    """The first message on the topic published by this daemon (not a retained one left by an
    earlier run: a live message is delivered without the retain flag) whose JSON is ``wanted``.
    A fetch publishes day by day as it goes, so a test names the state it waits for."""
    topic = f"{d.topics.root}/{suffix}"
    after = 0
    while True:
        seen = await d.watcher.wait_for(topic, timeout=timeout, after=after)
        after = d.watcher.messages.index(seen) + 1
        if not seen.retain and wanted(json.loads(seen.payload)):
            return seen


@pytest.mark.timeout(120)
async def test_a_settled_week_agrees_and_a_dropped_home_bonus_shows_in_one_fetch(
    broker: Broker,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pace = LedgerPace(start_delay=0.2, per_minute=60)
    backfill_days = 10  # from a day before the week: those half-hours have no signal
    async with simulated("four_rate") as sim:
        clock = ShiftedClock(NOW, sim.state)
        seed_simulator(sim)
        ledger = {
            "mpan": mpan_for(sim.state, DEFAULT_ACCOUNT),
            "backfill_days": backfill_days,
            "refetch_days": 8,  # a re-fetch covers the whole week
            "calls_per_hour": 60,
        }
        db = tmp_path / "ioagent.db"
        settings = daemon_settings(broker, sim, tmp_path, ledger=ledger)
        capped = sim.state.device(DEFAULT_EV_ID).preferences.charging_duration_capped
        rules = ProductRules.from_settings(settings.tariff, "four_rate", capped)
        stored = seed_signals(db, rules, NOW)
        # every night, and the car's smart half-hours, make both signals change many times
        assert min(stored.values()) > 2 * 7, stored

        async with running_daemon(
            broker, sim, tmp_path, clock=clock, ledger=ledger, ledger_pace=pace
        ) as d:
            seen = await d.watcher.wait_for(
                d.topics.tariff, lambda p: json.loads(p)["source"] == "account", timeout=30
            )
            family = json.loads(seen.payload)["family"]
            assert family == "four_rate", "the daemon must apply the rules the week was seeded by"
            fetched_at = clock()
            settled_end = floor_half_hour(fetched_at - SETTLEMENT_LAG)
            week_half_hours = int((settled_end - WEEK[0]) / HALF)
            # The backfill publishes day by day; wait for the state once it reached the end.
            agreement = json.loads(
                (
                    await fresh(d, "ledger/agreement", lambda a: a["half_hours"] >= week_half_hours)
                ).payload
            )
            yesterday = json.loads((await fresh(d, "ledger/yesterday")).payload)
        fetched_from = floor_half_hour(fetched_at - timedelta(days=backfill_days))
        assert settled_end == WEEK[1], "the whole week is settled, nothing after it"
        assert agreement["half_hours"] == week_half_hours
        assert agreement["agreed"] == week_half_hours
        assert agreement["ratio"] == 1.0
        assert agreement["disagreements"] == []
        assert agreement["not_compared"]["no_signal"] == int((WEEK[0] - fetched_from) / HALF)
        assert yesterday["day"] == "2026-10-26"
        assert yesterday["complete"] is True

        # The ledger, as the command line shows it: each day of the week agrees, and the car's
        # energy is in the buckets the scenario means (boost and beyond-allowance: standard).
        config = tmp_path / "ioagent.toml"
        config.write_text(
            f'[octopus]\napi_key = "sk_live_FAKEledgerWeekKey0001"\n'
            f'account_number = "{DEFAULT_ACCOUNT}"\n\n[storage]\npath = "{db}"\n'
        )
        capsys.readouterr()
        assert main(["ledger", "--config", str(config), "--days", "7", "--json"]) == 0
        (account,) = json.loads(capsys.readouterr().out)["accounts"]
        days = account["days"]
        assert [day["day"] for day in days] == [f"2026-10-{n}" for n in range(21, 28)]
        assert all(day["agreement"]["ratio"] == 1.0 for day in days)
        assert [day["half_hours"] for day in days if day["day"] == "2026-10-25"] == [50]
        for bucket, kinds in (
            ("car low", {"night", "bonus"}),
            ("car standard", {"beyond", "boost"}),
        ):
            billed = sum(day["buckets"][bucket]["kwh"] for day in days)
            assert billed == pytest.approx(sum(c.kwh for c in CHARGES if c.kind in kinds)), bucket

        # A rule change at Octopus: the home no longer shares the car's cheap half-hours.
        async with (
            aiohttp.ClientSession() as http,
            http.post(sim.control_url + "/ledger", json={"home_bonus": False}) as resp,
        ):
            assert resp.status == 200, await resp.text()
        changed_at = clock()
        # The two fetches (10 days, then 8 again) need more requests than the ledger's hourly
        # budget, which a restart keeps (test_ledger_task.py::test_a_restart_keeps_the_ledgers_budget).
        # Here the restart stands for the next fetch, hours later: give it that hour's budget.
        store = Store.open(db)
        try:
            store.set_meta(LEDGER_BUDGET_META.format(account=DEFAULT_ACCOUNT), "[]")
        finally:
            store.close()
        # The restarted daemon publishes what it stored (before the change), then fetches
        # refetch_days back; its next fetch is hours away, so what changes now is that fetch.
        async with running_daemon(
            broker, sim, tmp_path, clock=clock, ledger=ledger, ledger_pace=pace
        ) as d:
            stored_again = json.loads((await fresh(d, "ledger/agreement")).payload)
            # It publishes day by day as the re-fetch goes: wait for the state once the re-fetch
            # has passed every bonus half-hour (a wrong or missing change never gets there).
            expected = week_half_hours - len(BONUS_HALF_HOURS)
            seen = await fresh(d, "ledger/agreement", lambda a: a["agreed"] <= expected)
            after = json.loads(seen.payload)
        assert stored_again["agreed"] == week_half_hours, "from the store, before any fetch"
        assert after["half_hours"] == week_half_hours
        assert after["agreed"] == week_half_hours - len(BONUS_HALF_HOURS)
        assert after["ratio"] == round(after["agreed"] / week_half_hours, 4)
        assert after["ratio"] < 1
        assert len(BONUS_HALF_HOURS) <= 20, "the payload lists the last 20 only"
        assert [item["start"] for item in after["disagreements"]] == [
            hh.strftime("%Y-%m-%dT%H:%M:%SZ") for hh in BONUS_HALF_HOURS
        ]
        for item in after["disagreements"]:
            assert item["topic"] == "offpeak"
            assert item["signal"] == "offpeak"
            assert item["billed"] == "home standard"
            assert item["reason"] == "signal offpeak, billed home standard: no home bonus"
        store = Store.open(db, read_only=True)
        try:
            assert rebilled_since(store, DEFAULT_ACCOUNT, changed_at) == BONUS_HALF_HOURS
        finally:
            store.close()
