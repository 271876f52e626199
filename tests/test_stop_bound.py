"""A stop always completes within ``STOP_BOUND``, whatever the daemon is doing.

Each case stops a daemon that is stuck somewhere a stop used to wait without a deadline: an
API request that outlives the stop, a broker that vanished without closing the connection
(Mosquitto under SIGSTOP), a resync in its pause, a store write that the disk holds up, and a
GX whose connection went half-open. ``RunningDaemon.stop`` itself gives up after a second
bound and fails with every task's stack, so a regression fails here instead of hanging.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from ioagent.runtime.daemon import STOP_BOUND
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_EV_ID
from ioagent.store.database import Store
from tests.broker import Broker
from tests.clocks import suite_now
from tests.gx_peer import GxPeer
from tests.harness import RunningDaemon, running_daemon

pytestmark = pytest.mark.timeout(120)

SLACK = 1.0
"""What the test's own scheduling may add to the daemon's bound on a loaded machine."""


async def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@contextmanager
def paused(broker: Broker) -> Iterator[None]:
    """The broker's process stopped (SIGSTOP): its sockets stay open but nothing answers."""
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)


async def stop_within_bound(d: RunningDaemon) -> float:
    elapsed = await d.stop()
    print(f"stop took {elapsed:.2f} s")
    assert elapsed <= STOP_BOUND + SLACK, f"the stop took {elapsed:.1f} s (bound {STOP_BOUND} s)"
    return elapsed


def offline_after(d: RunningDaemon, mark: int) -> bool:
    return "offline" in [m.payload for m in d.watcher.messages[mark:] if m.topic == d.topics.status]


async def test_stop_while_an_api_request_hangs(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    # Octopus holds the request for a minute and the client would wait 30 s for it.
    octopus = {"read_timeout": 30.0}
    async with running_daemon(broker, simulator, tmp_path, octopus=octopus) as d:
        fault = simulator.state.add_fault("timeout", 1, delay=60.0)
        assert (await d.command("refresh", "now"))["status"] == "ok"
        # The simulator takes the fault when the request arrives: it is in flight now.
        await wait_until(lambda: fault not in simulator.state.faults, timeout=40)
        await asyncio.sleep(0.2)
        mark = len(d.watcher.messages)
        await stop_within_bound(d)
        await wait_until(lambda: offline_after(d, mark), timeout=5)


async def test_stop_while_the_broker_is_gone_without_a_tcp_close(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with running_daemon(broker, simulator, tmp_path) as d:
        with paused(broker):
            # The shutdown's `offline` and DISCONNECT now go into a socket nobody reads.
            await asyncio.sleep(0.5)
            await stop_within_bound(d)


async def test_stop_during_the_resync_pause_resumes_and_stays_in_bound(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    device = simulator.state.device(DEFAULT_EV_ID)
    async with running_daemon(broker, simulator, tmp_path, polling={"resync_pause": 60.0}) as d:
        await d.watcher.publish(d.topics.command("resync"), "go")
        await wait_until(lambda: device.is_suspended)
        await stop_within_bound(d)
    assert not device.is_suspended, "the stop resumed smart control"


async def test_stop_during_the_resync_pause_while_octopus_hangs(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    device = simulator.state.device(DEFAULT_EV_ID)
    octopus = {"read_timeout": 30.0}
    polling = {"resync_pause": 60.0}
    async with running_daemon(broker, simulator, tmp_path, octopus=octopus, polling=polling) as d:
        await d.watcher.publish(d.topics.command("resync"), "go")
        await wait_until(lambda: device.is_suspended)
        simulator.state.add_fault("timeout", 100, delay=60.0)  # every resume hangs
        with capture_logs() as logs:
            await stop_within_bound(d)
    events = [entry["event"] for entry in logs]
    assert "resync_resume_abandoned" in events, "giving up on the resume is said, in words"


async def test_stop_while_a_store_write_is_held_up_by_the_disk(
    broker: Broker,
    simulator: RunningSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()
    held = threading.Event()
    original = Store.log_event

    def slow_disk(self: Store, *args: Any, **kwargs: Any) -> Any:
        held.set()
        release.wait(60)  # an SD card that takes a minute to answer
        return original(self, *args, **kwargs)

    try:
        async with running_daemon(broker, simulator, tmp_path) as d:
            device = simulator.state.device(DEFAULT_EV_ID)
            start = suite_now().replace(microsecond=0) + timedelta(hours=3)
            simulator.state.add_dispatch(device, start, start + timedelta(minutes=30), "SMART", 2)
            monkeypatch.setattr(Store, "log_event", slow_disk)
            assert (await d.command("refresh", "now"))["status"] == "ok"
            await wait_until(held.is_set, timeout=20)  # the new slot's event is being written
            with capture_logs() as logs:
                await stop_within_bound(d)
        events = [entry["event"] for entry in logs]
        assert "store_close_timed_out" in events, "an unfinished write is reported"
    finally:
        release.set()


async def test_stop_while_the_gx_connection_is_half_open(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    gx_broker = Broker(workdir=tmp_path / "gx-mosquitto")
    gx_broker.start()
    peer = GxPeer(gx_broker.host, gx_broker.port)
    await peer.start()
    try:
        victron = {"enabled": True, "host": gx_broker.host, "port": gx_broker.port}
        async with running_daemon(broker, simulator, tmp_path, victron=victron) as d:
            await d.watcher.wait_for(
                d.topics.victron, lambda p: json.loads(p)["connected"] is True, timeout=20
            )
            with paused(gx_broker):
                await asyncio.sleep(0.5)
                await stop_within_bound(d)
    finally:
        await _stop_peer(peer)
        gx_broker.stop()


async def _stop_peer(peer: GxPeer) -> None:
    task = asyncio.create_task(peer.stop())
    done, _ = await asyncio.wait({task}, timeout=15)
    if not done:
        task.cancel()


def test_the_bound_fits_inside_dockers_stop_timeout() -> None:
    # docker stop sends SIGKILL 10 s after SIGTERM: a stop that takes longer loses `offline`.
    assert STOP_BOUND < 10.0
