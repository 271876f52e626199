"""Broker restarts under a running daemon, and what happens to commands sent while it is away.

The test broker runs without persistence, so each restart forgets every retained message: all
that a late subscriber sees afterwards was republished by the daemon.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

from ioagent.mqtt.commands import RETAINED_REASON
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_EV_ID
from tests.broker import Broker
from tests.clocks import ShiftedClock, quiet_afternoon
from tests.faults import publish_once, retained_snapshot
from tests.harness import RunningDaemon, running_daemon, watching

RESTARTS = 10
RECONNECT_LIMIT = 5.0


def targets(simulator: RunningSimulator) -> set[float]:
    return {s.max for s in simulator.state.device(DEFAULT_EV_ID).preferences.schedules}


async def restart_and_time_reconnect(broker: Broker, d: RunningDaemon) -> float:
    """Seconds from the new broker accepting connections to a fresh subscriber seeing online."""
    await asyncio.to_thread(broker.restart)
    up = time.time()
    async with watching(broker, d.topics.status) as fresh:
        seen = await fresh.wait_for(d.topics.status, lambda p: p == "online", timeout=15)
    return seen.at - up


async def settled_in_flight(
    d: RunningDaemon, simulator: RunningSimulator, *, expected_answers: int
) -> tuple[int, int]:
    """How many in-flight commands ran and how many replies the broker acknowledged, once there
    is a reply for each of them and nothing has changed for a second; fails if a command that
    ran is never answered."""

    def counts() -> tuple[int, int]:
        writes = simulator.state.calls()["by_operation"].get("setDevicePreferences", 0)
        return writes - RESTARTS, d.daemon.bridge.replies_accepted  # RESTARTS synchronous writes

    try:
        async with asyncio.timeout(20):
            while True:
                ran, accepted = counts()
                if accepted >= expected_answers + ran:
                    await asyncio.sleep(1.0)
                    if counts() == (ran, accepted):
                        return ran, accepted
                await asyncio.sleep(0.1)
    except TimeoutError:
        ran, accepted = counts()
        raise AssertionError(
            f"{ran} in-flight commands ran, but only {accepted - expected_answers} of their "
            "replies were acknowledged by the broker"
        ) from None


async def test_ten_broker_restarts_reconnect_republish_and_answer_every_command(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    # In the afternoon: the test says that only a poll may change a payload across a restart, and
    # on the wall clock a CI run met the end of the night (05:30) in the middle of it.
    clock = ShiftedClock(quiet_afternoon(), simulator.state)
    async with running_daemon(broker, simulator, tmp_path, clock=clock) as d:
        t = d.topics
        # The harness returns at the first api "ok"; wait for the first poll to be published.
        await d.watcher.wait_for(t.api, lambda p: json.loads(p)["last_success"] is not None)
        answered: list[str] = []
        in_flight: list[str] = []
        reconnects: list[float] = []
        for cycle in range(RESTARTS):
            soc = 50 + cycle
            reply = await d.command("target_soc", str(soc))
            assert reply["status"] == "ok", reply
            answered.append(reply["transaction"])
            refresh = await d.command("refresh", "now")  # ok, or refused by the budget
            answered.append(refresh["transaction"])
            # The command's re-read of the device ends with its preferences.
            await d.watcher.wait_for(
                t.preferences,
                lambda p, soc=soc: {day["max"] for day in json.loads(p)["schedules"]} == {soc},
            )
            # ... and device/target_soc, published after it (a loaded soak run took the snapshot
            # below between the two, and then saw target_soc change across the restart).
            await d.watcher.wait_for(t.target_soc, lambda p, soc=soc: float(p) == soc)

            # Settled first: the tariff topics follow the poll a moment after its api "ok",
            # and a snapshot taken in between missed them (a flake after the four-rate merge).
            async with asyncio.timeout(15):
                while True:
                    before = await retained_snapshot(broker)
                    held = {k: v for k, v in before.items() if k != t.status}
                    if held == d.daemon.bridge.retained_topics:
                        break
                    await asyncio.sleep(0.1)
            # One more command, sent just before the broker dies. The broker may die before it
            # delivers it; if it reached the daemon it runs and is answered once, after the
            # reconnect if need be. It asks for the value already set, so it changes no topic.
            transaction = f"inflight-{cycle}"
            in_flight.append(transaction)
            await d.watcher.publish(
                t.command("target_soc"), json.dumps({"value": soc, "transaction": transaction})
            )
            reconnects.append(await restart_and_time_reconnect(broker, d))
            await asyncio.wait_for(d.daemon.bridge.connected_event.wait(), timeout=10)
            after = await retained_snapshot(broker)
            cache = d.daemon.bridge.retained_topics

            assert set(after) == set(before), (
                f"cycle {cycle}: missing {set(before) - set(after)}, extra {set(after) - set(before)}"
            )
            assert after.pop(t.status) == "online"
            assert after == cache, "the broker holds exactly the daemon's retained state"
            changed = {topic for topic in after if after[topic] != before[topic]}
            # Only a poll between the two snapshots may change a payload (no boundary is near).
            assert changed <= {t.api, t.offpeak, t.dispatching, t.transitions, t.completed}, [
                (topic, before[topic], after[topic]) for topic in changed
            ]
            assert len(after) >= 15

        # The daemon's side: every command that ran has a reply that a broker acknowledged, once.
        # The last in-flight command may still be running after the reconnect (on a loaded
        # machine, past the 1 s this test used to wait, which read as "9 of 10 answered").
        ran, accepted = await settled_in_flight(d, simulator, expected_answers=len(answered))
        assert accepted == len(answered) + ran, "each reply is acknowledged once"
        replies = d.replies()
        transactions = [r.get("transaction") for r in replies]
        for transaction in answered:
            assert transactions.count(transaction) == 1, (
                f"{transaction}: {transactions.count(transaction)}"
            )
        # The subscriber's side, across a killed broker, is at least once *to the broker*: a
        # PUBACK lost with the broker makes the daemon send the reply again (seen twice), and a
        # broker killed after its PUBACK loses the copy it had not passed on (seen never).
        seen = {r["transaction"]: r for r in replies if r.get("transaction") in in_flight}
        assert len(seen) <= ran
        for reply in replies:
            if reply.get("transaction") in seen:
                assert reply == seen[reply["transaction"]], "a reply sent again is the same reply"
        late = len(seen)
        twice = sum(transactions.count(transaction) > 1 for transaction in seen)
        assert not d.task.done()
    assert max(reconnects) <= RECONNECT_LIMIT, reconnects
    print(
        f"\nreconnect after broker restart: max={max(reconnects):.2f}s "
        f"median={statistics.median(reconnects):.2f}s over {len(reconnects)} restarts; "
        f"{len(answered)} commands answered exactly once; "
        f"{ran} of {len(in_flight)} commands sent just before a restart ran; the subscriber saw "
        f"{late} of their replies ({twice} twice)"
    )


async def test_a_retained_command_sent_while_offline_is_refused_and_cleared(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with running_daemon(broker, simulator, tmp_path) as d:
        t = d.topics
        await asyncio.to_thread(broker.restart)
        async with watching(broker, t.response) as replies:
            # The daemon backs off for at least 0.75 s: it has not yet said online to this broker.
            assert await retained_snapshot(broker, t.status) == {}
            body = json.dumps({"value": 42, "transaction": "while-offline"})
            await publish_once(broker, t.command("target_soc"), body, retain=True)
            reply = await replies.wait_for(t.response, timeout=10)
            answer = json.loads(reply.payload)
            assert answer == {
                "command": "target_soc",
                "status": "error",
                "error": RETAINED_REASON,
                "transaction": "while-offline",
            }
            await asyncio.sleep(1.0)
            # Exactly one answer: the clear must not come back as another "retained command".
            assert len(replies.values(t.response)) == 1, replies.values(t.response)[:3]
        assert t.command("target_soc") not in await retained_snapshot(broker)
        assert targets(simulator) == {80.0}


async def test_a_retained_command_is_answered_once_and_cleared_once(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with running_daemon(broker, simulator, tmp_path) as d:
        t = d.topics
        topic = t.command("boost")
        mark = len(d.watcher.messages)
        await publish_once(
            broker, topic, json.dumps({"value": "on", "transaction": "r1"}), retain=True
        )
        await d.watcher.wait_for(t.response, after=mark)
        await asyncio.sleep(1.0)
        seen = d.watcher.messages[mark:]
        assert [m.payload for m in seen if m.topic == topic][1:] == [""], "cleared once"
        answers = [json.loads(m.payload) for m in seen if m.topic == t.response]
        assert answers == [
            {"command": "boost", "status": "error", "error": RETAINED_REASON, "transaction": "r1"}
        ]
        assert topic not in await retained_snapshot(broker)


async def test_commands_sent_while_the_daemon_is_down_are_never_run_late(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with running_daemon(broker, simulator, tmp_path) as d:
        t = d.topics
    # The daemon is stopped (it said offline itself). Three kinds of command wait for it:
    plain = json.dumps({"value": "off", "transaction": "plain"})
    await publish_once(broker, t.command("smart_control"), plain, expiry=600)
    expiring = json.dumps({"value": 33, "transaction": "expiring"})
    await publish_once(broker, t.command("target_soc"), expiring, retain=True, expiry=2)
    retained = json.dumps({"value": "05:00", "transaction": "retained"})
    await publish_once(broker, t.command("ready_by"), retained, retain=True, expiry=600)
    await asyncio.sleep(3)  # the expiring one is now stale

    async with running_daemon(broker, simulator, tmp_path) as d:
        await asyncio.sleep(1.0)
        replies = d.replies()
        assert len(replies) == 1, replies[:3]
        answers = {r.get("transaction"): r for r in replies}
        assert set(answers) == {"retained"}, answers
        assert answers["retained"]["status"] == "error"
        assert answers["retained"]["error"] == RETAINED_REASON
        leftovers = await retained_snapshot(broker, f"{t.root}/set/#")
        assert leftovers == {}, leftovers
        device = simulator.state.device(DEFAULT_EV_ID)
        assert targets(simulator) == {80.0}
        assert {s.time.strftime("%H:%M") for s in device.preferences.schedules} == {"07:30"}
        assert not device.is_suspended
        # The daemon still takes fresh commands.
        assert (await d.command("target_soc", "60"))["status"] == "ok"
