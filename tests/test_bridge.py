from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import socket
import ssl
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from structlog.testing import capture_logs

from ioagent.config import MqttSettings
from ioagent.mqtt import bridge as bridge_module
from ioagent.mqtt.bridge import (
    IncomingMessage,
    MqttBridge,
    describe_connection_error,
)
from tests.broker import Broker

REPO_ROOT = Path(__file__).resolve().parent.parent
STATUS = "t/status"
COMMANDS = "t/set/+"


# --- pure helpers ---------------------------------------------------------------------------


def _refusal(code: int) -> MqttConnectError:
    return MqttConnectError(ReasonCode(PacketTypes.CONNACK, identifier=code))


def _lost(code: int) -> aiomqtt.MqttError:
    try:
        raise aiomqtt.MqttCodeError(ReasonCode(PacketTypes.DISCONNECT, identifier=code))
    except aiomqtt.MqttCodeError as cause:
        error = aiomqtt.MqttError("Disconnected during message iteration")
        error.__cause__ = cause
        return error


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_refusal(134), "MQTT broker refused the login: bad user name or password"),
        (MqttConnectError(4), "MQTT broker refused the login: bad user name or password"),
        (_refusal(135), "MQTT broker refused the login: not authorised"),
        (_refusal(133), "MQTT broker refused the client id"),
        (_refusal(137), "MQTT broker at h:1883 refused the connection: Server busy"),
        (_lost(142), "another client connected with the same client id"),
        (_lost(128), "lost the connection to the MQTT broker at h:1883"),
        (_lost(152), "lost the connection to the MQTT broker at h:1883: Administrative action"),
        (
            aiomqtt.MqttError("[Errno 111] Connection refused"),
            "cannot reach the MQTT broker at h:1883: connection refused",
        ),
        (aiomqtt.MqttError("Operation timed out"), "MQTT broker at h:1883 did not answer in time"),
        (
            aiomqtt.MqttError("[Errno -2] Name or service not known"),
            "cannot resolve the MQTT broker host name 'h'",
        ),
        (
            aiomqtt.MqttError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            "TLS with the MQTT broker at h:1883 failed",
        ),
        (ssl.SSLError(1, "wrong version number"), "TLS with the MQTT broker at h:1883 failed"),
        (aiomqtt.MqttError("something new"), "MQTT connection to h:1883 failed: something new"),
    ],
)
def test_describe_connection_error(exc: BaseException, expected: str) -> None:
    assert expected in describe_connection_error(exc, "h", 1883)


RECEIVED = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expiry", "after", "expected"),
    [
        (None, 0.0, 0.0),
        (None, 12.5, 12.5),
        (None, -3.0, 0.0),
        (30, 29.0, 29.0),
        (30, 30.0, math.inf),
        (0, 0.0, math.inf),
    ],
)
def test_incoming_message_age(expiry: int | None, after: float, expected: float) -> None:
    message = IncomingMessage(
        topic="t",
        payload=b"",
        retain=False,
        qos=1,
        response_topic=None,
        correlation_data=None,
        message_expiry_interval=expiry,
        received_at=RECEIVED,
    )
    assert message.age(RECEIVED + timedelta(seconds=after)) == expected


# --- against a real broker --------------------------------------------------------------------


POLL_SECONDS = 0.02


async def eventually(predicate: Callable[[], bool], within: float = 8.0) -> None:
    """Poll until ``predicate`` holds; ``within`` is a safety net, not a timing assertion."""
    for _ in range(int(within / POLL_SECONDS)):
        if predicate():
            return
        await asyncio.sleep(POLL_SECONDS)
    raise AssertionError(f"condition still false after {within} s")


async def retained_snapshot(broker: Broker, topic_filter: str = "#") -> dict[str, bytes]:
    """Every retained message the broker holds under ``topic_filter`` right now."""
    sentinel = f"sentinel/{uuid.uuid4().hex}"
    found: dict[str, bytes] = {}
    async with aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.subscribe(topic_filter, qos=1)
        # Retained messages are sent right after their SUBACK, so they precede the sentinel.
        await client.subscribe(sentinel, qos=1)
        await client.publish(sentinel, b"x", qos=1)
        async with asyncio.timeout(5):
            async for message in client.messages:
                if message.topic.value == sentinel:
                    break
                if message.retain:
                    found[message.topic.value] = bytes(message.payload)
    return found


async def retained_value(broker: Broker, topic: str) -> bytes | None:
    return (await retained_snapshot(broker, topic)).get(topic)


async def wait_for_retained(broker: Broker, topic: str, value: bytes | None) -> None:
    last: bytes | None = None
    for _ in range(160):
        last = await retained_value(broker, topic)
        if last == value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{topic} holds {last!r}, expected {value!r}")


def settings_for(broker: Broker, **extra: Any) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, keepalive=5, **extra)


async def ignore(_message: IncomingMessage) -> None:
    return None


def make_bridge(
    broker: Broker,
    on_message: Callable[[IncomingMessage], Awaitable[None]] = ignore,
    *,
    client_id: str = "ioagent-test",
    backoff_initial: float = 0.25,
    **settings: Any,
) -> MqttBridge:
    return MqttBridge(
        settings_for(broker, **settings),
        client_id=client_id,
        status_topic=STATUS,
        subscriptions=[COMMANDS],
        on_message=on_message,
        backoff_initial=backoff_initial,
        backoff_max=2.0,
    )


@contextlib.asynccontextmanager
async def running(bridge: MqttBridge, *, wait: bool = True) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(bridge.run())
    try:
        if wait:
            async with asyncio.timeout(8):
                await bridge.connected_event.wait()
        yield task
    finally:
        await bridge.shutdown(wait_seconds=3)
        stopped_by_shutdown = task.done() and not task.cancelled()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert stopped_by_shutdown, "shutdown() did not make run() return"


async def publish_as_user(
    broker: Broker,
    topic: str,
    payload: bytes,
    *,
    retain: bool = False,
    properties: Properties | None = None,
) -> None:
    async with aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as client:
        await client.publish(topic, payload, qos=1, retain=retain, properties=properties)


async def test_online_on_connect_and_offline_on_shutdown(broker: Broker) -> None:
    bridge = make_bridge(broker)
    async with running(bridge) as task:
        assert bridge.connected
        assert await retained_value(broker, STATUS) == b"online"
        await bridge.shutdown()
        assert task.done()
        assert task.exception() is None
        assert not bridge.connected_event.is_set()
    assert await retained_value(broker, STATUS) == b"offline"


async def test_cancelling_run_still_leaves_offline(broker: Broker) -> None:
    bridge = make_bridge(broker)
    task = asyncio.create_task(bridge.run())
    async with asyncio.timeout(8):
        await bridge.connected_event.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert await retained_value(broker, STATUS) == b"offline"


LWT_SCRIPT = """
import asyncio, sys
from ioagent.mqtt.bridge import MqttBridge
from ioagent.config import MqttSettings
from ioagent.mqtt import bridge as bridge_module

async def ignore(message):
    pass

async def main():
    settings = MqttSettings(host=sys.argv[1], port=int(sys.argv[2]), keepalive=5)
    bridge = MqttBridge(settings, client_id="lwt-victim", status_topic=sys.argv[3],
                        subscriptions=[], on_message=ignore)
    await bridge.run()

asyncio.run(main())
"""


async def test_last_will_says_offline_when_the_process_dies(broker: Broker) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        LWT_SCRIPT,
        broker.host,
        str(broker.port),
        STATUS,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_for_retained(broker, STATUS, b"online")
        process.kill()  # SIGKILL: no chance to say goodbye, only the will can
        await process.wait()
        await wait_for_retained(broker, STATUS, b"offline")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_retained_cache_is_replayed_after_the_broker_forgets(broker: Broker) -> None:
    bridge = make_bridge(broker)
    with capture_logs() as logs:
        async with running(bridge):
            await bridge.publish("t/a", "1", retain=True)
            await bridge.publish("t/b", "2", retain=True)
            await bridge.publish("t/b", "", retain=True)
            assert await retained_snapshot(broker, "t/+") == {"t/a": b"1", "t/status": b"online"}

            await asyncio.to_thread(broker.stop)
            await eventually(lambda: not bridge.connected)
            await bridge.publish("t/c", "3", retain=True)
            await bridge.publish("t/event", "gone", retain=False)
            assert bridge.retained_topics == {"t/a": "1", "t/c": "3"}

            await asyncio.to_thread(broker.start)
            await eventually(lambda: bridge.connected)
            assert await retained_snapshot(broker, "t/+") == {
                "t/a": b"1",
                "t/c": b"3",
                "t/status": b"online",
            }
    dropped = [e for e in logs if e["event"] == "mqtt publish dropped while disconnected"]
    assert [e["topic"] for e in dropped] == ["t/event"]
    assert any("lost the connection to the MQTT broker" in e["event"] for e in logs)


async def test_clear_while_disconnected_reaches_the_broker_on_reconnect(broker: Broker) -> None:
    bridge = make_bridge(broker, client_id="ioagent-clear", backoff_initial=2.0)
    with capture_logs() as logs:
        async with running(bridge):
            await bridge.publish("t/x", "1", retain=True)
            assert await retained_value(broker, "t/x") == b"1"
            # Connecting with the same client id makes the broker drop the bridge, which keeps
            # its retained messages: the stale value stays there unless the bridge clears it.
            async with aiomqtt.Client(
                broker.host,
                broker.port,
                identifier="ioagent-clear",
                protocol=aiomqtt.ProtocolVersion.V5,
            ):
                await eventually(lambda: not bridge.connected)
            await bridge.clear_retained("t/x")
            await eventually(lambda: bridge.connected)
            assert await retained_value(broker, "t/x") is None
    assert any(e["event"].startswith("lost the connection to the MQTT broker") for e in logs)


async def test_connects_once_the_broker_comes_up(broker: Broker) -> None:
    await asyncio.to_thread(broker.stop)
    bridge = make_bridge(broker)
    with capture_logs() as logs:
        async with running(bridge, wait=False):
            await eventually(lambda: any("connection refused" in e["event"] for e in logs))
            await asyncio.to_thread(broker.start)
            await eventually(lambda: bridge.connected)
            assert await retained_value(broker, STATUS) == b"online"


async def test_handler_errors_are_logged_and_later_messages_still_arrive(broker: Broker) -> None:
    handled: list[bytes] = []

    async def on_message(message: IncomingMessage) -> None:
        if message.payload == b"boom":
            raise RuntimeError("handler bug")
        handled.append(message.payload)

    bridge = make_bridge(broker, on_message)
    with capture_logs() as logs:
        async with running(bridge):
            for payload in (b"1", b"boom", b"2", b"3"):
                await publish_as_user(broker, "t/set/boost", payload)
            await eventually(lambda: len(handled) == 3)
            assert bridge.connected
    assert handled == [b"1", b"2", b"3"]
    failures = [e for e in logs if e["event"] == "MQTT message handler failed"]
    assert len(failures) == 1


async def test_on_connect_runs_on_every_connection(broker: Broker) -> None:
    connects = 0

    async def on_connect() -> None:
        nonlocal connects
        connects += 1
        if connects == 1:
            raise RuntimeError("first on_connect fails")

    bridge = MqttBridge(
        settings_for(broker),
        client_id="ioagent-onconnect",
        status_topic=STATUS,
        subscriptions=[COMMANDS],
        on_message=ignore,
        on_connect=on_connect,
        backoff_initial=0.25,
    )
    async with running(bridge):
        await eventually(lambda: connects == 1)
        await asyncio.to_thread(broker.restart)
        await eventually(lambda: connects == 2)
        assert bridge.connected


async def test_v5_response_topic_and_correlation_data(broker: Broker) -> None:
    received: list[IncomingMessage] = []
    bridge: MqttBridge

    async def on_message(message: IncomingMessage) -> None:
        received.append(message)
        await bridge.reply(
            "t/response",
            '{"command":"boost","status":"ok"}',
            response_topic=message.response_topic,
            correlation_data=message.correlation_data,
        )

    bridge = make_bridge(broker, on_message)
    async with (
        running(bridge),
        aiomqtt.Client(broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5) as user,
    ):
        await user.subscribe("requester/inbox", qos=1)
        await user.subscribe("t/response", qos=1)
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho is unannotated
        properties.ResponseTopic = "requester/inbox"
        properties.CorrelationData = b"\x00req-1"
        properties.MessageExpiryInterval = 30
        await user.publish("t/set/boost", b"on", qos=1, properties=properties)
        replies: dict[str, aiomqtt.Message] = {}
        async with asyncio.timeout(5):
            async for message in user.messages:
                replies[message.topic.value] = message
                if len(replies) == 2:
                    break
    assert replies["requester/inbox"].payload == b'{"command":"boost","status":"ok"}'
    inbox_properties = replies["requester/inbox"].properties
    assert inbox_properties is not None
    # paho sets MQTT v5 properties as dynamic attributes.
    assert inbox_properties.CorrelationData == b"\x00req-1"  # type: ignore[attr-defined]
    assert replies["t/response"].payload == b'{"command":"boost","status":"ok"}'
    [incoming] = received
    assert (incoming.topic, incoming.payload, incoming.retain) == ("t/set/boost", b"on", False)
    assert incoming.response_topic == "requester/inbox"
    assert incoming.correlation_data == b"\x00req-1"
    assert incoming.message_expiry_interval is not None
    assert 0 < incoming.message_expiry_interval <= 30
    assert incoming.age(incoming.received_at) == 0.0


async def test_retained_commands_arrive_flagged(broker: Broker) -> None:
    received: list[IncomingMessage] = []

    async def on_message(message: IncomingMessage) -> None:
        received.append(message)

    await publish_as_user(broker, "t/set/target_soc", b"80", retain=True)
    bridge = make_bridge(broker, on_message)
    async with running(bridge):
        await eventually(lambda: len(received) == 1)
    assert received[0].retain
    assert received[0].response_topic is None


async def test_reply_to_a_wildcard_response_topic_does_not_break_the_bridge(
    broker: Broker,
) -> None:
    bridge = make_bridge(broker)
    with capture_logs() as logs:
        async with running(bridge):
            await bridge.reply("t/response", "x", response_topic="bad/#", correlation_data=None)
            assert bridge.connected
            await bridge.publish("t/after", "ok", retain=True)
            assert await retained_value(broker, "t/after") == b"ok"
    assert any(e["event"] == "mqtt publish refused" and e["topic"] == "bad/#" for e in logs)


def write_password_file(path: Path, user: str, password: str) -> None:
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(path), user, password],
        check=True,
        capture_output=True,
    )
    path.chmod(0o600)


async def test_wrong_password_is_reported_clearly_and_retried(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password_file = tmp_path / "passwords"
    await asyncio.to_thread(write_password_file, password_file, "ioagent", "right-horse-battery")
    broker.extra_config = ["allow_anonymous false", f"password_file {password_file}"]
    if os.geteuid() == 0:
        # As root, mosquitto drops to user "mosquitto", who cannot read pytest's private tmp dir.
        broker.extra_config.append("user root")
    await asyncio.to_thread(broker.restart)
    wrong = "wrong-staple-9137"
    bridge = make_bridge(broker, username="ioagent", password=wrong)
    with capture_logs() as logs:
        async with running(bridge, wait=False) as task:
            await eventually(lambda: len(logs) >= 3)
            assert not task.done()
            assert not bridge.connected
    refusals = [e for e in logs if e["event"].startswith("MQTT broker refused the login")]
    assert len(refusals) >= 3
    # Mosquitto 2 answers an MQTT v5 login with a wrong password with "not authorised".
    assert {e["event"] for e in refusals} == {
        "MQTT broker refused the login: not authorised (check the user name and password)"
    }
    delays = [e["retry_in"] for e in refusals]
    assert delays == sorted(delays)
    assert delays[0] < delays[-1]
    assert wrong not in repr(logs)
    assert wrong not in caplog.text
    assert wrong not in repr(bridge)

    right = make_bridge(broker, username="ioagent", password="right-horse-battery")
    async with running(right):
        assert right.connected


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for "other.example" (not 127.0.0.1)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    extensions = directory / "san.ext"
    extensions.write_text("subjectAltName=DNS:other.example\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    days = ["-days", "2"]
    commands = [
        [
            "openssl",
            "req",
            "-x509",
            *ec,
            *days,
            "-keyout",
            ca_key,
            "-out",
            ca_cert,
            "-subj",
            "/CN=CA",
        ],
        ["openssl", "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=other.example"],
        [
            *("openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key),
            *("-CAcreateserial", "-out", cert, *days, "-extfile", extensions),
        ],
    ]
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return ca_cert, cert, key


@pytest.fixture
async def tls_broker(broker: Broker, tmp_path: Path) -> Path:
    """Turn the test broker into a TLS-only one; returns the CA certificate."""
    ca_cert, cert, key = await asyncio.to_thread(make_certificates, tmp_path / "certs")
    broker.listener_options = [f"cafile {ca_cert}", f"certfile {cert}", f"keyfile {key}"]
    if os.geteuid() == 0:
        broker.extra_config = ["user root"]
    await asyncio.to_thread(broker.restart)
    return ca_cert


async def test_tls_with_the_right_ca_connects_and_round_trips(
    broker: Broker, tls_broker: Path
) -> None:
    received: list[IncomingMessage] = []

    async def on_message(message: IncomingMessage) -> None:
        received.append(message)

    # The certificate names other.example, so only insecure (no host-name check) connects.
    tls = {"enabled": True, "ca_file": tls_broker, "insecure": True}
    bridge = make_bridge(broker, on_message, tls=tls)
    async with running(bridge):
        await bridge.publish("t/set/boost", "on")
        await eventually(lambda: len(received) == 1)
    assert received[0].payload == b"on"


@pytest.mark.parametrize(
    ("tls", "reason"),
    [
        ({"enabled": True}, "certificate verify failed"),
        ({"enabled": True, "ca_file": "CA"}, "match"),
    ],
    ids=["unknown-ca", "host-name-mismatch"],
)
async def test_tls_failures_are_reported(
    broker: Broker, tls_broker: Path, tls: dict[str, Any], reason: str
) -> None:
    tls = {key: tls_broker if value == "CA" else value for key, value in tls.items()}
    bridge = make_bridge(broker, tls=tls)
    with capture_logs() as logs:
        async with running(bridge, wait=False):
            await eventually(lambda: any(e.get("retry_in") for e in logs))
            assert not bridge.connected
    failure = next(e["event"] for e in logs if e.get("retry_in"))
    assert failure.startswith(f"TLS with the MQTT broker at {broker.host}:{broker.port} failed")
    assert reason in failure


async def test_a_reply_made_while_the_broker_is_away_is_sent_on_reconnect(broker: Broker) -> None:
    # Backoff longer than the test subscriber needs to reconnect, so it is listening in time.
    bridge = make_bridge(broker, client_id="ioagent-replies", backoff_initial=2.0)
    async with running(bridge):
        await asyncio.to_thread(broker.stop)
        await eventually(lambda: not bridge.connected)
        # A command ran while the broker was down: its reply must not be lost.
        await bridge.reply(
            "t/response",
            '{"command":"boost","status":"ok","transaction":"during-outage"}',
            response_topic="requester/inbox",
            correlation_data=b"req-7",
        )
        await asyncio.to_thread(broker.start)
        async with aiomqtt.Client(
            broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as user:
            await user.subscribe("t/response", qos=1)
            await user.subscribe("requester/inbox", qos=1)
            assert not bridge.connected, "the bridge must reconnect after the subscriber"
            received: list[aiomqtt.Message] = []

            async def collect() -> None:
                async for message in user.messages:
                    received.append(message)

            reader = asyncio.create_task(collect())
            await eventually(lambda: len(received) >= 2, within=10)
            await asyncio.sleep(0.5)  # a duplicate would arrive by now
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    assert sorted(m.topic.value for m in received) == ["requester/inbox", "t/response"]
    expected = b'{"command":"boost","status":"ok","transaction":"during-outage"}'
    assert all(m.payload == expected for m in received)
    replies = {m.topic.value: m for m in received}
    inbox_properties = replies["requester/inbox"].properties
    assert inbox_properties is not None
    # paho sets MQTT v5 properties as attributes it does not declare.
    assert getattr(inbox_properties, "CorrelationData", None) == b"req-7"


async def test_a_reply_whose_publish_outlives_its_connection_is_sent_on_the_next(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A publish waits for its PUBACK up to PUBLISH_TIMEOUT even after its connection has died,
    # so the bridge can be connected again before the reply's send gives up. The reply used to
    # wait in the backlog for the *next* reconnect, which may never come: "9 of 10 answered".
    monkeypatch.setattr(bridge_module, "PUBLISH_TIMEOUT", 3.0)
    bridge = make_bridge(broker, client_id="ioagent-replies")
    payload = '{"command":"boost","status":"ok","transaction":"outlived"}'
    async with running(bridge):
        assert broker.process is not None
        os.kill(broker.process.pid, signal.SIGSTOP)  # the PUBLISH goes out; no PUBACK comes
        sending = asyncio.create_task(
            bridge.reply("t/response", payload, response_topic=None, correlation_data=None)
        )
        await asyncio.sleep(0.3)
        assert not sending.done()
        await asyncio.to_thread(broker.restart)  # SIGKILL ends a stopped process too
        async with aiomqtt.Client(
            broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5
        ) as user:
            await user.subscribe("t/response", qos=1)
            received: list[aiomqtt.Message] = []

            async def collect() -> None:
                async for message in user.messages:
                    received.append(message)

            reader = asyncio.create_task(collect())
            await asyncio.wait_for(sending, timeout=10)
            assert bridge.connected, "the old publish gave up after the bridge reconnected"
            await eventually(lambda: len(received) >= 1, within=10)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    assert [m.payload for m in received] == [payload.encode()]
    assert bridge.replies_accepted == 1


async def test_a_command_sent_as_soon_as_the_bridge_says_online_is_heard(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen in CI (a real `ioagent run` over TLS): `online` went out before the subscription,
    # and before the replay of every retained topic; a command sent on seeing `online` (or a
    # replayed topic) was never delivered. A flow that waits for `online` and then sends must be
    # heard. The replay is held here, so that the command surely arrives while it runs.
    received: list[IncomingMessage] = []

    async def on_message(message: IncomingMessage) -> None:
        received.append(message)

    bridge = make_bridge(broker, on_message)
    replaying = asyncio.Event()
    release = asyncio.Event()
    replay = bridge._replay

    async def held_replay(client: aiomqtt.Client) -> None:
        replaying.set()
        await release.wait()
        await replay(client)

    monkeypatch.setattr(bridge, "_replay", held_replay)
    async with aiomqtt.Client(
        broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5
    ) as user:
        await user.subscribe(STATUS, qos=1)
        async with running(bridge, wait=False):
            async for message in user.messages:
                if message.payload == b"online":
                    break
            await asyncio.wait_for(replaying.wait(), timeout=5)
            await user.publish("t/set/boost", "on", qos=1)
            await asyncio.sleep(0.3)  # delivered to whoever is subscribed by now
            release.set()
            await eventually(lambda: len(received) == 1, within=10)
    assert received[0].payload == b"on"


async def assert_nagle_is_off(bridge: MqttBridge) -> None:
    async with running(bridge):
        client = bridge._client
        assert client is not None
        sock = client._client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_the_broker_socket_sends_small_publishes_at_once(broker: Broker) -> None:
    await assert_nagle_is_off(make_bridge(broker))


async def test_the_tls_broker_socket_sends_small_publishes_at_once(
    broker: Broker, tls_broker: Path
) -> None:
    tls = {"enabled": True, "ca_file": tls_broker, "insecure": True}
    await assert_nagle_is_off(make_bridge(broker, tls=tls))
