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
* 20   what Octopus billed: the daemon's ledger has fetched the simulator's settled half-hours
       (the simulator was given six days of the car's charging; settlement lags two days) and
       published ``ledger/yesterday|month|agreement``; the demo prints the last whole settled
       day from the daemon's database, as ``ioagent ledger`` renders it, and the agreement.
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
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time as time_module
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import aiomqtt

from ioagent.aio import wait_event
from ioagent.config import Settings
from ioagent.ledger.render import render_days
from ioagent.logs import configure_logging
from ioagent.runtime.daemon import Daemon
from ioagent.runtime.ledger_task import LedgerPace
from ioagent.simulator.ledger import ledger_settings, mpan_for
from ioagent.simulator.server import RunningSimulator, run_simulator
from ioagent.simulator.state import (
    DEFAULT_ACCOUNT,
    DEFAULT_API_KEY,
    DEFAULT_EV_ID,
    SimulatorState,
)
from ioagent.simulator.tariffs import SimProduct
from ioagent.store.database import Store, StoreError
from ioagent.store.ledger_cli import account_ledger
from ioagent.timeutil import Clock, utc_now

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
DEMO_ZONE = ZoneInfo("Europe/London")
REAL_TIME_FROM = time(12, 0)
REAL_TIME_UNTIL = time(21, 0)
DEMO_EVENING = time(18, 1)
"""A minute past the hour: the first poll is not held back by the quiet seconds around :00."""


LEDGER_AT = 20.0
"""Seconds into the story when the ledger is shown: after the plug-in, before the first slot."""
LEDGER_BACKFILL_DAYS = 4
"""Enough to hold the last whole settled day: settlement lags two days, so that day is the
one three days before today, and 4 days back from an afternoon or evening reaches its start."""
LEDGER_PACE = LedgerPace(start_delay=3.0, per_minute=30)
"""The daemon asks Octopus for at most 2 ledger windows a minute, a minute after its start;
the demo's 16 windows go to its own simulator, a few seconds after the start poll."""
HISTORY_DAYS = 6
"""Days of the car's charging the simulator is given before the demo starts."""


def seed_charging_history(
    state: SimulatorState, now: datetime, days: int = HISTORY_DAYS
) -> list[tuple[datetime, datetime]]:
    """The car's completed smart charges on the days before ``now``, so the simulator's settled
    bills have a car in them: each evening a top-up at 19:00-20:00 (peak time, billed low for
    the car and, by the home bonus, for the home) and each night 01:00-04:30. Returns them."""
    device = state.device(DEFAULT_EV_ID)
    today = now.astimezone(DEMO_ZONE).date()
    added = []
    for back in range(days, 0, -1):
        day = today - timedelta(days=back)
        for first, start, end in (
            (day, time(19, 0), time(20, 0)),
            (day + timedelta(days=1), time(1, 0), time(4, 30)),
        ):
            begin = datetime.combine(first, start, tzinfo=DEMO_ZONE).astimezone(UTC)
            finish = datetime.combine(first, end, tzinfo=DEMO_ZONE).astimezone(UTC)
            if finish > now:
                continue
            kwh = round(device.charger_kw * (finish - begin).total_seconds() / 3600, 2)
            state.add_completed(DEFAULT_ACCOUNT, begin, finish, kwh, None, "AT_HOME")
            added.append((begin, finish))
    return added


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
            # The MPAN is the one the agreements give; set here so that the ledger's first
            # fetch, seconds after the start, never runs before the agreements were read.
            "ledger": {
                "mpan": mpan_for(sim.state, DEFAULT_ACCOUNT),
                "backfill_days": LEDGER_BACKFILL_DAYS,
                "calls_per_hour": 60,
            },
        }
    )


LEDGER_TOPICS = ("yesterday", "month", "agreement")


def agreement_sentence(agreement: dict[str, Any]) -> str:
    """What the retained ``ledger/agreement`` says, honestly."""
    compared = int(agreement.get("half_hours") or 0)
    if not compared:
        return (
            "Agreement: nothing compared yet. ioagent records the signal it publishes from now"
            " on, and Octopus settles a half-hour about two days after it."
        )
    ratio = float(agreement.get("ratio") or 0.0)
    return (
        f"Agreement: {agreement.get('agreed')} of {compared} settled half-hours billed as "
        f"signalled ({ratio:.1%})."
    )


WIDTH = 80
SAY_INDENT = "       "
"""Under ``[demo] ``: what the story says stays within :data:`WIDTH` columns."""


def say_text(text: str) -> str:
    """``text`` as ``[demo]`` lines of at most :data:`WIDTH` columns, continuation lines
    indented under the first (a topic name is never cut)."""
    lines = textwrap.wrap(
        text, WIDTH - len(SAY_INDENT), break_long_words=False, break_on_hyphens=False
    )
    return "\n".join(("[demo] " if i == 0 else SAY_INDENT) + line for i, line in enumerate(lines))


def ledger_section(table: str, agreement: dict[str, Any], root: str) -> str:
    """The story's ledger part: ``table`` (``ioagent ledger``'s, 80 columns) between what it
    is and what the retained ``ledger/agreement`` says."""
    intro = say_text(
        "What Octopus billed: the daemon fetched the settled half-hours of the past days from"
        " the simulator (where the car charged each night and evening). The last whole"
        " settled day, as `ioagent ledger` prints it:"
    )
    topics = say_text(
        f"Retained on MQTT: {root}/ledger/yesterday, {root}/ledger/month and"
        f" {root}/ledger/agreement."
    )
    return "\n".join([intro, "", table, say_text(agreement_sentence(agreement)), topics])


def read_ledger_table(settings: Settings, account: str, day: date) -> str:
    """``day`` from the daemon's database, rendered by ``ioagent ledger``'s renderer."""
    tariff = settings.tariff
    store = Store.open(settings.storage.path, read_only=True)
    try:
        ledger = account_ledger(
            store,
            account,
            [day],
            zone=tariff.zone,
            window=(tariff.start_time, tariff.end_time),
        )
    finally:
        store.close()
    return render_days([ledger], tariff.zone)


async def retained_ledger(settings: Settings, root: str) -> dict[str, dict[str, Any]]:
    """The three retained ledger payloads, once the daemon has published all of them."""
    found: dict[str, dict[str, Any]] = {}
    async with aiomqtt.Client(
        settings.mqtt.host, settings.mqtt.port, identifier="ioagent-demo-ledger"
    ) as client:
        await client.subscribe(f"{root}/ledger/+")
        async for message in client.messages:
            name = str(message.topic).rsplit("/", 1)[-1]
            if name in LEDGER_TOPICS and isinstance(message.payload, bytes | str):
                payload = json.loads(message.payload)
                if isinstance(payload, dict):
                    found[name] = payload
            if all(name in found for name in LEDGER_TOPICS):
                break
    return found


async def show_ledger(
    settings: Settings, say: Callable[[str], None], until_shown: Callable[[], Awaitable[None]]
) -> None:
    """Print what Octopus billed once the daemon has it on MQTT, not before ``until_shown``."""
    root = f"{settings.mqtt.base_topic}/{DEFAULT_ACCOUNT}"
    try:
        found = await retained_ledger(settings, root)
        await until_shown()
        day = date.fromisoformat(str(found["yesterday"]["day"]))
        table = await asyncio.to_thread(read_ledger_table, settings, DEFAULT_ACCOUNT, day)
    except (aiomqtt.MqttError, sqlite3.Error, StoreError, OSError, KeyError, ValueError) as exc:
        # The ledger is one part of the story: a failure here must not end the demo.
        say(f"The ledger could not be shown: {exc}")
        return
    print(ledger_section(table, found["agreement"], root), flush=True)


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

    async def until_ledger_time() -> None:
        delay = LEDGER_AT - (loop.time() - started)
        if delay > 0:
            await asyncio.sleep(delay)

    async with asyncio.TaskGroup() as group:
        # Beside the steps, so a slow ledger never holds the story back.
        ledger = group.create_task(show_ledger(settings, say, until_ledger_time), name="ledger")
        await step(
            10,
            "EV plugged in: Octopus plans smart slots, the first from the next minute; on"
            " four-rate the car's allowance starts to run down and the home bonus waits for the"
            " car to charge",
            plug_in,
        )
        await step(75, "Octopus re-plans: a slot moves by 7 minutes", replan)
        await step(
            110, "Boost requested over MQTT (set/boost on)", lambda: command("set/boost", "on")
        )
        await step(150, "Boost cancelled (set/boost off)", lambda: command("set/boost", "off"))
        ledger.cancel()
    say("Scenario done; the daemon keeps running. Ctrl-C to stop.")
    say(
        "On your own account, `ioagent ledger` prints what Octopus billed for the last 7"
        " settled days, and `ioagent ledger --day YYYY-MM-DD` a day's half-hours, the signal"
        " against the bill."
    )


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
            seed_charging_history(state, state.now())
            if product == "legacy":
                ledger_settings(state).vocabulary = "legacy"  # one label a half-hour
            async with run_simulator(state) as sim:
                settings = demo_settings(sim, args, workdir)
                if offset:
                    # Every time the daemon logs and publishes is on the demo clock; say so.
                    configure_logging(
                        "info", _log_format(), clock=clock, clock_label=DEMO_CLOCK_LABEL
                    )
                print(banner(sim, args, clock() if offset else None), flush=True)

                def say(text: str) -> None:
                    print(say_text(text), flush=True)

                daemon = Daemon(settings, clock=clock, ledger_pace=LEDGER_PACE)
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
