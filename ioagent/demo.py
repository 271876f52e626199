"""``ioagent demo``: the daemon against the built-in simulator, with a lively near-future story.

Timeline (seconds after start), chosen so that topics visibly change within two minutes:

* 0    the daemon starts; the EV is unplugged; only the fixed 23:30-05:30 window applies.
* 10   the EV is plugged in (evening plug-in): the simulator plans smart slots to reach 80 %,
       the first one from the next whole minute (not half-hour aligned, in the peak period).
       The account is on the four-rate product by default: ``ev/offpeak`` turns true and
       ``allowance/remaining`` drops by half an hour at the start of that half-hour, and
       ``dispatching`` flips on the exact minute; ``offpeak`` (the home bonus) follows once the
       car is seen charging (``offpeak/confidence`` goes ``planned`` -> ``charging``). Other
       slots fall inside 23:30-05:30, where the home is cheap anyway and the car's allowance
       runs down.
* 75   Octopus re-plans: that slot moves, an event ``slot_changed`` appears.
* 110  a boost is requested over MQTT (``set/boost on``), answered on ``response``.
* 150  the boost is cancelled (``set/boost off``).

Each scenario step is followed by a ``refresh`` command sent over MQTT, exactly as a user would.

The story needs an evening: at night the whole house is off-peak anyway, so a smart slot would
change nothing. Started between 21:00 and 12:00 Europe/London, the demo runs on a clock set to the
next 18:01 (the simulator and the daemon share it, and every published time is on it); in the
afternoon and early evening it runs on real time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time as time_module
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

import aiomqtt

from ioagent.aio import wait_event
from ioagent.config import Settings
from ioagent.logs import configure_logging
from ioagent.runtime.daemon import Daemon
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_EV_ID,
    SimulatorState,
)
from ioagent.simulator.tariffs import SimProduct
from ioagent.timeutil import Clock, utc_now

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
DEMO_ZONE = ZoneInfo("Europe/London")
REAL_TIME_FROM = time(12, 0)
REAL_TIME_UNTIL = time(21, 0)
DEMO_EVENING = time(18, 1)
"""A minute past the hour: the first poll is not held back by the quiet seconds around :00."""


def demo_clock_offset(now: datetime) -> timedelta:
    """How far the demo's clock runs ahead of ``now``, so that the story happens in an evening.

    Zero from 12:00 to 21:00 Europe/London (enough peak time before 23:30 for a smart slot to
    matter); otherwise the demo starts at the next 18:01.
    """
    local = now.astimezone(DEMO_ZONE)
    if REAL_TIME_FROM <= local.time() <= REAL_TIME_UNTIL:
        return timedelta(0)
    day = local.date() if local.time() < REAL_TIME_FROM else local.date() + timedelta(days=1)
    evening = datetime.combine(day, DEMO_EVENING, tzinfo=DEMO_ZONE)
    return evening.astimezone(UTC) - now.astimezone(UTC)


def shifted_clock(offset: timedelta, real: Clock = utc_now) -> Clock:
    if not offset:
        return real
    return lambda: real() + offset


def port_is_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


BrokerAnswer = Literal["anonymous", "login_required", "not_mqtt"]
NOT_AUTHORISED_CODES = frozenset({4, 5, 134, 135})
"""CONNACK codes of a broker that wants a (different) login: 3.1.1's 4 and 5, MQTT 5's 134/135."""


async def probe_broker(host: str, port: int) -> BrokerAnswer:
    """Whether the broker on ``host:port`` lets the demo in without a user name."""
    try:
        async with aiomqtt.Client(
            host, port, identifier=f"ioagent-demo-probe-{os.getpid()}", timeout=3.0
        ):
            return "anonymous"
    except aiomqtt.MqttCodeError as exc:
        if _reason_code(exc) in NOT_AUTHORISED_CODES:
            return "login_required"
        return "not_mqtt"
    except (aiomqtt.MqttError, OSError):
        return "not_mqtt"


def _reason_code(exc: aiomqtt.MqttCodeError) -> int | None:
    rc = exc.rc
    value = getattr(rc, "value", rc)
    return value if isinstance(value, int) else None


@contextlib.asynccontextmanager
async def local_broker(host: str, port: int, workdir: Path) -> AsyncIterator[tuple[str, int]]:
    """The broker the demo publishes to: the one on ``host:port`` if it lets anyone in, else a
    private mosquitto (on ``port`` when nothing listens there, on a free port when the broker
    there needs a login). Yields the host and port to use."""
    if port_is_open(host, port):
        answer = await probe_broker(host, port)
        if answer == "anonymous":
            yield host, port
            return
        if host not in LOCAL_HOSTS:
            problem = (
                f"The MQTT broker on {host}:{port} needs a login, and the demo has none"
                if answer == "login_required"
                else f"Nothing on {host}:{port} answers as an MQTT broker"
            )
            raise SystemExit(
                f"{problem}; leave out --mqtt-host and the demo starts its own broker here."
            )
        taken = port
        port = free_local_port()
        why = (
            "needs a login (the docker compose Mosquitto does)"
            if answer == "login_required"
            else "does not answer as an MQTT broker"
        )
        print(
            f"The broker on {host}:{taken} {why}; the demo uses a private Mosquitto on "
            f"127.0.0.1:{port} instead (or pick a port with --mqtt-port).",
            flush=True,
        )
    elif host not in LOCAL_HOSTS:
        raise SystemExit(f"No MQTT broker answers on {host}:{port}.")
    process = start_private_mosquitto(port, workdir)
    try:
        print(f"Started a private Mosquitto on 127.0.0.1:{port} for the demo.", flush=True)
        # The private broker listens on IPv4 loopback only.
        yield ("127.0.0.1" if host == "::1" else host), port
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def start_private_mosquitto(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """An anonymous-login mosquitto on 127.0.0.1:``port``, listening when this returns."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise SystemExit("mosquitto is not installed; run ./scripts/demo, which installs it.")
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
    )
    process = subprocess.Popen(
        [binary, "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Its own session: a terminal's Ctrl-C goes to the whole foreground process group, and
        # a broker that died with the demo left the daemon's `offline` nowhere to go.
        start_new_session=True,
    )
    for _ in range(100):
        if port_is_open("127.0.0.1", port):
            return process
        if process.poll() is not None:
            raise SystemExit(f"mosquitto could not start on port {port}.")
        time_module.sleep(0.05)
    process.terminate()
    raise SystemExit(f"mosquitto did not start listening on port {port}.")


def demo_settings(sim: RunningSimulator, args: argparse.Namespace, data_dir: Path) -> Settings:
    return Settings.model_validate(
        {
            "octopus": {
                "api_key": DEFAULT_API_KEY,
                "account_number": DEFAULT_ACCOUNT,
                "api_url": sim.graphql_url,
                "rest_url": sim.rest_url,
            },
            "mqtt": {"host": args.mqtt_host, "port": args.mqtt_port, "base_topic": args.base_topic},
            "storage": {"path": str(data_dir / "ioagent.db")},
            "polling": {"active_interval": 60, "command_rechecks": [5, 20]},
        }
    )


async def scenario(sim: RunningSimulator, settings: Settings, say: Callable[[str], None]) -> None:
    state = sim.state
    base = f"{settings.mqtt.base_topic}/{DEFAULT_ACCOUNT}"

    async def command(topic: str, payload: str) -> None:
        async with aiomqtt.Client(
            settings.mqtt.host, settings.mqtt.port, identifier="ioagent-demo-user"
        ) as client:
            await client.publish(f"{base}/{topic}", payload, qos=1)

    async def step(at: float, text: str, action: Callable[[], Awaitable[None]]) -> None:
        delay = at - (loop.time() - started)
        if delay > 0:
            await asyncio.sleep(delay)
        say(text)
        await action()

    loop = asyncio.get_running_loop()
    started = loop.time()
    device = state.device(DEFAULT_EV_ID)

    async def plug_in() -> None:
        state.plug(device, True)
        await command("refresh", "demo")

    async def replan() -> None:
        now = state.now().replace(microsecond=0)
        for item in list(device.planned):
            if item.type == "SMART" and item.start > now:
                state.shift_dispatch(
                    device,
                    item.start,
                    item.start + timedelta(minutes=7),
                    item.end + timedelta(minutes=7),
                )
                break
        await command("refresh", "demo")

    await step(
        10,
        "EV plugged in: Octopus plans smart slots, the first from the next minute; on four-rate"
        " the car's allowance starts to run down and the home bonus waits for the car to charge",
        plug_in,
    )
    await step(75, "Octopus re-plans: a slot moves by 7 minutes", replan)
    await step(110, "Boost requested over MQTT (set/boost on)", lambda: command("set/boost", "on"))
    await step(150, "Boost cancelled (set/boost off)", lambda: command("set/boost", "off"))
    say("Scenario done; the daemon keeps running. Ctrl-C to stop.")


async def run_demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="ioagent-demo-") as tmp:
        workdir = Path(tmp)
        async with local_broker(args.mqtt_host, args.mqtt_port, workdir) as (host, port):
            args = argparse.Namespace(**{**vars(args), "mqtt_host": host, "mqtt_port": port})
            offset = demo_clock_offset(utc_now())
            clock = shifted_clock(offset)
            # Four-rate, as Octopus sells Intelligent Octopus Go since 2026 (--product legacy
            # shows the old whole-house rule).
            product: SimProduct = (
                "legacy" if getattr(args, "product", "") == "legacy" else "four_rate"
            )
            state = SimulatorState.with_default_account(clock=clock, product=product)
            async with run_simulator(state) as sim:
                settings = demo_settings(sim, args, workdir)
                if offset:
                    # Every time the daemon logs and publishes is on the demo clock; say so.
                    configure_logging(
                        "info", _log_format(), clock=clock, clock_label=DEMO_CLOCK_LABEL
                    )
                print(banner(sim, args, clock() if offset else None), flush=True)

                def say(text: str) -> None:
                    print(f"[demo] {text}", flush=True)

                daemon = Daemon(settings, clock=clock)
                loop = asyncio.get_running_loop()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(signum, daemon.request_stop)
                async with asyncio.TaskGroup() as group:
                    group.create_task(daemon.run(), name="daemon")
                    story = group.create_task(scenario(sim, settings, say), name="scenario")
                    group.create_task(_stop_after(daemon, story, args.duration), name="stopper")
    return 0


DEMO_CLOCK_LABEL = "demo"


def _mosquitto_target(host: str, port: int) -> str:
    # mosquitto_sub/pub default to localhost: leaving it out keeps the lines within 80 columns.
    return f"-p {port}" if host == "localhost" else f"-h {host} -p {port}"


def banner(sim: RunningSimulator, args: argparse.Namespace, demo_now: datetime | None) -> str:
    """What the demo prints at start, every line within 80 columns."""
    target = _mosquitto_target(args.mqtt_host, args.mqtt_port)
    lines = ["", "ioagent demo (Ctrl-C to stop)"]
    if demo_now is not None:
        real = utc_now().astimezone(DEMO_ZONE)
        lines += [
            f"  Demo clock:    {demo_now.astimezone(DEMO_ZONE):%a %H:%M} UK time, a demo evening "
            f"(really {real:%H:%M})",
            f"                 log lines marked '{DEMO_CLOCK_LABEL}' and all topics use it",
        ]
    lines += [
        f"  Simulator:     {sim.graphql_url}",
        f"  Its controls:  {sim.control_url}",
        f"  MQTT broker:   {args.mqtt_host}:{args.mqtt_port}",
        "  Watch it from a second terminal:",
        f"    mosquitto_sub {target} -v -t '{args.base_topic}/#'",
        "  Try a command:",
        f"    mosquitto_pub {target} -t {args.base_topic}/{DEFAULT_ACCOUNT}/set/target_soc -m 90",
        "",
    ]
    return "\n".join(lines)


def _log_format() -> str:
    return "console" if sys.stdout.isatty() else "json"


async def _stop_after(daemon: Daemon, story: asyncio.Task[None], duration: float | None) -> None:
    """End the demo after ``duration`` seconds, or when the daemon is asked to stop."""
    if duration is None:
        await daemon.stop_requested.wait()
    else:
        await wait_event(daemon.stop_requested, duration)
    daemon.request_stop()
    story.cancel()


def cli_demo(args: argparse.Namespace) -> int:
    configure_logging("info", _log_format())
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_demo(args))
    return 0
