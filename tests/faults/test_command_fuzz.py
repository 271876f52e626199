"""Command fuzzing: any topic and payload gets exactly one reply, and invalid ones cost no API call.

Two levels. The fast one runs hundreds (soak: 10 000) of examples through the daemon's own path
without a broker: :func:`parse_command`, then :class:`CommandRunner` with a real
:class:`KrakenClient` against the simulator. The slow one sends a smaller number through the
real broker to the running daemon, pairing each reply with its message by MQTT v5 correlation
data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from ioagent.config import PollingSettings, TariffSettings
from ioagent.kraken.client import KrakenClient
from ioagent.mqtt.commands import (
    KNOWN_COMMANDS,
    RETAINED_REASON,
    STALE_REASON,
    Command,
    CommandRejection,
    parse_command,
)
from ioagent.mqtt.topics import Topics
from ioagent.runtime.agent import AccountAgent
from ioagent.runtime.command_runner import CommandRunner
from ioagent.runtime.poller import Poller
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_ACCOUNT, DEFAULT_API_KEY, DEFAULT_EV_ID
from ioagent.timeutil import Clock
from tests.broker import Broker
from tests.clocks import suite_now
from tests.harness import running_daemon

SOAK = os.environ.get("IOAGENT_FUZZ_SOAK_EXAMPLES")
PURE_EXAMPLES = 300
PURE_SOAK_EXAMPLES = int(SOAK or 10_000)
BROKER_EXAMPLES = 40
BROKER_SOAK_EXAMPLES = 1_000
MAX_AGE = 60.0

# --- strategies ---------------------------------------------------------------------------

NEAR_MISSES = st.sampled_from(
    ["on", "off", "ON", " true ", "false", "80", "80.0", "9", "101", "07:30", "05:00", "04:00",
     "11:00", "11:30", "06:15", "7:30", "07:30:00", "07:30:15", "24:00", "", " ", "null", "٨٠",
     "8_0", "1e2", "-0", "NaN", "Infinity", "{", "[]", "{}"]
)  # fmt: skip
JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    NEAR_MISSES,
    st.lists(st.integers(0, 100), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
TRANSACTIONS = st.one_of(
    st.text(max_size=140), st.integers(), st.floats(), st.booleans(), st.lists(st.integers())
)
ENVELOPES = st.fixed_dictionaries(
    {},
    optional={
        "value": JSON_VALUES,
        "transaction": TRANSACTIONS,
        "device_id": st.one_of(st.just(DEFAULT_EV_ID), st.text(max_size=8), st.integers()),
        "extra": st.integers(),
    },
)
PAYLOADS = st.one_of(
    NEAR_MISSES.map(str.encode),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    ENVELOPES.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=40).map(str.encode),
    st.binary(max_size=64),
    st.binary(min_size=1000, max_size=1100),
)
WELL_FORMED = st.one_of(
    st.sampled_from(["80", "55", "on", "off", "true", "07:30", "05:00", "10:30"]).map(str.encode),
    st.builds(
        lambda value, transaction: json.dumps({"value": value, "transaction": transaction}),
        st.one_of(st.integers(10, 100), st.sampled_from(["on", "off", "06:00", "08:30"])),
        st.text(max_size=20),
    ).map(str.encode),
)
PAYLOADS = st.one_of(WELL_FORMED, PAYLOADS)
KNOWN = st.sampled_from(KNOWN_COMMANDS)
NAMES = st.one_of(
    KNOWN,
    KNOWN,
    KNOWN,
    st.sampled_from(KNOWN_COMMANDS).map(str.upper),
    st.text(max_size=70),
)
AGES = st.one_of(st.none(), st.none(), st.floats(0, 2 * MAX_AGE), st.just(math.inf))
RETAINED = st.sampled_from([False, False, False, True])


# --- the fast level -------------------------------------------------------------------------


@dataclass(repr=False)
class CommandRig:
    simulator: RunningSimulator
    runner: CommandRunner
    device_ids: list[str]
    replies: dict[int, list[tuple[str, str | None]]] = field(default_factory=dict)
    commands: list[Command | CommandRejection] = field(default_factory=list)
    finished: int = 0
    examples: int = 0

    async def reply(
        self, command: Command | CommandRejection, status: str, err: str | None
    ) -> None:
        self.replies.setdefault(id(command), []).append((status, err))
        payload = json.loads(command.reply_json("ok" if status == "ok" else "error", err))
        assert payload["status"] == status

    def done(self, command: Command | CommandRejection, rechecks_before: int) -> bool:
        answers = self.replies.get(id(command), [])
        if not answers:
            return False
        # A successful device command is over once the runner has re-read the state and
        # scheduled its re-checks; anything else is over with its reply.
        if answers[0][0] == "ok" and isinstance(command, Command) and command.name != "refresh":
            return self.finished > rechecks_before
        return True


async def agent_with_devices(client: KrakenClient, clock: Clock) -> AccountAgent:
    """An agent that publishes nowhere and already knows the simulator's devices."""
    agent = AccountAgent(
        account=DEFAULT_ACCOUNT,
        client=client,
        publisher=_Discard(),
        store=None,
        topics=Topics("ioagent", DEFAULT_ACCOUNT),
        tariff=TariffSettings(),
        clock=clock,
    )
    agent.devices = await client.devices(DEFAULT_ACCOUNT)
    return agent


@pytest.fixture
async def command_rig(simulator: RunningSimulator) -> AsyncIterator[CommandRig]:
    async with KrakenClient(simulator.graphql_url, SecretStr(DEFAULT_API_KEY)) as client:
        agent = await agent_with_devices(client, suite_now)
        poller = Poller(agent, PollingSettings(), clock=suite_now)
        holder: list[CommandRig] = []

        async def reply(command: Command | CommandRejection, status: str, err: str | None) -> None:
            await holder[0].reply(command, status, err)

        runner = CommandRunner(agent, poller, reply, clock=suite_now, resync_pause=0.0)
        rig = CommandRig(simulator, runner, agent.device_ids)
        holder.append(rig)

        def rechecks_scheduled() -> None:
            rig.finished += 1

        poller.schedule_rechecks = rechecks_scheduled  # the last step of a successful command
        worker = asyncio.create_task(runner.run(), name="fuzz-commands")
        try:
            yield rig
            await asyncio.sleep(0.2)
            assert not worker.done()
            for command in rig.commands:
                answers = rig.replies.get(id(command), [])
                assert len(answers) == 1, (command, answers)
            valid = sum(isinstance(c, Command) for c in rig.commands)
            ok = sum(answers[0][0] == "ok" for answers in rig.replies.values())
            print(
                f"\ncommand fuzz (pure): {rig.examples} examples, {len(rig.commands)} replies, "
                f"{valid} valid commands, {ok} ok replies"
            )
            assert valid and ok, "the fuzz must also reach the API"
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker


class _Discard:
    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        return None


async def fuzz_one(
    rig: CommandRig, name: str, payload: bytes, retained: bool, age: float | None
) -> None:
    rig.examples += 1
    calls_before = rig.simulator.state.calls()["total"]
    rechecks_before = rig.finished
    command = parse_command(
        name,
        payload,
        retained=retained,
        now=suite_now(),
        message_age=age,
        max_age=MAX_AGE,
        device_ids=rig.device_ids,
    )
    rig.commands.append(command)
    await rig.runner.submit(command)
    async with asyncio.timeout(10):
        while not rig.done(command, rechecks_before):
            await asyncio.sleep(0.001)
    assert len(rig.replies[id(command)]) == 1
    if isinstance(command, CommandRejection):
        assert rig.simulator.state.calls()["total"] == calls_before, "invalid: no API call"
    if name in KNOWN_COMMANDS and retained:
        assert isinstance(command, CommandRejection) and command.reason == RETAINED_REASON
    elif name in KNOWN_COMMANDS and age is not None and age > MAX_AGE:
        assert isinstance(command, CommandRejection) and command.reason == STALE_REASON


_PURE = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@settings(max_examples=PURE_EXAMPLES, **_PURE)
@given(name=NAMES, payload=PAYLOADS, retained=RETAINED, age=AGES)
async def test_fuzzed_commands_get_one_reply_and_invalid_ones_no_api_call(
    command_rig: CommandRig, name: str, payload: bytes, retained: bool, age: float | None
) -> None:
    await fuzz_one(command_rig, name, payload, retained, age)


@pytest.mark.soak
@settings(max_examples=PURE_SOAK_EXAMPLES, **_PURE)
@given(name=NAMES, payload=PAYLOADS, retained=RETAINED, age=AGES)
async def test_fuzzed_commands_soak(
    command_rig: CommandRig, name: str, payload: bytes, retained: bool, age: float | None
) -> None:
    await fuzz_one(command_rig, name, payload, retained, age)


# --- through the broker ---------------------------------------------------------------------

TOPIC_LEVEL = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/#+\x00"),
    min_size=1,
    max_size=30,
)


BROKER_CASES = st.tuples(st.one_of(st.sampled_from(KNOWN_COMMANDS), TOPIC_LEVEL), PAYLOADS)
_BROKER = dict(
    max_examples=1,  # one daemon run, many messages: starting a daemon per example is too slow
    phases=[Phase.generate],
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


async def broker_fuzz(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path, cases: list[tuple[str, bytes]]
) -> None:
    async with running_daemon(broker, simulator, tmp_path) as d:
        d.daemon.runner.resync_pause = 0.0
        t = d.topics
        responses = "fuzz/replies"
        for index, (name, payload) in enumerate(cases):
            topic = t.refresh if name == "refresh" else t.command(name)
            await d.watcher.publish(
                topic, payload, response_topic=responses, correlation=str(index).encode()
            )
            # One at a time: a reply may take an API round trip; don't build a backlog.
            wanted = str(index).encode()
            await d.watcher.wait_for(
                responses,
                lambda _p, wanted=wanted: any(
                    m.topic == responses and m.correlation_data == wanted
                    for m in d.watcher.messages
                ),
                timeout=15,
            )
        await asyncio.sleep(1.0)
        counts: dict[bytes, int] = {}
        for message in d.watcher.messages:
            if message.topic == responses and message.correlation_data is not None:
                counts[message.correlation_data] = counts.get(message.correlation_data, 0) + 1
        assert counts == {str(i).encode(): 1 for i in range(len(cases))}
        assert not d.task.done()
        # Still healthy: a normal command after the storm of junk works.
        assert (await d.command("target_soc", "75"))["status"] == "ok"
    print(f"\ncommand fuzz (broker): {len(cases)} messages, one reply each")


@settings(**_BROKER)
@given(cases=st.lists(BROKER_CASES, min_size=BROKER_EXAMPLES, max_size=BROKER_EXAMPLES))
async def test_fuzzed_commands_through_the_broker(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path, cases: list[tuple[str, bytes]]
) -> None:
    await broker_fuzz(broker, simulator, tmp_path, cases)


@pytest.mark.soak
@settings(**_BROKER)
@given(cases=st.lists(BROKER_CASES, min_size=BROKER_SOAK_EXAMPLES, max_size=BROKER_SOAK_EXAMPLES))
async def test_fuzzed_commands_through_the_broker_soak(
    broker: Broker, simulator: RunningSimulator, tmp_path: Path, cases: list[tuple[str, bytes]]
) -> None:
    await broker_fuzz(broker, simulator, tmp_path, cases)


async def test_a_command_that_waited_too_long_in_the_queue_is_refused_not_run(
    simulator: RunningSimulator,
) -> None:
    received = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)
    now = [received]
    replies: list[tuple[str, str | None]] = []

    async def reply(command: Command | CommandRejection, status: str, err: str | None) -> None:
        replies.append((status, err))

    async with KrakenClient(simulator.graphql_url, SecretStr(DEFAULT_API_KEY)) as client:
        agent = await agent_with_devices(client, lambda: now[0])
        poller = Poller(agent, PollingSettings(), clock=lambda: now[0])
        runner = CommandRunner(agent, poller, reply, clock=lambda: now[0], max_age=60.0)
        command = parse_command(
            "target_soc",
            b"70",
            retained=False,
            now=received,
            message_age=0.0,
            max_age=60.0,
            device_ids=agent.device_ids,
        )
        assert isinstance(command, Command)
        simulator.state.reset_calls()
        await runner.submit(command)
        now[0] = received + timedelta(seconds=61)  # it waited behind a resync, say
        worker = asyncio.create_task(runner.run())
        try:
            async with asyncio.timeout(5):
                while not replies:
                    await asyncio.sleep(0.01)
        finally:
            worker.cancel()
    assert replies == [("error", STALE_REASON)]
    assert simulator.state.calls()["total"] == 0, "a stale command makes no API call"
