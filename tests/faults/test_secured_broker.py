"""The daemon against a locked-down broker: TLS only, a password file and an ACL."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from ioagent.mqtt.topics import Topics
from ioagent.runtime.daemon import Daemon
from ioagent.simulator.server import RunningSimulator
from ioagent.simulator.state import DEFAULT_ACCOUNT
from tests.faults import publish_once, retained_snapshot
from tests.faults.conftest import IOAGENT_PASSWORD, IOAGENT_USER, SecuredBroker
from tests.harness import daemon_settings, stop_daemon

TOPICS = Topics("ioagent", DEFAULT_ACCOUNT)
REFUSED = "MQTT broker refused the login: not authorised (check the user name and password)"


def secured_settings(
    secured: SecuredBroker, simulator: RunningSimulator, data: Path, password: str
) -> Any:
    return daemon_settings(
        secured.broker,
        simulator,
        data,
        mqtt={
            "username": IOAGENT_USER,
            "password": password,
            "tls": {"enabled": True, "ca_file": str(secured.ca_file)},
        },
    )


@contextlib.asynccontextmanager
async def daemon_task(settings: Any) -> AsyncIterator[tuple[Daemon, asyncio.Task[None]]]:
    daemon = Daemon(settings)
    task = asyncio.create_task(daemon.run(), name="secured-daemon")
    try:
        yield daemon, task
    finally:
        await stop_daemon(daemon, task)


async def test_right_credentials_publish_state_and_round_trip_a_command(
    secured_broker: SecuredBroker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    settings = secured_settings(secured_broker, simulator, tmp_path, IOAGENT_PASSWORD)
    broker = secured_broker.broker
    observer = secured_broker.observer_options()
    async with daemon_task(settings) as (daemon, _task):
        async with asyncio.timeout(15):
            await daemon_connected(daemon)
            state: dict[str, str] = {}
            while (
                json.loads(state.get(TOPICS.api, '{"last_success": null}'))["last_success"] is None
            ):
                await asyncio.sleep(0.1)
                state = await retained_snapshot(broker, "ioagent/#", **observer)
        assert state[TOPICS.status] == "online"
        assert state[TOPICS.offpeak] in {"true", "false"}
        assert json.loads(state[TOPICS.api])["state"] == "ok"

        # A command from the observer (allowed to write set/+) round-trips over TLS.
        async with secured_broker_client(secured_broker) as client:
            await client.subscribe(TOPICS.response, qos=1)
            body = json.dumps({"value": 65, "transaction": "tls-1"})
            await client.publish(TOPICS.command("target_soc"), body, qos=1)
            async with asyncio.timeout(10):
                async for message in client.messages:
                    reply = json.loads(str(message.payload.decode()))
                    if reply.get("transaction") == "tls-1":
                        break
        assert reply["status"] == "ok", reply

        # The ACL holds: the observer cannot overwrite the daemon's state.
        await publish_once(broker, TOPICS.offpeak, "forged", retain=True, **observer)
        after = await retained_snapshot(broker, "ioagent/#", **observer)
        assert after[TOPICS.offpeak] == state[TOPICS.offpeak]


async def daemon_connected(daemon: Daemon) -> None:
    while getattr(daemon, "bridge", None) is None:
        await asyncio.sleep(0.01)
    await daemon.bridge.connected_event.wait()


@contextlib.asynccontextmanager
async def secured_broker_client(secured: SecuredBroker) -> AsyncIterator[Any]:
    from tests.faults import client_for

    async with client_for(secured.broker, **secured.observer_options()) as client:
        yield client


async def test_a_wrong_password_is_reported_and_retried_with_growing_gaps(
    secured_broker: SecuredBroker, simulator: RunningSimulator, tmp_path: Path
) -> None:
    wrong = "pw-WRONG-0d1e"
    settings = secured_settings(secured_broker, simulator, tmp_path, wrong)
    refusals: list[float] = []
    with capture_logs() as logs:
        async with daemon_task(settings) as (daemon, task):
            seen = 0
            async with asyncio.timeout(20):
                while len(refusals) < 4:
                    for event in logs[seen:]:
                        if event["event"] == REFUSED:
                            refusals.append(time.monotonic())
                    seen = len(logs)
                    assert not task.done(), "the daemon must keep running"
                    await asyncio.sleep(0.01)
            assert not daemon.bridge.connected
            # The API side carries on meanwhile: the first poll ran without a broker.
            assert simulator.state.calls()["by_operation"].get("flexPlannedDispatches", 0) >= 1
    gaps = [later - earlier for earlier, later in itertools.pairwise(refusals)]
    assert all(b > a for a, b in itertools.pairwise(gaps)), gaps
    attempts = [e for e in logs if e["event"] == REFUSED]
    assert [e["attempt"] for e in attempts[:4]] == [1, 2, 3, 4]
    assert wrong not in repr(logs) and IOAGENT_PASSWORD not in repr(logs)
    assert "stopped" in [e["event"] for e in logs], "a clean stop even while disconnected"
    print(f"\nwrong password: retries after {', '.join(f'{g:.2f}' for g in gaps)} s")
