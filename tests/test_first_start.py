"""The first minutes of a new install.

A subscriber that arrives after ioagent (a Node-RED flow deployed later, HA restarted) must
get every retained topic, "no such time" included: an empty retained payload would have deleted
the topic on the broker, and that subscriber would wait forever."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from ioagent.mqtt.topics import NO_TIME
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_EV_ID
from tests.broker import Broker
from tests.clocks import suite_now
from tests.harness import running_daemon, watching
from tests.test_daemon import peak_now_tariff


async def test_a_late_subscriber_sees_none_for_a_time_that_does_not_exist(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    simulator.state.plug(simulator.state.device(DEFAULT_EV_ID), False)  # no plan: no next slot
    async with running_daemon(broker, simulator, tmp_path) as d:
        t = d.topics
        await d.watcher.wait_for(t.next_dispatch_start, lambda p: p == NO_TIME, timeout=10)
        # The same publish writes dispatching/end next: wait for it too, or a late subscriber
        # can get it live rather than retained (seen once in a loaded soak run).
        await d.watcher.wait_for(t.next_dispatch_end, lambda p: p == NO_TIME, timeout=10)
        async with watching(broker, f"{t.root}/#") as late:
            for topic in (t.next_dispatch_start, t.next_dispatch_end):
                seen = await late.wait_for(topic, timeout=5)
                assert seen.retain, topic
                assert seen.payload == NO_TIME, (topic, seen.payload)
        # Nothing ioagent keeps retained is ever an empty payload (which would delete it).
        retained_topics = {m.topic for m in d.watcher.messages if m.topic.startswith(t.root)}
        assert retained_topics
        empty = [
            m.topic for m in d.watcher.messages if m.topic.startswith(t.root) and not m.payload
        ]
        assert empty == []


async def test_a_new_install_during_a_running_slot_publishes_offpeak_true_once(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    device = simulator.state.device(DEFAULT_EV_ID)
    now = suite_now().replace(microsecond=0)
    simulator.state.add_dispatch(
        device, now - timedelta(minutes=5), now + timedelta(minutes=20), "SMART", 2.0
    )
    # A fresh database (tmp_path) and a fixed window far from now: only the slot is off-peak.
    async with running_daemon(broker, simulator, tmp_path, tariff=peak_now_tariff()) as d:
        t = d.topics
        await d.watcher.wait_for(t.offpeak, lambda p: p == "true", timeout=10)
        await asyncio.sleep(1.0)  # anything else start-up would publish has arrived by now
        assert d.watcher.values(t.offpeak) == ["true"], "never false first, not even briefly"
        assert d.watcher.values(t.dispatching) == ["true"]
        assert len(d.watcher.values(t.next_offpeak_start)) == 1
        assert len(d.watcher.values(t.offpeak_end)) == 1
