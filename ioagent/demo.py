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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiomqtt

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


@contextlib.contextmanager
def local_broker(host: str, port: int, workdir: Path) -> Iterator[None]:
    """Start a private mosquitto when nothing listens on a local ``host:port``."""
    if port_is_open(host, port):
        yield
        return
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"No MQTT broker answers on {host}:{port}.")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise SystemExit("mosquitto is not installed; run ./scripts/demo, which installs it.")
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n"
    )
    process = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            if port_is_open("127.0.0.1", port):
                break
            if process.poll() is not None:
                raise SystemExit(f"mosquitto could not start on port {port}.")
            subprocess.run(["sleep", "0.05"], check=False)
        print(f"Started a private Mosquitto on 127.0.0.1:{port} for the demo.")
        yield
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


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
        with local_broker(args.mqtt_host, args.mqtt_port, workdir):
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
                local = clock().astimezone(DEMO_ZONE)
                timeline = (
                    f"  Demo clock:       {local:%a %H:%M} Europe/London (a demo evening; the"
                    f" real time is {utc_now().astimezone(DEMO_ZONE):%H:%M})\n"
                    if offset
                    else ""
                )
                print(
                    "\nioagent demo\n"
                    f"{timeline}"
                    f"  Kraken simulator: {sim.graphql_url}  (control API {sim.control_url})\n"
                    f"  MQTT broker:      {args.mqtt_host}:{args.mqtt_port}\n"
                    f"  Watch it:         mosquitto_sub -h {args.mqtt_host} -p {args.mqtt_port} -v -t '{args.base_topic}/#'\n"
                    f"  Try a command:    mosquitto_pub -h {args.mqtt_host} -p {args.mqtt_port} -t '{args.base_topic}/{DEFAULT_ACCOUNT}/set/target_soc' -m 90\n",
                    flush=True,
                )

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


async def _stop_after(daemon: Daemon, story: asyncio.Task[None], duration: float | None) -> None:
    """End the demo after ``duration`` seconds, or when the daemon is asked to stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(daemon.stop_requested.wait(), timeout=duration)
    daemon.request_stop()
    story.cancel()


def cli_demo(args: argparse.Namespace) -> int:
    configure_logging("info", "console" if sys.stdout.isatty() else "json")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(run_demo(args))
    return 0
