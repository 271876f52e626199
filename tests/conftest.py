from __future__ import annotations

import os
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import SimulatorState, TokenGrant
from ioagent.timeutil import utc_now
from tests import canary
from tests.broker import Broker
from tests.gx_peer import GxPeer

# The real-HA suite needs the chroot that scripts/real-ha builds; that script sets this variable.
collect_ignore = [] if os.environ.get("IOAGENT_REAL_HA_ROOT") else ["real_ha"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="also run long soak tests")


@pytest.fixture(autouse=True)
def watch_issued_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every JWT and refresh token an in-process simulator issues becomes a watched secret."""
    issue = SimulatorState._issue

    def recording_issue(self: SimulatorState, *args: Any, **kwargs: Any) -> TokenGrant:
        grant = issue(self, *args, **kwargs)
        canary.issued(grant.token, grant.refresh_token)
        return grant

    monkeypatch.setattr(SimulatorState, "_issue", recording_issue)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Fail a passing test whose output or MQTT traffic showed a secret (tests/canary.py)."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when != "call":
        return
    leaks = canary.take_mqtt_leaks()
    for name, text in (
        ("stdout", report.capstdout),
        ("stderr", report.capstderr),
        ("log", report.caplog),
    ):
        leaks += [f"{leak} in captured {name}" for leak in canary.found_in(text)]
    if leaks and report.passed:
        report.outcome = "failed"
        report.longrepr = "secret leaked: " + "; ".join(sorted(set(leaks)))


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


@pytest_asyncio.fixture
async def gx(broker: Broker) -> AsyncIterator[GxPeer]:
    """The fake Victron GX (tests/gx_peer.py) on the test broker."""
    peer = GxPeer(broker.host, broker.port)
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()
