from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
import threading
import traceback
from asyncio import events as asyncio_events
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from ioagent.aio import describe_tasks
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import SimulatorState, TokenGrant
from tests import canary
from tests.broker import Broker
from tests.clocks import start_test_clock, suite_now
from tests.gx_peer import MODES, GxPeer

# The real-HA suite needs the chroot that scripts/real-ha builds; that script sets this variable.
collect_ignore = [] if os.environ.get("IOAGENT_REAL_HA_ROOT") else ["real_ha"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="also run long soak tests")


@pytest.fixture(autouse=True)
def test_clock() -> None:
    """With ``IOAGENT_TEST_START``, every test's wall clock starts at that instant (tests/clocks.py)."""
    start_test_clock()


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
        if is_soak(item):
            item.add_marker(skip_soak)


def is_soak(item: pytest.Item) -> bool:
    """Marked ``soak``. Not ``"soak" in item.keywords``: keywords include every directory name
    of the test's path, so a checkout in a folder named ``soak`` skipped the whole suite."""
    return item.get_closest_marker("soak") is not None


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
    async with run_simulator(SimulatorState.with_default_account(clock=suite_now)) as running:
        yield running


@pytest.fixture(params=MODES)
def gx_mode(request: pytest.FixtureRequest) -> str:
    """Each GX test runs against both MQTT services: dbus-flashmq and the older dbus-mqtt."""
    return str(request.param)


@pytest_asyncio.fixture
async def gx(broker: Broker, gx_mode: str) -> AsyncIterator[GxPeer]:
    """The fake Victron GX (tests/gx_peer.py) on the test broker, in both modes. It beats every
    0.2 s instead of 3 s so that tests can use short silence timeouts."""
    peer = GxPeer(broker.host, broker.port, mode=gx_mode, heartbeat_interval=0.2)
    await peer.start()
    try:
        yield peer
    finally:
        await peer.stop()


# ----- no test waits forever ---------------------------------------------------------------
# Every test has a hard deadline (pytest-timeout; `timeout` in pyproject.toml, raised per test
# with @pytest.mark.timeout). On expiry the stacks of every asyncio task and every thread go
# to stderr, so a hang fails fast and says where it was waiting. A backstop a minute later
# ends the whole run, in case the test cannot be interrupted (a hang in its teardown).
BACKSTOP_AFTER = 60.0


def _dump_hang(title: str) -> str:
    out = io.StringIO()
    out.write(f"\n{'+' * 30} {title} {'+' * 30}\n")
    loop = asyncio_events._get_running_loop()
    if loop is not None:
        tasks = asyncio.all_tasks(loop)
        out.write(f"{len(tasks)} asyncio task(s) in the running loop:\n")
        out.write(describe_tasks(tasks, limit=20))
    out.write("threads:\n")
    for thread_id, frame in sys._current_frames().items():
        out.write(f"--- thread {thread_id}\n{''.join(traceback.format_stack(frame))}")
    text = out.getvalue()
    sys.__stderr__.write(text)
    sys.__stderr__.flush()
    return text


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool:
    deadline = float(settings.timeout)

    def on_alarm(signum: int, frame: object) -> None:
        __tracebackhide__ = True
        _dump_hang(f"Timeout: {item.nodeid} ran longer than {deadline:g} s")
        pytest.fail(f"hung: ran longer than its {deadline:g} s deadline (stacks on stderr)")

    def backstop() -> None:
        _dump_hang(f"Timeout backstop: {item.nodeid} could not be interrupted")
        os._exit(3)

    timer = threading.Timer(deadline + BACKSTOP_AFTER, backstop)
    timer.daemon = True

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        timer.cancel()

    # pytest-timeout's protocol: its cancel hook calls item.cancel_timeout() when the test ends.
    setattr(item, "cancel_timeout", cancel)  # noqa: B010
    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, deadline)
    timer.start()
    return True
