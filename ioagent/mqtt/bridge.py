"""The MQTT edge: one long-lived bridge to the broker that survives every broker outage.

Each connection attempt builds a fresh ``aiomqtt.Client`` (MQTT v5, clean start, so no stale
session and no messages queued for us while we were away) with a retained ``offline`` last will
on the status topic. On connect it publishes ``online``, replays every retained payload it has
cached (the broker may have restarted and forgotten them), subscribes, awaits ``on_connect``,
then hands incoming messages to ``on_message`` one at a time, in arrival order.

Freshness of commands. ``IncomingMessage.received_at`` is stamped when the message reaches
ioagent, and :meth:`IncomingMessage.age` is the time since then, or ``math.inf`` once the
sender's MQTT v5 message expiry (as forwarded by the broker, i.e. what was left of it) has run
out. Because the session always starts clean, the broker never delivers commands that were
queued while ioagent was offline; the only old messages it can deliver are retained ones, which
carry ``retain=True`` and which the daemon refuses outright. So a command is *fresh* when it is
not retained, its v5 expiry (if any) has not passed, and it has not waited in ioagent's own queue
(e.g. behind a slow command, or across a reconnect) for longer than ``command_max_age``.

Nothing here raises to the caller: publish failures are logged, connection failures are logged
as one clear line and retried with capped exponential backoff plus jitter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import random
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ioagent.aio import cancel_and_wait, keeping_cancellation, wait_event
from ioagent.budget import backoff_delay
from ioagent.config import MqttSettings
from ioagent.logs import get_logger, redact, register_secret
from ioagent.timeutil import Clock, utc_now

log = get_logger(__name__)

ONLINE = "online"
OFFLINE = "offline"
QOS = 1
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
"""Each delay is shortened by up to this fraction, so restarts of many clients spread out."""
PUBLISH_TIMEOUT = 5.0
INBOX_LIMIT = 1000
"""Messages waiting for the handler; beyond this a flood is dropped rather than eating memory."""
REPLY_BACKLOG = 100
"""Command replies kept while the broker is away, sent on reconnect (oldest dropped first)."""
SHUTDOWN_TIMEOUT = 3.0
"""A clean ``offline`` and DISCONNECT get most of this; past it the connection is cancelled."""
OFFLINE_TIMEOUT = 1.5
"""How long the ``offline`` on the way out waits for its PUBACK (a dead broker sends none)."""

_UNSPECIFIED = 128
# MQTT v5 CONNACK reason codes (and their v3.1.1 equivalents) users actually hit.
_REFUSALS = {
    134: "MQTT broker refused the login: bad user name or password",
    4: "MQTT broker refused the login: bad user name or password",
    # Mosquitto answers a wrong password with "not authorised", so name the likely cause.
    135: "MQTT broker refused the login: not authorised (check the user name and password)",
    5: "MQTT broker refused the login: not authorised (check the user name and password)",
    133: "MQTT broker refused the client id (set mqtt.client_id to something simpler)",
    2: "MQTT broker refused the client id (set mqtt.client_id to something simpler)",
    138: "MQTT broker refused the connection: this client is banned",
    136: "MQTT broker refused the connection: server unavailable",
    3: "MQTT broker refused the connection: server unavailable",
    159: "MQTT broker refused the connection: connection rate exceeded",
}


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One message from a subscribed topic, with the MQTT v5 fields a reply needs."""

    topic: str
    payload: bytes
    retain: bool
    qos: int
    response_topic: str | None
    correlation_data: bytes | None = field(repr=False)
    message_expiry_interval: int | None
    received_at: datetime

    def age(self, now: datetime) -> float:
        """Seconds since ioagent received it; ``math.inf`` once its v5 expiry has run out."""
        waited = max(0.0, (now - self.received_at).total_seconds())
        if self.message_expiry_interval is not None and waited >= self.message_expiry_interval:
            return math.inf
        return waited


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _reason_value(rc: object) -> int | None:
    if isinstance(rc, ReasonCode):
        return int(rc.value)
    if isinstance(rc, int):
        return rc
    return None


def _reason_text(error: aiomqtt.MqttCodeError) -> str:
    return str(error.rc) if isinstance(error.rc, ReasonCode) else str(error)


def describe_connection_error(exc: BaseException, host: str, port: int) -> str:
    """One line that tells the user what went wrong with the broker connection."""
    where = f"{host}:{port}"
    for cause in _causes(exc):
        if isinstance(cause, MqttConnectError):
            value = _reason_value(cause.rc)
            if value in _REFUSALS:
                return _REFUSALS[value]
            return f"MQTT broker at {where} refused the connection: {_reason_text(cause)}"
        if isinstance(cause, aiomqtt.MqttCodeError):
            value = _reason_value(cause.rc)
            if value == 142:
                return (
                    f"MQTT broker at {where} dropped the connection: another client "
                    "connected with the same client id"
                )
            if value in _REFUSALS:
                return _REFUSALS[value]
            if value == _UNSPECIFIED:
                # What paho reports for a dropped socket: the detail would only confuse.
                return f"lost the connection to the MQTT broker at {where}"
            return f"lost the connection to the MQTT broker at {where}: {_reason_text(cause)}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS with the MQTT broker at {where} failed: {cause}"
        if isinstance(cause, ConnectionRefusedError):
            return f"cannot reach the MQTT broker at {where}: connection refused"
        if isinstance(cause, TimeoutError):
            return f"MQTT broker at {where} did not answer in time"
    text = str(exc)
    lowered = text.lower()
    if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
        return f"TLS with the MQTT broker at {where} failed: {text}"
    if "connection refused" in lowered:
        return f"cannot reach the MQTT broker at {where}: connection refused"
    if "timed out" in lowered:
        return f"MQTT broker at {where} did not answer in time"
    if "name or service not known" in lowered or "nodename nor servname" in lowered:
        return f"cannot resolve the MQTT broker host name {host!r}"
    if "disconnected during message iteration" in lowered:
        return f"lost the connection to the MQTT broker at {where}"
    return f"MQTT connection to {where} failed: {text or type(exc).__name__}"


def _incoming(message: aiomqtt.Message, received_at: datetime) -> IncomingMessage:
    props = message.properties
    response_topic = getattr(props, "ResponseTopic", None)
    correlation_data = getattr(props, "CorrelationData", None)
    expiry = getattr(props, "MessageExpiryInterval", None)
    payload = message.payload
    return IncomingMessage(
        topic=message.topic.value,
        payload=payload if isinstance(payload, bytes) else str(payload or "").encode(),
        retain=bool(message.retain),
        qos=int(message.qos),
        response_topic=response_topic if isinstance(response_topic, str) else None,
        correlation_data=bytes(correlation_data) if correlation_data is not None else None,
        message_expiry_interval=int(expiry) if expiry is not None else None,
        received_at=received_at,
    )


def _disable_nagle(client: aiomqtt.Client) -> None:
    """Send small publishes at once.

    With Nagle's algorithm a reply that follows the PUBACK of its command waits for the broker's
    delayed ACK, about 40 ms on Linux (docs/benchmarks.md, P7). Neither aiomqtt nor paho sets
    TCP_NODELAY; aiomqtt has no public handle on the socket, hence its paho client.
    """
    sock = client._client.socket()
    if isinstance(sock, socket.socket):  # ssl.SSLSocket included; a websocket is not
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class _Reply:
    topic: str
    payload: str
    response_topic: str | None
    correlation_data: bytes | None
    sent_to_topic: bool = False
    """Sent on the reply topic already; only the MQTT v5 response topic is still owed."""


class MqttBridge:
    """The daemon's one connection to its broker; satisfies :class:`ioagent.mqtt.publisher.Publisher`.

    Run :meth:`run` as a task for the daemon's whole life and call :meth:`shutdown` (from
    another task, e.g. the SIGTERM handler) to leave cleanly.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        status_topic: str,
        subscriptions: Sequence[str],
        on_message: Callable[[IncomingMessage], Awaitable[None]],
        on_connect: Callable[[], Awaitable[None]] | None = None,
        clock: Clock = utc_now,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._status_topic = status_topic
        self._subscriptions = tuple(subscriptions)
        self._on_message = on_message
        self._on_connect = on_connect
        self._clock = clock
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        if settings.password is not None:
            register_secret(settings.password.get_secret_value())

        self._retained: dict[str, str] = {}
        # Topics cleared while offline: the broker still holds their old value.
        self._pending_clears: set[str] = set()
        self._client: aiomqtt.Client | None = None
        self._unsent_replies: collections.deque[_Reply] = collections.deque(maxlen=REPLY_BACKLOG)
        self._inbox: asyncio.Queue[IncomingMessage] = asyncio.Queue(maxsize=INBOX_LIMIT)
        self._dispatch_gate = asyncio.Event()
        self._stop = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        self._established = False
        self.connected_event = asyncio.Event()
        """Set while connected, subscribed and replayed; cleared when the connection drops."""
        self.replies_accepted = 0
        """Command replies that a broker acknowledged on all their topics. A broker killed just
        after its PUBACK can still lose one it had not passed on (docs/reliability.md)."""

    def __repr__(self) -> str:
        return (
            f"MqttBridge(host={self._settings.host!r}, port={self._settings.port}, "
            f"client_id={self._client_id!r}, connected={self.connected})"
        )

    @property
    def connected(self) -> bool:
        return self.connected_event.is_set()

    @property
    def retained_topics(self) -> dict[str, str]:
        """A copy of the retained cache that is replayed on every reconnect."""
        return dict(self._retained)

    # --- publishing -----------------------------------------------------------------------

    async def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        """Publish at QoS 1. Retained payloads are cached and replayed after each reconnect;
        while offline they are only cached, and other messages are dropped (events are not
        queued). An empty retained payload clears the topic on the broker and in the cache."""
        if retain:
            if payload:
                self._retained[topic] = payload
                self._pending_clears.discard(topic)
            else:
                self._retained.pop(topic, None)
                self._pending_clears.add(topic)
        client = self._client
        if client is None:
            if not retain:
                log.debug("mqtt publish dropped while disconnected", topic=topic)
            return
        sent = await self._send(client, topic, payload, retain=retain)
        if sent and retain and not payload and topic not in self._retained:
            self._pending_clears.discard(topic)

    async def clear_retained(self, topic: str) -> None:
        await self.publish(topic, "", retain=True)

    async def reply(
        self,
        topic: str,
        payload: str,
        *,
        response_topic: str | None,
        correlation_data: bytes | None,
    ) -> None:
        """Publish a command reply on ``topic`` and, for MQTT v5 requesters, on their
        response topic with their correlation data."""
        pending = _Reply(topic, payload, response_topic, correlation_data)
        client = self._client
        while client is not None:
            if await self._send_reply(client, pending):
                self.replies_accepted += 1
                return
            if self._client is client:
                break  # this connection failed: the next one sends the backlog
            # A publish waits for its PUBACK even after its connection died, so a new connection
            # may have sent the backlog already: this reply would wait for the one after that.
            client = self._client
        # The command may already have changed the car: its sender must still hear so.
        if len(self._unsent_replies) == self._unsent_replies.maxlen:
            log.warning("too many undelivered replies; dropped the oldest")
        self._unsent_replies.append(pending)

    async def _send_reply(self, client: aiomqtt.Client, reply: _Reply) -> bool:
        if not reply.sent_to_topic:
            if not await self._send(client, reply.topic, reply.payload, retain=False):
                return False
            reply.sent_to_topic = True
        if not reply.response_topic:
            return True
        properties: Properties | None = None
        if reply.correlation_data is not None:
            # paho's Properties.__init__ is unannotated.
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = reply.correlation_data
        return await self._send(
            client, reply.response_topic, reply.payload, retain=False, properties=properties
        )

    async def _send_unsent_replies(self, client: aiomqtt.Client) -> None:
        while self._unsent_replies:
            if not await self._send_reply(client, self._unsent_replies[0]):
                return
            self._unsent_replies.popleft()
            self.replies_accepted += 1

    async def _send(
        self,
        client: aiomqtt.Client,
        topic: str,
        payload: str,
        *,
        retain: bool,
        properties: Properties | None = None,
    ) -> bool:
        """False only when the connection failed, so the message is worth sending again."""
        try:
            await keeping_cancellation(
                client.publish(
                    topic,
                    payload,
                    qos=QOS,
                    retain=retain,
                    properties=properties,
                    timeout=PUBLISH_TIMEOUT,
                )
            )
        except aiomqtt.MqttError as exc:
            log.warning("mqtt publish failed", topic=topic, error=redact(str(exc)))
            return False
        except ValueError as exc:
            # paho refuses topics with wildcards and oversize payloads: retrying cannot help.
            log.warning("mqtt publish refused", topic=topic, error=redact(str(exc)))
        return True

    # --- connection lifecycle -------------------------------------------------------------

    def _new_client(self) -> aiomqtt.Client:
        settings = self._settings
        tls = settings.tls
        tls_params: aiomqtt.TLSParameters | None = None
        if tls.enabled:
            tls_params = aiomqtt.TLSParameters(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.certfile) if tls.certfile else None,
                keyfile=str(tls.keyfile) if tls.keyfile else None,
            )
        return aiomqtt.Client(
            settings.host,
            settings.port,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            identifier=self._client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            will=aiomqtt.Will(self._status_topic, OFFLINE, qos=QOS, retain=True),
            clean_start=True,
            keepalive=settings.keepalive,
            tls_params=tls_params,
            tls_insecure=tls.insecure if tls.enabled else None,
        )

    async def run(self) -> None:
        """Stay connected until :meth:`shutdown`; never raises (except on cancellation)."""
        self._run_task = asyncio.current_task()
        dispatcher = asyncio.create_task(self._dispatch_forever(), name="mqtt-dispatch")
        failures = 0
        try:
            while not self._stop.is_set():
                self._established = False
                try:
                    await self._connection()
                    continue
                except aiomqtt.MqttError as exc:
                    message = describe_connection_error(
                        exc, self._settings.host, self._settings.port
                    )
                except Exception as exc:
                    message = describe_connection_error(
                        exc, self._settings.host, self._settings.port
                    )
                    log.exception("unexpected error in the MQTT connection")
                if self._stop.is_set():
                    break
                failures = 1 if self._established else failures + 1
                delay = backoff_delay(
                    failures,
                    jitter=random.random(),
                    initial=self._backoff_initial,
                    maximum=self._backoff_max,
                )
                log.warning(redact(message), retry_in=round(delay, 2), attempt=failures)
                await wait_event(self._stop, delay)
        finally:
            # Not ``suppress(CancelledError)`` around ``await dispatcher``: that would also
            # swallow a cancellation of this task, which then never stops.
            await cancel_and_wait(dispatcher, grace=1.0, bound=2.0)

    async def _connection(self) -> None:
        """One connection, from connect to disconnect. Returns only when shut down."""
        client = self._new_client()
        reader: asyncio.Task[None] | None = None
        async with client:
            _disable_nagle(client)
            self._client = client
            self._established = True
            try:
                # Subscribed before saying online: a flow that sends a command as soon as it
                # sees `online` (or a replayed topic) must be heard. What arrives meanwhile waits
                # in the client until the reader starts, after the replay.
                for topic in self._subscriptions:
                    await self._subscribe(client, topic)
                await keeping_cancellation(
                    client.publish(self._status_topic, ONLINE, qos=QOS, retain=True)
                )
                await self._replay(client)
                await self._send_unsent_replies(client)
                reader = asyncio.create_task(self._read(client), name="mqtt-read")
                self.connected_event.set()
                log.info(
                    "connected to the MQTT broker",
                    host=self._settings.host,
                    port=self._settings.port,
                    replayed=len(self._retained),
                )
                await self._call_on_connect()
                self._dispatch_gate.set()
                stop = asyncio.create_task(self._stop.wait())
                try:
                    await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stop.cancel()
                if reader.done():
                    reader.result()
                    raise aiomqtt.MqttError("the message stream ended")
                await self._say_offline(client)
            except asyncio.CancelledError:
                await self._say_offline(client)
                raise
            finally:
                self._client = None
                self.connected_event.clear()
                self._dispatch_gate.clear()
                if reader is not None:
                    await cancel_and_wait(reader, grace=1.0, bound=2.0)
                    if reader.done() and not reader.cancelled():
                        reader.exception()  # retrieved: the connection's end was logged

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        # A clean DISCONNECT discards the will, so say it ourselves.
        with contextlib.suppress(aiomqtt.MqttError):
            await keeping_cancellation(
                client.publish(
                    self._status_topic, OFFLINE, qos=QOS, retain=True, timeout=OFFLINE_TIMEOUT
                )
            )

    async def _replay(self, client: aiomqtt.Client) -> None:
        # Read each value at send time: a publish() racing with the replay then always wins.
        for topic in list(self._pending_clears):
            if topic in self._pending_clears:
                await keeping_cancellation(client.publish(topic, "", qos=QOS, retain=True))
                self._pending_clears.discard(topic)
        for topic in list(self._retained):
            payload = self._retained.get(topic)
            if payload is not None:
                await keeping_cancellation(client.publish(topic, payload, qos=QOS, retain=True))

    async def _subscribe(self, client: aiomqtt.Client, topic: str) -> None:
        # Retain-as-published: a retained command published while we are subscribed still
        # arrives flagged retained, so it can be refused rather than run.
        options = SubscribeOptions(qos=QOS, retainAsPublished=True)
        granted: Any = await keeping_cancellation(client.subscribe(topic, options=options))
        for code in granted if isinstance(granted, list | tuple) else ():
            if isinstance(code, ReasonCode) and code.is_failure:
                log.warning("MQTT broker refused the subscription", topic=topic, reason=str(code))

    async def _call_on_connect(self) -> None:
        if self._on_connect is None:
            return
        try:
            await self._on_connect()
        except Exception:
            log.exception("on_connect handler failed")

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            incoming = _incoming(message, self._clock())
            try:
                self._inbox.put_nowait(incoming)
            except asyncio.QueueFull:
                log.warning("too many MQTT messages waiting; dropped one", topic=incoming.topic)

    async def _dispatch_forever(self) -> None:
        while True:
            message = await self._inbox.get()
            await self._dispatch_gate.wait()
            try:
                await self._on_message(message)
            except Exception:
                log.exception("MQTT message handler failed", topic=message.topic)

    async def shutdown(self, wait_seconds: float = SHUTDOWN_TIMEOUT) -> None:
        """Publish ``offline`` (retained), disconnect cleanly and let :meth:`run` return.

        Returns within ``wait_seconds``: a broker that has gone without closing the socket
        answers neither the ``offline`` nor the DISCONNECT, and then the connection is
        cancelled (the broker publishes the retained ``offline`` last will itself, once it
        notices that the keepalive has lapsed).
        """
        self._stop.set()
        task = self._run_task
        if task is None or task.done() or task is asyncio.current_task():
            return
        clean = wait_seconds * 0.7
        done, _ = await asyncio.wait({task}, timeout=clean)
        if not done:
            log.warning("MQTT broker did not answer the clean disconnect; closing the connection")
            still = await cancel_and_wait(task, grace=0.0, bound=wait_seconds - clean)
            if still:
                log.error("the MQTT connection did not close in time")
