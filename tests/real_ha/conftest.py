"""Fixtures of the real-HA suite: one Mosquitto, one Kraken simulator, one Home Assistant.

Only ``scripts/real-ha`` runs this suite: it builds the chroot and sets IOAGENT_REAL_HA_ROOT
(tests/conftest.py ignores this folder without it). Everything is a real process: the simulator
(``ioagent simulator``), each ioagent (``ioagent run``), Mosquitto and HA. They share one event
loop for the whole session, so HA and the broker are set up once.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from ioagent.simulator.control import SimulatorControl
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    SECOND_ACCOUNT,
    SECOND_API_KEY,
)
from tests.broker import Broker, free_port, wait_for_port
from tests.faults.test_kill_restart import DaemonProcess
from tests.real_ha.ha import HomeAssistant

ROOT = os.environ.get("IOAGENT_REAL_HA_ROOT")
PYTHON = os.environ.get("IOAGENT_REAL_HA_PYTHON", "/opt/ha/bin/python")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ROOT:
        return
    skip = pytest.mark.skip(reason="needs the chroot with Home Assistant: run scripts/real-ha")
    for item in items:
        if "real_ha" in item.path.parts:
            item.add_marker(skip)


ACCOUNTS = {DEFAULT_ACCOUNT: DEFAULT_API_KEY, SECOND_ACCOUNT: SECOND_API_KEY}


@dataclass
class Simulator:
    process: asyncio.subprocess.Process
    graphql_url: str
    rest_url: str
    control: SimulatorControl


@dataclass
class Ioagent:
    """One ``ioagent run`` process for ``account``; restartable with the same database."""

    account: str
    config: Path
    log: Path
    process: DaemonProcess | None = None

    async def start(self) -> None:
        assert self.process is None or self.process.process.returncode is not None
        self.process = await DaemonProcess.start(self.config, self.log)

    async def stop(self, signum: int) -> int:
        assert self.process is not None
        code = await self.process.stop(signum)
        self.process = None
        return code

    async def ensure_dead(self) -> None:
        if self.process is not None:
            await self.process.ensure_dead()
            self.process = None


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-ha")


@pytest.fixture(scope="session")
def ha_broker(workdir: Path) -> Iterator[Broker]:
    broker = Broker(workdir=workdir / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def sim(workdir: Path) -> AsyncIterator[Simulator]:
    port = free_port()
    log = workdir / "simulator.log"
    with log.open("ab") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ioagent",
            "simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            stdout=sink,
            stderr=sink,
        )
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 30.0)
        banner = log.read_text()
        graphql = re.search(r"GraphQL URL:\s+(\S+)", banner)
        control = re.search(r"Control API:\s+(\S+)", banner)
        rest = re.search(r'rest_url = "(\S+)"', banner)
        assert graphql and control and rest, banner
        async with SimulatorControl(control.group(1)) as client:
            yield Simulator(process, graphql.group(1), rest.group(1), client)
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def ha(ha_broker: Broker) -> AsyncIterator[HomeAssistant]:
    assert ROOT is not None
    root = Path(ROOT)
    # A fresh config directory per run, inside the chroot so HA can read it.
    config_dir = root / "tmp" / f"ha-config-{os.getpid()}"
    shutil.rmtree(config_dir, ignore_errors=True)
    instance = HomeAssistant(root, PYTHON, config_dir)
    started = time.monotonic()
    try:
        await instance.start()
        await instance.onboard()
        await instance.add_mqtt(ha_broker.host, ha_broker.port)
        print(f"HA up and configured in {time.monotonic() - started:.1f} s")
        yield instance
    finally:
        await instance.close()
        keep = os.environ.get("IOAGENT_REAL_HA_KEEP")
        if keep:
            shutil.copytree(config_dir, Path(keep) / config_dir.name, dirs_exist_ok=True)
        shutil.rmtree(config_dir, ignore_errors=True)


def write_ioagent_config(
    path: Path, broker: Broker, sim: Simulator, account: str, api_key: str
) -> Path:
    # Both URLs point at the simulator: the rates client's default is Octopus's own REST API,
    # which a test must never call.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""
[octopus]
api_key = "{api_key}"
account_number = "{account}"
api_url = "{sim.graphql_url}"
rest_url = "{sim.rest_url}"
read_timeout = 5.0

[mqtt]
host = "{broker.host}"
port = {broker.port}

[storage]
path = "{path.parent / "ioagent.db"}"

[ledger]
backfill_days = 3

[polling]
resync_pause = 1.0
backoff_initial = 1.0
backoff_max = 10.0
"""
    )
    return path


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def ioagents(
    ha_broker: Broker, sim: Simulator, workdir: Path
) -> AsyncIterator[dict[str, Ioagent]]:
    """One (not yet started) ioagent per simulator account; stopped at the end of the run."""
    agents = {
        account: Ioagent(
            account,
            write_ioagent_config(workdir / account / "config.toml", ha_broker, sim, account, key),
            workdir / account / "ioagent.log",
        )
        for account, key in ACCOUNTS.items()
    }
    try:
        yield agents
    finally:
        for agent in agents.values():
            await agent.ensure_dead()
