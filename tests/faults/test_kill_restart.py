"""``ioagent run`` as a real process: SIGKILL mid-run and restart, then SIGTERM.

A SIGKILL gives the daemon no chance to say anything: the broker publishes its last will, the
SQLite store must still be intact, and the restarted daemon must not announce the slots it
already knew as new. A SIGTERM is a clean stop: the daemon says ``offline`` itself and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from ioagent.mqtt.topics import Topics
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_API_KEY, DEFAULT_EV_ID, SimulatorState
from ioagent.timeutil import iso_z, parse_iso, utc_now
from tests.broker import Broker
from tests.faults.test_api_storm import rolling_maximum
from tests.harness import Watcher, watching

TOPICS = Topics("ioagent", DEFAULT_ACCOUNT)


@pytest_asyncio.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    """On the wall clock, whatever IOAGENT_TEST_START says: the daemon here is a real
    ``ioagent run`` process, whose clock a test cannot move."""
    async with run_simulator(SimulatorState.with_default_account(clock=utc_now)) as running:
        yield running


def write_config(
    path: Path, broker: Broker, simulator: RunningSimulator, api_key: str = DEFAULT_API_KEY
) -> Path:
    path.write_text(
        f"""
[octopus]
api_key = "{api_key}"
account_number = "{DEFAULT_ACCOUNT}"
api_url = "{simulator.graphql_url}"
rest_url = "{simulator.rest_url}"
read_timeout = 3.0

[mqtt]
host = "{broker.host}"
port = {broker.port}

[storage]
path = "{path.parent / "data" / "ioagent.db"}"

[polling]
backoff_initial = 1.0
backoff_max = 10.0

[logging]
level = "debug"
format = "json"
"""
    )
    return path


@dataclass
class DaemonProcess:
    process: asyncio.subprocess.Process
    output: Path

    @classmethod
    async def start(cls, config: Path, output: Path) -> DaemonProcess:
        with output.open("ab") as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "ioagent",
                "run",
                "--config",
                str(config),
                stdout=sink,
                stderr=sink,
            )
        return cls(process, output)

    async def stop(self, signum: int, timeout: float = 15.0) -> int:
        self.process.send_signal(signum)
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def ensure_dead(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def add_slot(simulator: RunningSimulator, start: datetime) -> datetime:
    device = simulator.state.device(DEFAULT_EV_ID)
    simulator.state.add_dispatch(device, start, start + timedelta(minutes=40), "SMART", 4.2)
    return start


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as connection:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])


def slot_added_starts(watcher: Watcher, after: int) -> list[str]:
    events = [json.loads(m.payload) for m in watcher.messages[after:] if m.topic == TOPICS.events]
    return [e["slot"]["start"] for e in events if e["event"] == "slot_added"]


async def wait_polled(watcher: Watcher, after: int, slots: int, timeout: float = 45) -> None:
    # 45 s: a start in the quiet seconds around :00/:30 waits up to 25 s for its first poll, and
    # a loaded machine needs seconds more to start the process (a soak run timed out at 20 s).
    await watcher.wait_for(TOPICS.status, lambda p: p == "online", after=after, timeout=timeout)
    await watcher.wait_for(
        TOPICS.planned, lambda p: len(json.loads(p)) == slots, after=after, timeout=timeout
    )
    await watcher.wait_for(
        TOPICS.api,
        lambda p: json.loads(p)["state"] == "ok" and json.loads(p)["last_success"] is not None,
        after=after,
        timeout=timeout,
    )


@pytest.mark.timeout(240)  # two starts, each of which may wait out the quiet seconds
async def test_sigkill_mid_run_then_restart_and_sigterm(
    logged_broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    broker = logged_broker
    config = write_config(tmp_path / "config.toml", broker, simulator)
    output = tmp_path / "daemon.log"
    base = utc_now().replace(second=0, microsecond=0) + timedelta(hours=2)
    known = [
        add_slot(simulator, base + timedelta(minutes=7)),
        add_slot(simulator, base + timedelta(hours=2)),
    ]
    async with watching(broker) as watcher:
        first = await DaemonProcess.start(config, output)
        try:
            await wait_polled(watcher, 0, 2)
            assert sorted(slot_added_starts(watcher, 0)) == sorted(iso_z(s) for s in known)
            # Mid-run: a refresh starts a poll (and its database writes), and the kill lands.
            await watcher.publish(TOPICS.refresh, "now")
            await asyncio.sleep(0.05)
            killed_at = len(watcher.messages)
            assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
        finally:
            await first.ensure_dead()
        await watcher.wait_for(TOPICS.status, lambda p: p == "offline", after=killed_at, timeout=10)
        db = tmp_path / "data" / "ioagent.db"
        assert await asyncio.to_thread(integrity, db) == "ok"

        new = add_slot(simulator, base + timedelta(hours=4))
        restarted_at = len(watcher.messages)
        second = await DaemonProcess.start(config, output)
        try:
            await wait_polled(watcher, restarted_at, 3)
            await asyncio.sleep(0.5)
            assert slot_added_starts(watcher, restarted_at) == [iso_z(new)], (
                "only the slot that is really new is announced after the restart"
            )
            stopping_at = len(watcher.messages)
            assert await second.stop(signal.SIGTERM) == 0
        finally:
            await second.ensure_dead()
        offline = await watcher.wait_for(
            TOPICS.status, lambda p: p == "offline", after=stopping_at, timeout=5
        )
        assert offline.retain is False  # seen live, as published
    assert await asyncio.to_thread(integrity, db) == "ok"
    log = broker.log()
    client = f"ioagent-{DEFAULT_ACCOUNT}"
    # The kill: the broker saw the socket drop and sent the will. The stop: a clean DISCONNECT,
    # which discards the will, so the offline above was the daemon's own.
    # Mosquitto words a dropped socket by what its last read saw; killed mid-packet, 2.0.11 even
    # says "disconnected due to out of memory". Any of them is an unclean drop.
    unclean = (
        f"Client {client} closed its connection",
        f"Socket error on client {client}",
        f"Client {client} disconnected due to",
    )
    assert any(line in log for line in unclean), log
    assert f"Client {client} disconnected." in log, log
    text = output.read_text()
    assert "Traceback" not in text
    assert '"event": "stopped"' in text


def table_rows(db: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as connection:
        return list(connection.execute(query).fetchall())


async def kill_at_random_moments(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path, kills: int
) -> None:
    config = write_config(tmp_path / "config.toml", broker, simulator)
    output = tmp_path / "daemon.log"
    db = tmp_path / "data" / "ioagent.db"
    rng = random.Random(20261201)
    base = utc_now().replace(second=0, microsecond=0) + timedelta(hours=2)
    finished = utc_now().replace(second=0, microsecond=0) - timedelta(hours=6)
    slots: list[datetime] = []
    async with watching(broker) as watcher:
        for kill in range(kills):
            # Something new for every run to write: a planned slot and a completed dispatch.
            slots.append(add_slot(simulator, base + timedelta(minutes=47 * kill)))
            done = finished + timedelta(minutes=11 * kill)
            simulator.state.add_completed(
                DEFAULT_ACCOUNT, done, done + timedelta(minutes=9), 1.5, "smart-charge", "AT_HOME"
            )
            process = await DaemonProcess.start(config, output)
            try:
                # Anywhere in start-up: the store's restore, the login, the first poll and its
                # writes (a start poll the restored budget defers makes no call at all).
                await asyncio.sleep(rng.uniform(0.2, 1.5))
                assert await process.stop(signal.SIGKILL) == -signal.SIGKILL
            finally:
                await process.ensure_dead()
            if db.exists():  # a kill before the store was created leaves nothing to check
                assert await asyncio.to_thread(integrity, db) == "ok", f"after kill {kill + 1}"

        last = await DaemonProcess.start(config, output)
        try:
            # Up to a minute: the start poll waits for the budget the killed runs spent.
            await wait_polled(watcher, len(watcher.messages), len(slots), timeout=90)
            assert await last.stop(signal.SIGTERM) == 0
        finally:
            await last.ensure_dead()
        added = [
            json.loads(m.payload)["slot"]["start"]
            for m in watcher.messages
            if m.topic == TOPICS.events and json.loads(m.payload)["event"] == "slot_added"
        ]
    assert sorted(set(added)) == sorted(iso_z(s) for s in slots), "every slot was announced"
    assert len(added) == len(set(added)), "no slot was announced twice across the kills"
    assert await asyncio.to_thread(integrity, db) == "ok"
    completed = await asyncio.to_thread(table_rows, db, "SELECT start, end FROM completed")
    assert len(completed) == len(set(completed)) == kills, "each completed dispatch stored once"
    sent = [
        parse_iso(str(entry["at"]))
        for entry in simulator.state.calls()["log"]
        if "flexPlannedDispatches" in entry["operations"]
    ]
    assert rolling_maximum(sent, timedelta(minutes=1)) <= 4, "the budget survived the kills"
    logged = await asyncio.to_thread(table_rows, db, "SELECT event_json FROM events")
    logged_added = [
        json.loads(str(row[0]))["slot"]["start"]
        for row in logged
        if json.loads(str(row[0]))["event"] == "slot_added"
    ]
    assert len(logged_added) == len(set(logged_added)), "no duplicate event in the event log"


async def test_repeated_kills_at_random_moments_lose_and_duplicate_nothing(
    logged_broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    await kill_at_random_moments(logged_broker, simulator, tmp_path, kills=4)


@pytest.mark.soak
async def test_repeated_kills_soak(
    logged_broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    await kill_at_random_moments(logged_broker, simulator, tmp_path, kills=12)
