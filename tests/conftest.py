from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import SimulatorState
from ioagent.timeutil import utc_now
from tests.broker import Broker


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="also run long soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--soak"):
        return
    skip_soak = pytest.mark.skip(reason="soak test: run with --soak")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip_soak)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh mosquitto on a free port, killed after the test."""
    instance = Broker(workdir=tmp_path / "mosquitto")
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest_asyncio.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    """The Kraken simulator with a fresh default state (wall clock) on a free loopback port."""
    async with run_simulator(SimulatorState.with_default_account(clock=utc_now)) as running:
        yield running
