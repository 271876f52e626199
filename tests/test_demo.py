"""`ioagent demo`: topics visibly change within the first minute, and it stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ioagent.demo import HISTORY_DAYS, demo_clock_offset, ledger_section, seed_charging_history
from ioagent.simulator.state import SimulatorState
from tests.broker import Broker, free_port
from tests.harness import watching

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(360)  # the story itself takes 160 s
async def test_the_whole_demo_story_plays_out_on_mqtt(broker: Broker) -> None:
    async with watching(broker, "ioagent/#") as watcher:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ioagent",
            "demo",
            "--mqtt-port",
            str(broker.port),
            "--duration",
            "160",
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        base = "ioagent/A-SIM00001"

        def event(kind: str) -> Callable[[str], bool]:
            return lambda p: json.loads(p)["event"] == kind

        def reply(command: str) -> Callable[[str], bool]:
            return lambda p: json.loads(p)["command"] == command

        try:
            # Within the first minute: the plug-in at 10 s plans smart slots (a poll in the quiet
            # seconds around :00/:30 of a real-time run waits up to 25 s).
            added = await watcher.wait_for(f"{base}/events", event("slot_added"), timeout=60)
            assert json.loads(added.payload)["slot"]["type"] == "SMART"
            # The first slot starts on the next minute, in the evening peak. On the four-rate
            # product the car's low rate starts with its half-hour and the car charges from
            # the minute; the home bonus follows once the car is seen charging.
            await watcher.wait_for(f"{base}/ev/offpeak", lambda p: p == "true", timeout=70)
            await watcher.wait_for(f"{base}/dispatching", lambda p: p == "true", timeout=70)
            assert watcher.last(f"{base}/allowance/remaining") is not None
            await watcher.wait_for(
                f"{base}/offpeak/confidence", lambda p: p == "charging", timeout=150
            )
            await watcher.wait_for(f"{base}/offpeak", lambda p: p == "true", timeout=10)
            # 75 s: Octopus re-plans.
            changed = await watcher.wait_for(f"{base}/events", event("slot_changed"), timeout=60)
            assert json.loads(changed.payload)["previous"] is not None
            # 110 s and 150 s: a boost over MQTT, then its cancellation.
            boost = await watcher.wait_for(f"{base}/response", reply("boost"), timeout=60)
            assert json.loads(boost.payload)["status"] == "ok", boost.payload
            await watcher.wait_for(f"{base}/device/boost", lambda p: p == "on", timeout=20)
            after = len(watcher.messages)
            cancelled = await watcher.wait_for(
                f"{base}/response", reply("boost"), after=after, timeout=60
            )
            assert json.loads(cancelled.payload)["status"] == "ok", cancelled.payload
            await watcher.wait_for(
                f"{base}/device/boost", lambda p: p == "off", after=after, timeout=20
            )
            output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        text = output.decode()
        assert process.returncode == 0, text
        assert f"mosquitto_sub -p {broker.port} -v -t 'ioagent/#'" in text
        assert "Scenario done" in text
        assert "`ioagent ledger`" in text.split("Scenario done", 1)[1]  # the final hint
        assert watcher.last(f"{base}/status") == "offline"


async def _read_until(stream: asyncio.StreamReader, marker: str, timeout: float) -> str:
    """What ``stream`` printed up to and including the line holding ``marker``."""
    seen: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                line = (await stream.readline()).decode()
                if not line:
                    break
                seen.append(line)
                if marker in line:
                    return "".join(seen)
    except TimeoutError:
        pass
    raise AssertionError(f"no {marker!r} from the demo in {timeout} s:\n{''.join(seen)}")


@pytest.mark.timeout(120)
async def test_the_demo_shows_what_octopus_billed(broker: Broker) -> None:
    base = "ioagent/A-SIM00001"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ioagent", "demo", "--mqtt-port", str(broker.port),
        "--duration", "90", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        # The last line of the ledger part; at 20 s of the story, so well within a minute
        # even when the ledger's requests wait out the quiet seconds of :00/:30.
        text = await _read_until(process.stdout, "/ledger/agreement.", timeout=60)
        # Subscribed only now: what arrives is what the broker retained.
        async with watching(broker, f"{base}/ledger/#") as late:
            found = {
                name: await late.wait_for(f"{base}/ledger/{name}", timeout=5)
                for name in ("yesterday", "month", "agreement")
            }
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, text + rest.decode()
    assert all(seen.retain for seen in found.values())
    yesterday = json.loads(found["yesterday"].payload)
    # The simulator was given the car's charging: the settled day has it, billed low.
    assert yesterday["complete"] is True
    assert yesterday["buckets"]["car low"]["kwh"] > 0
    assert yesterday["buckets"]["home low"]["kwh"] > 0
    # The ledger part, as `ioagent ledger` renders that day from the daemon's database.
    part = text[text.index("[demo] What Octopus billed") :]
    assert max(len(line) for line in part.splitlines()) <= 80, part
    (row,) = [line for line in part.splitlines() if line.startswith(yesterday["day"])]
    cells = row.split()
    car_low = yesterday["buckets"]["car low"]
    assert cells[5:7] == [f"{car_low['kwh']:.1f}", f"{car_low['gbp']:.2f}"], row
    assert cells[-2] == f"{yesterday['total_gbp']:.2f}", row
    # Nothing can be compared yet (the signal is recorded from this start on), and the demo
    # says so instead of a made-up ratio.
    payload = json.loads(found["agreement"].payload)
    assert payload["half_hours"] == 0 and payload["ratio"] is None
    assert cells[-1] == "-", row
    assert "Agreement: nothing compared yet" in part
    assert f"Retained on MQTT: {base}/ledger/yesterday," in part


def test_the_ledger_part_fits_80_columns_and_says_what_was_compared() -> None:
    table = "Settled billing per Europe/London day; £ incl. VAT. * = not fully settled."
    none = {"days": 30, "half_hours": 0, "agreed": 0, "ratio": None}
    some = {"days": 30, "half_hours": 48, "agreed": 47, "ratio": 0.9792}
    root = "ioagent-a-long-base-topic/A-SIM00001"
    for agreement in (none, some):
        part = ledger_section(table, agreement, root)
        assert max(len(line) for line in part.splitlines()) <= 80, part
    assert "nothing compared yet" in ledger_section(table, none, root)
    words = " ".join(ledger_section(table, some, root).split())
    assert "47 of 48 settled half-hours billed as signalled (97.9%)" in words
    assert f"{root}/ledger/month" in words.split()  # a topic is never cut in two


def test_the_simulator_is_given_only_charging_that_has_ended() -> None:
    now = datetime(2026, 12, 2, 18, 1, tzinfo=UTC)
    state = SimulatorState.with_default_account(clock=lambda: now, product="four_rate")
    added = seed_charging_history(state, now)
    assert len(added) == 2 * HISTORY_DAYS
    assert all(end <= now for _, end in added)
    assert [c.billed_as for c in state.completed] == ["SMART"] * len(added)


LONDON = ZoneInfo("Europe/London")


@pytest.mark.parametrize(
    ("real_local", "demo_local"),
    [
        # Afternoon and early evening: real time.
        (datetime(2026, 12, 1, 12, 0), datetime(2026, 12, 1, 12, 0)),
        (datetime(2026, 12, 1, 19, 45), datetime(2026, 12, 1, 19, 45)),
        (datetime(2026, 12, 1, 21, 0), datetime(2026, 12, 1, 21, 0)),
        # Late evening: the next day's 18:01.
        (datetime(2026, 12, 1, 21, 1), datetime(2026, 12, 2, 18, 1)),
        (datetime(2026, 12, 1, 23, 59), datetime(2026, 12, 2, 18, 1)),
        # Night and morning: the same day's 18:01.
        (datetime(2026, 12, 2, 0, 30), datetime(2026, 12, 2, 18, 1)),
        (datetime(2026, 12, 2, 11, 59), datetime(2026, 12, 2, 18, 1)),
        # Across the spring-forward night (29 March 2026): 18:01 is BST, 17:01Z.
        (datetime(2026, 3, 29, 2, 30), datetime(2026, 3, 29, 18, 1)),
        # Across the autumn fall-back night (25 October 2026): 18:01 is GMT again.
        (datetime(2026, 10, 24, 22, 0), datetime(2026, 10, 25, 18, 1)),
    ],
)
def test_the_demo_clock_puts_the_story_in_an_evening(
    real_local: datetime, demo_local: datetime
) -> None:
    now = real_local.replace(tzinfo=LONDON).astimezone(UTC)
    shifted = (now + demo_clock_offset(now)).astimezone(LONDON)
    assert shifted.replace(tzinfo=None) == demo_local


async def test_demo_starts_its_own_broker_when_none_is_running() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ioagent",
        "demo",
        "--mqtt-port",
        str(port),
        "--duration",
        "3",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    text = output.decode()
    assert process.returncode == 0, text
    assert f"Started a private Mosquitto on 127.0.0.1:{port}" in text
    assert '"event": "starting"' in text


def secure(broker: Broker, tmp_path: Path) -> Broker:
    """Restart ``broker`` so that it refuses anonymous logins, as the compose Mosquitto does."""
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "someone", "pw-demo-test"],
        check=True,
        capture_output=True,
    )
    broker.extra_config = ["allow_anonymous false", f"password_file {passwords}"]
    if os.geteuid() == 0:
        broker.extra_config.append("user root")  # mosquitto would drop to a user who cannot read it
    broker.restart()
    return broker


async def run_demo_briefly(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ioagent",
        "demo",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_demo_on_a_broker_that_needs_a_login_uses_a_private_one(
    broker: Broker, tmp_path: Path
) -> None:
    secure(broker, tmp_path)
    code, text = await run_demo_briefly("--mqtt-port", str(broker.port), "--duration", "4")
    assert code == 0, text
    assert "Traceback" not in text and "ExceptionGroup" not in text, text
    assert f"The broker on localhost:{broker.port} needs a login" in text
    match = re.search(r"Started a private Mosquitto on 127\.0\.0\.1:(\d+)", text)
    assert match is not None, text
    private = int(match.group(1))
    assert private != broker.port
    # The banner tells the user where to watch: the private broker, not the refusing one.
    assert f"mosquitto_sub -p {private} -v -t 'ioagent/#'" in text
    assert '"event": "starting"' in text


async def test_demo_on_a_remote_broker_that_needs_a_login_stops_with_one_sentence(
    broker: Broker, tmp_path: Path
) -> None:
    secure(broker, tmp_path)
    # This machine's own network address: the demo treats it as someone else's machine.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # picks the outgoing address; sends nothing
        except OSError:
            pytest.skip("no network address besides loopback")
        host = probe.getsockname()[0]
    if host.startswith("127."):
        pytest.skip("no network address besides loopback")
    broker.host = "0.0.0.0"
    broker.restart()
    code, text = await run_demo_briefly("--mqtt-host", host, "--mqtt-port", str(broker.port))
    assert code == 1, text
    assert "Traceback" not in text, text
    assert text.strip().splitlines() == [
        f"The MQTT broker on {host}:{broker.port} needs a login, and the demo has none; "
        "leave out --mqtt-host and the demo starts its own broker here."
    ]
