"""P7: what ioagent adds to a command, on each side of the Kraken API call.

(a) from publishing ``set/<name>`` to the mutation request arriving at the simulator, and
(b) from the simulator finishing that request to the reply arriving at the subscriber.

The simulator is the project's own app (``build_app``) with one extra aiohttp middleware,
added here only, that timestamps each GraphQL request on arrival and when its handler returns.
The daemon runs in-process (tests/harness.py); every timestamp is this process's wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.env import mosquitto, peak_now_tariff
from bench.stats import summary
from ioagent.simulator.server import RunningSimulator, build_app
from ioagent.simulator.state import SimulatorState
from ioagent.timeutil import utc_now
from tests.harness import running_daemon

_OPERATION = re.compile(r"\b(query|mutation)\s+([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class RequestTiming:
    operation: str
    arrived: float
    answered: float


@contextlib.asynccontextmanager
async def timed_simulator(
    state: SimulatorState,
) -> AsyncIterator[tuple[RunningSimulator, list[RequestTiming]]]:
    timings: list[RequestTiming] = []

    @web.middleware
    async def timing(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        arrived = time.time()
        body = await request.read()  # aiohttp keeps it for the handler's request.json()
        try:
            query = str(json.loads(body).get("query", ""))
        except (ValueError, AttributeError):
            query = ""
        match = _OPERATION.search(query)
        response = await handler(request)
        name = match.group(2) if match else "?"
        timings.append(RequestTiming(name, arrived, time.time()))
        return response

    app = build_app(state)
    app.middlewares.append(timing)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = int(runner.addresses[0][1])
        yield RunningSimulator(state=state, host="127.0.0.1", port=port), timings
    finally:
        await runner.cleanup()


COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("smart_control", "off", "UpdateDeviceSmartControl"),
    ("smart_control", "on", "UpdateDeviceSmartControl"),
    ("boost", "off", "UpdateBoostCharge"),
    ("target_soc", "85", "SetDevicePreferences"),
)


def daemon_nodelay(d: Any) -> bool | None:
    """Whether the daemon's own broker socket has TCP_NODELAY (read, never set, here).

    ioagent's bridge sets it after connecting (``ioagent.mqtt.bridge._disable_nagle``); the bench
    only reports what it finds, None when the socket cannot be reached.
    """
    try:
        sock = d.daemon.bridge._client._client.socket()
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    except (AttributeError, OSError):
        return None


async def command_overhead(
    rounds: int, workdir: Path | None = None, *, broker_nodelay: bool = False
) -> dict[str, Any]:
    """Send ``rounds`` x each of :data:`COMMANDS` and time both sides of the mutation.

    ioagent runs as shipped. ``broker_nodelay`` adds ``set_tcp_nodelay true`` to Mosquitto's
    config (stock Mosquitto has it false), so Mosquitto's own sockets send without Nagle too.
    """
    with tempfile.TemporaryDirectory(prefix="ioagent-bench-") as tmp:
        root = workdir or Path(tmp)
        (root / "data").mkdir(parents=True, exist_ok=True)
        extra = ("set_tcp_nodelay true",) if broker_nodelay else ()
        with mosquitto(root, *extra) as broker:
            state = SimulatorState.with_default_account(clock=utc_now)
            async with (
                timed_simulator(state) as (sim, timings),
                running_daemon(
                    broker, sim, root / "data", clock=utc_now, tariff=peak_now_tariff()
                ) as d,
            ):
                ioagent_nodelay = daemon_nodelay(d)
                to_api: dict[str, list[float]] = {}
                from_api: dict[str, list[float]] = {}
                operation_names: set[str] = set()
                for _ in range(rounds):
                    for name, value, operation in COMMANDS:
                        operation_names.add(operation)
                        published = time.time()
                        reply = await d.command(name, value)
                        mutation = next(
                            (
                                t
                                for t in timings
                                if t.arrived >= published
                                and t.operation.lower() == operation.lower()
                            ),
                            None,
                        )
                        replies = [
                            m
                            for m in d.watcher.messages
                            if m.topic == d.topics.response and m.at >= published
                        ]
                        if mutation is None or not replies:
                            raise RuntimeError(f"{name} {value}: no mutation/reply seen ({reply})")
                        key = f"{name} {value}"
                        to_api.setdefault(key, []).append(mutation.arrived - published)
                        from_api.setdefault(key, []).append(replies[0].at - mutation.answered)
                        await asyncio.sleep(0.05)
                seen_operations = sorted({t.operation for t in timings})
    every_to = [x for values in to_api.values() for x in values]
    every_from = [x for values in from_api.values() for x in values]
    return {
        "rounds": rounds,
        "broker_nodelay": broker_nodelay,
        "ioagent_nodelay": ioagent_nodelay,
        "publish_to_api_ms": summary(every_to, 1000.0),
        "api_to_reply_ms": summary(every_from, 1000.0),
        "by_command": {
            key: {
                "publish_to_api_ms": summary(to_api[key], 1000.0),
                "api_to_reply_ms": summary(from_api[key], 1000.0),
            }
            for key in to_api
        },
        "operations_seen": seen_operations,
    }
